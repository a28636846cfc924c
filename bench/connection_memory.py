"""Where the memory of one idle MQTT connection goes: paho alone vs :class:`AsyncMqttClient`.

Run: ``.venv/bin/python bench/connection_memory.py`` (needs mosquitto; about 10 s).
``--connections 5000`` and ``--variants paho-3.1.1,aio-5-sub`` narrow or widen it; ``--trace``
adds a tracemalloc run per variant: the Python heap per connection and the allocation sites
that grew most (tracemalloc's own bookkeeping inflates that run's RSS: read RSS from the other).

Each variant is a fresh child process and a fresh loopback Mosquitto. The child connects N
clients (keep-alive 60 s, clean session, no TLS) and measures, before the first and once all
have their CONNACK (and SUBACK):

* **RSS** (``VmRSS`` of ``/proc/self/status``) per connection, also after ``gc.collect()`` and
  glibc ``malloc_trim(0)`` (what is live rather than freed but still held);
* **pymalloc**: bytes in Python's small-object arenas (``sys._debugmallocstats``) and bytes
  in allocated blocks in them;
* **glibc malloc**: bytes in use (``mallinfo2``: ``uordblks + hblkhd``) and bytes held
  (``arena + hblkhd``), for every object over 512 bytes and every C allocation.

Kernel socket buffers are not part of RSS and are not counted anywhere here.

Variants: ``paho-*`` are bare ``paho.mqtt.client.Client`` objects (``CallbackAPIVersion.VERSION2``)
whose sockets are registered on the asyncio loop through paho's socket callbacks, connected
with ``connect()`` on the loop thread; ``aio-*`` are :class:`smartlic.mqtt.aio.AsyncMqttClient`
(connect through its 8-thread pool, a keep-alive ticker, futures and events per client).
``-sub`` subscribes each client to one topic at QoS 1, as the fleet's devices do;
``-shared`` hands every client the same CONNECT ``Properties`` object (paho keeps the one it
is given per client, and every instance builds its own tables of property names and types).
One JSON line per run; sizes are bytes per connection.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from unittest import mock

import paho.mqtt.client as paho
import smartlic.mqtt.aio
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from smartlic.mqtt.aio import AsyncMqttClient
from smartlic.mqtt.broker import MosquittoBroker
from smartlic.mqtt.url import parse_broker_url

if TYPE_CHECKING:
    from collections.abc import Sequence

    from paho.mqtt.client import SocketLike
    from paho.mqtt.reasoncodes import ReasonCode

VARIANTS: Final = (
    "paho-3.1.1",
    "paho-5",
    "paho-5-sub",
    "aio-3.1.1",
    "aio-5",
    "aio-5-sub",
    "aio-5-sub-shared",
)
RATE: Final = 5000.0
KEEPALIVE: Final = 60


# ---- what the process holds ----------------------------------------------------------


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_libc = ctypes.CDLL(None)
_libc.mallinfo2.restype = _MallInfo2
_libc.malloc_trim.argtypes = [ctypes.c_size_t]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def pymalloc_bytes() -> tuple[int, int]:
    """(bytes in pymalloc arenas, bytes in allocated blocks), from ``sys._debugmallocstats``
    (which reports nothing while tracemalloc wraps the allocator: then (0, 0))."""
    if tracemalloc.is_tracing():
        return 0, 0
    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()  # noqa: SLF001 -- the only way to read pymalloc's totals
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode()
    arenas = re.search(r"(\d[\d,]*) arenas \* (\d+) bytes/arena", text)
    blocks = re.search(r"# bytes in allocated blocks\s*=\s*([\d,]+)", text)
    if arenas is None or blocks is None:
        raise RuntimeError("cannot read sys._debugmallocstats()")
    count = int(arenas.group(1).replace(",", ""))
    return count * int(arenas.group(2)), int(blocks.group(1).replace(",", ""))


def thread_stack_bytes() -> int:
    """Resident bytes of 8 MiB anonymous mappings: the threads' stacks."""
    total, in_stack = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line.startswith("Size:"):
            in_stack = int(line.split()[1]) == 8192
        elif line.startswith("Rss:") and in_stack:
            total += int(line.split()[1]) * 1024
    return total


def sample() -> dict[str, int]:
    info = _libc.mallinfo2()
    arenas, blocks = pymalloc_bytes()
    return {
        "rss": rss_bytes(),
        "pymalloc_arenas": arenas,
        "pymalloc_blocks": blocks,
        "malloc_in_use": info.uordblks + info.hblkhd,
        "malloc_held": info.arena + info.hblkhd,
        "threads": sum(1 for _ in Path("/proc/self/task").iterdir()),
        "thread_stacks": thread_stack_bytes(),
    }


# ---- the clients ---------------------------------------------------------------------


class _PahoDriver:
    """paho's socket callbacks, shared by every bare client (userdata = the client's number),
    so that the bare variants hold nothing per connection but paho's own objects."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, subscribe: bool) -> None:
        self.loop = loop
        self.subscribe = subscribe
        self.ready = 0

    def socket_open(self, client: paho.Client, _n: int, sock: SocketLike) -> None:
        self.loop.add_reader(sock, client.loop_read)

    def socket_close(self, _client: paho.Client, _n: int, sock: SocketLike) -> None:
        self.loop.remove_reader(sock)
        self.loop.remove_writer(sock)

    def register_write(self, client: paho.Client, _n: int, sock: SocketLike) -> None:
        self.loop.add_writer(sock, client.loop_write)

    def unregister_write(self, _client: paho.Client, _n: int, sock: SocketLike) -> None:
        self.loop.remove_writer(sock)

    def connected(
        self,
        client: paho.Client,
        n: int,
        _flags: paho.ConnectFlags,
        _reason: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if self.subscribe:
            client.subscribe(f"mem/{n:06d}/down", 1)
        else:
            self.ready += 1

    def subscribed(
        self,
        _client: paho.Client,
        _n: int,
        _mid: int,
        _reasons: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        self.ready += 1

    def client(self, n: int, *, v5: bool) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"MEM:paho-{n:06d}",
            userdata=n,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else True,
        )
        client.on_socket_open = self.socket_open
        client.on_socket_close = self.socket_close
        client.on_socket_register_write = self.register_write
        client.on_socket_unregister_write = self.unregister_write
        client.on_connect = self.connected
        client.on_subscribe = self.subscribed
        return client


async def connect_paho(url: str, count: int, *, v5: bool, subscribe: bool) -> list[Any]:
    address = parse_broker_url(url)
    driver = _PahoDriver(asyncio.get_running_loop(), subscribe=subscribe)
    clients: list[Any] = []
    started = time.monotonic()
    for n in range(count):
        delay = started + n / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        client = driver.client(n, v5=v5)
        clients.append(client)
        client.connect(address.host, address.port, keepalive=KEEPALIVE)
        await asyncio.sleep(0)
    deadline = time.monotonic() + 60
    while driver.ready < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {driver.ready} of {count} connected")
        await asyncio.sleep(0.05)
    return clients


async def connect_aio(
    url: str, count: int, *, v5: bool, subscribe: bool, shared: bool
) -> list[Any]:
    """As ``bench/fleet_bench.py`` connects its bare baseline (tasks kept until measured).

    ``shared``: every client gets the same CONNECT ``Properties`` object, which paho keeps
    per client for reconnecting (``Client._connect_properties``).
    """
    address = parse_broker_url(url)
    clients: list[AsyncMqttClient] = []
    started = time.monotonic()
    tasks = []
    stack = ExitStack()
    if shared:
        one = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho

        def the_one(_packet_type: int) -> Properties:
            return one

        # a plain function, not a Mock: a Mock would record every call it gets
        stack.enter_context(mock.patch.object(smartlic.mqtt.aio, "Properties", the_one))
    for n in range(count):
        delay = started + n / RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        client_id = f"MEM:aio-{n:06d}"
        client = AsyncMqttClient(
            client_id=client_id,
            broker=address,
            on_message=lambda _m: None,
            subscriptions=[(f"mem/{n:06d}/down", 1)] if subscribe else [],
            protocol="5" if v5 else "3.1.1",
            clean_start=True,
            keepalive=KEEPALIVE,
        )
        clients.append(client)
        tasks.append(asyncio.create_task(client.connect(timeout=60)))
    with stack:
        await asyncio.gather(*tasks)
    return [*clients, *tasks]


async def child_main(variant: str, url: str, count: int, *, trace: bool) -> dict[str, Any]:
    v5 = "-5" in variant
    subscribe = "-sub" in variant
    shared = variant.endswith("-shared")
    if trace:
        tracemalloc.start()
    before = sample()
    traced_before = tracemalloc.take_snapshot() if trace else None
    if variant.startswith("paho"):
        held = await connect_paho(url, count, v5=v5, subscribe=subscribe)
    else:
        held = await connect_aio(url, count, v5=v5, subscribe=subscribe, shared=shared)
    after = sample()
    traced_after = tracemalloc.take_snapshot() if trace else None
    gc.collect()
    _libc.malloc_trim(0)
    trimmed = sample()
    result: dict[str, Any] = {
        "variant": variant,
        "connections": count,
        **{f"{k}_per_conn": round((after[k] - before[k]) / count) for k in before},
        "rss_trimmed_per_conn": round((trimmed["rss"] - before["rss"]) / count),
        "threads_after": after["threads"],
    }
    if traced_before is not None and traced_after is not None:
        stats = traced_after.compare_to(traced_before, "lineno")
        result["traced_per_conn"] = round(sum(s.size_diff for s in stats) / count)
        result["top_sites"] = [
            f"{s.size_diff / count:7.0f} B  {s.count_diff / count:5.1f}x  "
            f"{s.traceback[0].filename.split('site-packages/')[-1]}:{s.traceback[0].lineno}"
            for s in stats[:15]
        ]
        by_file: dict[str, int] = {}
        for s in stats:
            name = s.traceback[0].filename.split("site-packages/")[-1]
            by_file[name] = by_file.get(name, 0) + s.size_diff
        result["by_file"] = {
            k: round(v / count) for k, v in sorted(by_file.items(), key=lambda kv: -kv[1])[:8]
        }
    print(json.dumps(result), flush=True)
    # Hold the connections until the parent has killed the broker (see run_variant).
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    del held
    return result


def raise_open_files(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


# ---- the parent ----------------------------------------------------------------------


def run_variant(variant: str, count: int, *, trace: bool) -> dict[str, Any]:
    """One child against one fresh broker. The broker is killed while the child still holds
    its connections, so that TIME_WAIT lands on the broker's side: paho binds every socket
    before connecting (``source_address=("", 0)``), and a bound port cannot be reused while
    in TIME_WAIT, so client-side TIME_WAITs would use up the ephemeral ports of the next runs.
    """
    with tempfile.TemporaryDirectory(prefix="connection-memory-") as folder:
        broker = MosquittoBroker(Path(folder), extra_config="max_connections -1\n")
        broker.start()
        args = [sys.executable, __file__, "--child", variant, broker.url, str(count)]
        child = subprocess.Popen(
            [*args, *(["--trace"] if trace else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            line = child.stdout.readline() if child.stdout is not None else ""
        finally:
            broker.kill()
        _, err = child.communicate(timeout=120)
    if child.returncode != 0 or not line:
        return {"variant": variant, "error": err.strip().splitlines()[-3:]}
    result: dict[str, Any] = json.loads(line)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--child"]:
        variant, url, count = args_list[1], args_list[2], int(args_list[3])
        raise_open_files(count + 256)
        asyncio.run(child_main(variant, url, count, trace="--trace" in args_list))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--trace", action="store_true", help="also a tracemalloc run each")
    args = parser.parse_args(args_list)
    raise_open_files(args.connections + 256)
    for variant in args.variants.split(","):
        print(json.dumps(run_variant(variant, args.connections, trace=False)), flush=True)
        if args.trace:
            print(json.dumps(run_variant(variant, args.connections, trace=True)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
