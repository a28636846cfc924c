"""How fast the collector drains reports, and what each costs it — measured on the collector alone.

    .venv/bin/python bench/collector_bench.py [--devices 2000] [--reports 5] [--json FILE]

Set-up: a Mosquitto of its own, a collector database with N devices registered in bulk and
every report signed up front, then ``smartlic-collector run`` as a subprocess. A separate
publisher process sends the reports (QoS 1); a separate subscriber process timestamps every
notice. The load generator's own CPU is therefore not counted: the collector's CPU time is read
from /proc for its process only.

Both load generators are raw-socket MQTT clients (blocking sockets, packets from the sans-I/O
:mod:`smartlic.mqtt.packets`, protocol version per ``--mqtt-protocol``) rather than paho, so on a
2-core machine they leave the collector the CPU paho would have taken. The publisher encodes
every PUBLISH before the first goes out, sends whatever is due in one ``sendall`` (at most
1,000 unacknowledged; packet ids are reused only after their PUBACK) and reads PUBACKs 256 KiB
at a time. The subscriber (QoS 1) reads as much at once, timestamps each read when it returns
and answers all its PUBLISHes with one ``sendall`` of PUBACKs.

Two phases:

1. **drain**: all reports at once; reports/s = reports / (first publish → last notice);
2. **latency**: a paced load at half the drained rate; report → notice p50/p95/p99.

Beside them, the bare cost of what the collector must do per report with the same library in
this run: one Ed25519 verification and one signature (libsodium, as the collector does them;
OpenSSL's cost is printed beside it for comparison with runs before the change). The goal is
≥ 5,000 reports/s on this 2-core machine and CPU per report ≤ 1.5x that bare cost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import secrets
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from smartlic.collector import site
from smartlic.collector.accounts import virtual_account_or_default
from smartlic.collector.devices import NewDevice, register_devices
from smartlic.collector.orders import OrderLine, deposit_order
from smartlic.collector.signing_key import write_key_file
from smartlic.collector.store import open_store
from smartlic.collector.users import load_actor
from smartlic.mqtt import packets
from smartlic.mqtt.broker import MosquittoBroker
from smartlic.mqtt.packets import (
    Packet,
    PacketReader,
    PacketType,
    read_connack,
    read_packet_id,
    read_publish,
    read_suback,
)
from smartlic.protocol import (
    Algorithm,
    Authorization,
    KeyType,
    SigningKey,
    Topics,
    Udi,
    UsageReport,
    open_message,
    seal,
)
from smartlic.simulator.metrics import percentile

from procstat import RunnableSampler, cpu_seconds, machine_cpu, thread_cpu

if TYPE_CHECKING:
    from collections.abc import Callable

TOPICS = Topics()
OPERATOR = "ops@example.com"
TAG = "network-advantage"


def bare_crypto_cost(samples: int = 3000, blocks: int = 5) -> dict[str, float]:
    """Microseconds for one Ed25519 verify and one sign of a report-sized message.

    Measured twice: through smartlic's own keys (libsodium, what the collector calls: the
    baseline) and through ``cryptography``'s (OpenSSL, what the collector used before, kept so
    figures compare with earlier runs). After a warm-up (an idle core runs slow at first:
    unwarmed, the first measurement of a run came out up to 30 % above the next), each is the
    median of ``blocks`` blocks.
    """
    seed, data = secrets.token_bytes(32), secrets.token_bytes(190)
    key = SigningKey.from_seed(KeyType.ED25519, seed)
    openssl = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    openssl_public = openssl.public_key()
    signature = key.sign(data)
    size = max(1, samples // blocks)

    def per_call(operation: Callable[[], object]) -> float:
        start = time.process_time()
        for _ in range(size):
            operation()
        return (time.process_time() - start) / size * 1e6

    operations: dict[str, Callable[[], object]] = {
        "verify_us": lambda: key.public.verify(signature, data),
        "sign_us": lambda: key.sign(data),
        "openssl_verify_us": lambda: openssl_public.verify(signature, data),
        "openssl_sign_us": lambda: openssl.sign(data),
    }
    for _ in range(blocks):
        for operation in operations.values():
            per_call(operation)
    cost = {
        name: statistics.median(per_call(operation) for _ in range(blocks))
        for name, operation in operations.items()
    }
    cost["verify_sign_us"] = cost["verify_us"] + cost["sign_us"]
    cost["openssl_verify_sign_us"] = cost["openssl_verify_us"] + cost["openssl_sign_us"]
    return cost


async def build_site(
    folder: Path, devices: int, reports: int
) -> tuple[Path, Path, list[tuple[str, bytes, int]]]:
    db, key_path = folder / "bench.db", folder / "bench.db.key"
    key = SigningKey.from_seed(KeyType.ED25519, secrets.token_bytes(32))
    write_key_file(key_path, key)
    store = await open_store(db, create=True)
    now = int(time.time())
    fleet = [
        (
            Udi(product_id="C9300-24T", serial=f"BENCH{n:06d}"),
            SigningKey.from_seed(KeyType.ED25519, secrets.token_bytes(32)),
        )
        for n in range(devices)
    ]
    try:
        async with store.write() as tx:
            await site.init_site(tx, operator_email=OPERATOR, collector_key=key.public, now=now)
            actor = await load_actor(tx, OPERATOR)
            account, _ = await site.create_smart_account(
                tx, actor, name="BENCH", admin_email="admin@bench.example", now=now
            )
            await deposit_order(
                tx,
                actor,
                number="PO-BENCH",
                ordered_on=now,
                lines=[OrderLine(tag=TAG, quantity=devices * 10)],
                account_name="BENCH",
                va_name=None,
                now=now,
            )
            va = await virtual_account_or_default(tx, account, None)
            await register_devices(
                tx,
                [
                    NewDevice(
                        udi=udi, algorithm=Algorithm.ED25519, public_key=k.public.raw, va_id=va.id
                    )
                    for udi, k in fleet
                ],
                now=now,
            )
    finally:
        await store.close()
    signed = [
        (
            TOPICS.uplink(udi.device_id),
            seal(
                UsageReport(
                    device_id=udi.device_id,
                    seq=seq,
                    issued_at=now,
                    period=86_400,
                    counts={TAG: 1 + seq % 5},
                ),
                k,
            ),
            seq,
        )
        for seq in range(1, reports + 1)
        for udi, k in fleet
    ]
    return db, key_path, signed


KEEPALIVE = 60
"""Seconds: the load generators' MQTT keepalive."""
WINDOW = 1000
"""The publisher's most unacknowledged PUBLISHes (packet ids are reused only after their PUBACK)."""
RECV = 1 << 18
"""Bytes asked of each ``recv``: one read takes hundreds of packets."""
NOTICES = "smartlic/v1/d/+/down"


def _connect(port: int, client_id: str, *, v5: bool) -> tuple[socket.socket, PacketReader]:
    """A blocking MQTT connection (clean start) once the broker has accepted it."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(packets.connect(client_id=client_id, v5=v5, clean_start=True, keepalive=KEEPALIVE))
    reader = PacketReader()
    ack = _expect(sock, reader, PacketType.CONNACK)
    if read_connack(ack, v5=v5).reason:
        raise ConnectionError(f"{client_id}: the broker refused the connection")
    return sock, reader


def _expect(sock: socket.socket, reader: PacketReader, kind: PacketType) -> Packet:
    """The next packet, which must be a ``kind`` and the only one the broker has sent yet."""
    while not (arrived := reader.feed(_recv(sock))):
        pass
    if len(arrived) != 1 or arrived[0].type is not kind:
        raise ConnectionError(f"expected {kind.name}, got {[p.type.name for p in arrived]}")
    return arrived[0]


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(RECV)
    if not data:
        raise ConnectionError("the broker closed the connection")
    return data


def publisher(
    port: int,
    messages: list[tuple[str, bytes, int]],
    rate: float,
    out: Any,  # noqa: ANN401 -- a multiprocessing queue
    *,
    v5: bool,
) -> None:
    """Publish every message (at ``rate``/s, or flat out when 0); send back the send times.

    Every PUBLISH is encoded before the first is sent; whatever is due and fits the window goes
    out in one ``sendall``, and PUBACKs come back in large reads.
    """
    sock, reader = _connect(port, f"bench-pub-{os.getpid()}", v5=v5)
    wire = [
        packets.publish(topic, payload, qos=1, packet_id=index % 65535 + 1, v5=v5)
        for index, (topic, payload, _) in enumerate(messages)
    ]
    keys = [(TOPICS.device_of_uplink(topic), seq) for topic, _, seq in messages]
    total = len(wire)
    sent: list[tuple[str, int, float]] = []
    pending: set[int] = set()
    index = 0
    start = time.monotonic()
    while index < total or pending:
        now = time.monotonic()
        first = index
        while index < total and len(pending) < WINDOW and not (rate and start + index / rate > now):
            packet_id = index % 65535 + 1
            if packet_id in pending:
                break
            pending.add(packet_id)
            index += 1
        if index > first:
            sock.sendall(b"".join(wire[first:index]))
            sent.extend((device, seq, now) for device, seq in keys[first:index])
        # Block for PUBACKs, unless a paced send falls due first.
        timeout = None
        if rate and index < total and len(pending) < WINDOW and index % 65535 + 1 not in pending:
            timeout = max(0.0, start + index / rate - time.monotonic())
        if not pending:
            time.sleep(timeout or 0.0)
            continue
        if timeout is not None and not select.select([sock], [], [], timeout)[0]:
            continue
        for packet in reader.feed(_recv(sock)):
            if packet.type is PacketType.PUBACK:
                pending.discard(read_packet_id(packet))
    sock.sendall(packets.DISCONNECT)
    sock.close()
    out.put(sent)


def subscriber(
    port: int,
    expected: int,
    ready: Any,  # noqa: ANN401 -- a multiprocessing event
    out: Any,  # noqa: ANN401 -- a multiprocessing queue
    deadline: float,
    *,
    v5: bool,
) -> None:
    """Timestamp every notice until ``expected`` arrived or ``deadline`` (monotonic) passed.

    Each read is timestamped once, when it returns; its PUBACKs go back in one ``sendall``.
    """
    got: list[tuple[bytes, float]] = []
    sock, reader = _connect(port, f"bench-sub-{os.getpid()}", v5=v5)
    sock.sendall(packets.subscribe(1, [(NOTICES, 1)], v5=v5))
    _, codes = read_suback(_expect(sock, reader, PacketType.SUBACK), v5=v5)
    if any(code >= 0x80 for code in codes):
        raise ConnectionError(f"the broker refused the subscription: {codes}")
    ready.set()
    last_sent = time.monotonic()
    while len(got) < expected:
        now = time.monotonic()
        if now >= deadline:
            break
        if now - last_sent >= KEEPALIVE / 2:
            sock.sendall(packets.PINGREQ)
            last_sent = now
        wait = min(deadline - now, KEEPALIVE / 2 - (now - last_sent))
        if not select.select([sock], [], [], wait)[0]:
            continue
        data = _recv(sock)
        at = time.monotonic()
        acks = []
        for packet in reader.feed(data):
            if packet.type is PacketType.PUBLISH:
                notice = read_publish(packet, v5=v5)
                got.append((notice.payload, at))
                if notice.qos:
                    acks.append(packets.puback(notice.packet_id))
        if acks:
            sock.sendall(b"".join(acks))
            last_sent = at
    sock.sendall(packets.DISCONNECT)
    sock.close()
    out.put(got)


def run_phase(
    port: int,
    collector: subprocess.Popen[bytes],
    broker_pid: int,
    messages: list[tuple[str, bytes, int]],
    rate: float,
    *,
    v5: bool,
    runnable: bool = False,
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    ready, sent_q, got_q = ctx.Event(), ctx.Queue(), ctx.Queue()
    deadline = time.monotonic() + 300
    sub = ctx.Process(
        target=subscriber, args=(port, len(messages), ready, got_q, deadline), kwargs={"v5": v5}
    )
    sub.start()
    ready.wait(10)
    cpu_before = cpu_seconds(collector.pid)
    threads_before = thread_cpu(collector.pid)
    broker_before = cpu_seconds(broker_pid)
    machine_before = machine_cpu()
    pub = ctx.Process(target=publisher, args=(port, messages, rate, sent_q), kwargs={"v5": v5})
    sampler = (
        RunnableSampler({"collector": collector.pid, "broker": broker_pid}) if runnable else None
    )
    with sampler or contextlib.nullcontext():
        pub.start()
        sent = sent_q.get()
        got = got_q.get()
    pub.join()
    sub.join()
    cpu = cpu_seconds(collector.pid) - cpu_before
    threads_after = thread_cpu(collector.pid)
    broker_cpu = cpu_seconds(broker_pid) - broker_before
    (busy_after, idle_after), (busy_before, idle_before) = machine_cpu(), machine_before
    busy, idle = busy_after - busy_before, idle_after - idle_before
    first_sent = {(device, seq): at for device, seq, at in sent}
    latencies = []
    for payload, at in got:
        message = open_message(payload).message
        if isinstance(message, Authorization) and message.in_reply_to is not None:
            start = first_sent.get((message.device_id, message.in_reply_to))
            if start is not None:
                latencies.append((at - start) * 1000)
    elapsed = max(at for _, at in got) - min(at for _, _, at in sent)
    latencies.sort()

    def pct(p: float) -> float:
        # Nearest rank, as the simulator reports it: one rank higher made p99 of 100 the max.
        return percentile(latencies, p) if latencies else float("nan")

    return {
        "reports": len(messages),
        "answered": len(latencies),
        "offered_rps": rate,
        "seconds": elapsed,
        "reports_per_s": len(latencies) / elapsed,
        "collector_cpu_us_per_report": cpu / max(1, len(latencies)) * 1e6,
        "collector_threads_us_per_report": {
            name: (threads_after[name] - threads_before.get(name, 0.0))
            / max(1, len(latencies))
            * 1e6
            for name in threads_after
            if threads_after[name] - threads_before.get(name, 0.0) > 0
        },
        "runnable": sampler.summary() if sampler else None,
        "broker_cpu_us_per_report": broker_cpu / max(1, len(latencies)) * 1e6,
        # From the first report published to the last notice received, plus the processes'
        # start and end: the share of the machine's cores that sat idle meanwhile.
        "machine_idle_share": idle / max(1e-9, busy + idle),
        "latency_ms": {
            "p50": pct(50),
            "p95": pct(95),
            "p99": pct(99),
            "mean": statistics.fmean(latencies) if latencies else float("nan"),
        },
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument(
        "--reports", type=int, default=5, help="reports per device in the drain phase"
    )
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--crypto-workers", type=int, default=2)
    parser.add_argument("--mqtt-protocol", choices=("5", "3.1.1"), default="5")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--py-spy", type=Path, help="write a py-spy profile of the drain here")
    parser.add_argument(
        "--runnable",
        action="store_true",
        help="sample which of the collector's threads are runnable during the drain",
    )
    args = parser.parse_args()
    if args.py_spy and shutil.which("py-spy") is None:
        parser.error("--py-spy needs py-spy on PATH (.venv/bin/pip install py-spy)")
    return args


def main() -> int:
    args = parse_args()

    v5 = args.mqtt_protocol == "5"
    # The bare cost is measured before and after the run, with the collector stopped, and
    # their mean is the baseline: this machine's speed drifts by tens of percent within a
    # minute, and one measurement taken before the drain made the ratio swing with it.
    before = bare_crypto_cost()
    with tempfile.TemporaryDirectory(prefix="smartlic-bench-") as tmp:
        folder = Path(tmp)
        db, key_path, signed = asyncio.run(build_site(folder, args.devices, args.reports + 2))
        drain_set = [m for m in signed if m[2] <= args.reports]
        paced_set = [m for m in signed if m[2] > args.reports]
        with MosquittoBroker(folder / "broker") as broker:
            log = (folder / "collector.log").open("wb")
            collector = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "smartlic.collector",
                    "run",
                    "--db",
                    str(db),
                    "--key",
                    str(key_path),
                    "--broker",
                    broker.url,
                    "--batch-size",
                    str(args.batch_size),
                    "--crypto-workers",
                    str(args.crypto_workers),
                    "--mqtt-protocol",
                    args.mqtt_protocol,
                    "--log-level",
                    "warning",
                    "--log-format",
                    "json",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            broker_pid = broker.pid
            assert broker_pid is not None  # noqa: S101 -- the context manager started it
            try:
                time.sleep(1.5)
                profiler = None
                if args.py_spy:
                    # Optional: sample the collector during the drain (py-spy on PATH).
                    profiler = subprocess.Popen(
                        [
                            *(shutil.which("py-spy") or "py-spy",),
                            *("record", "-p", str(collector.pid), "-o", str(args.py_spy)),
                            *("-f", "raw", "-r", "200", "--threads", "--nonblocking"),
                        ]
                    )
                    time.sleep(1)
                drain = run_phase(
                    broker.port,
                    collector,
                    broker_pid,
                    drain_set,
                    rate=0,
                    v5=v5,
                    runnable=args.runnable,
                )
                if profiler:
                    profiler.send_signal(signal.SIGINT)
                    profiler.wait()
                paced = run_phase(
                    broker.port,
                    collector,
                    broker_pid,
                    paced_set,
                    rate=drain["reports_per_s"] / 2,
                    v5=v5,
                )
            finally:
                collector.terminate()
                collector.wait(30)
                log.close()
    after = bare_crypto_cost()
    baseline = {key: (before[key] + after[key]) / 2 for key in before}
    baseline["verify_sign_us_before"] = before["verify_sign_us"]
    baseline["verify_sign_us_after"] = after["verify_sign_us"]

    ratio = drain["collector_cpu_us_per_report"] / baseline["verify_sign_us"]
    openssl_ratio = drain["collector_cpu_us_per_report"] / baseline["openssl_verify_sign_us"]
    result = {
        "devices": args.devices,
        "baseline": baseline,
        "drain": drain,
        "paced": paced,
        "cpu_ratio_to_bare": ratio,
        "cpu_ratio_to_bare_openssl": openssl_ratio,
    }
    latency = drain["latency_ms"]
    paced_latency = paced["latency_ms"]
    threads = sorted(drain["collector_threads_us_per_report"].items(), key=lambda kv: -kv[1])
    lines = [
        (
            f"bare Ed25519 cost per report (same run): verify {baseline['verify_us']:.0f} µs"
            f" + sign {baseline['sign_us']:.0f} µs = {baseline['verify_sign_us']:.0f} µs"
            f" (mean of {before['verify_sign_us']:.0f} µs before the run"
            f" and {after['verify_sign_us']:.0f} µs after)"
        ),
        (
            f"  the same with OpenSSL (cryptography): verify {baseline['openssl_verify_us']:.0f} µs"
            f" + sign {baseline['openssl_sign_us']:.0f} µs"
            f" = {baseline['openssl_verify_sign_us']:.0f} µs"
        ),
        (
            f"drain   {drain['answered']:>6} reports in {drain['seconds']:.2f} s"
            f" = {drain['reports_per_s']:>7.0f} reports/s   collector CPU"
            f" {drain['collector_cpu_us_per_report']:.0f} µs/report ({ratio:.2f}x bare,"
            f" {openssl_ratio:.2f}x OpenSSL's bare)"
        ),
        (
            f"        report→notice under full load: p50 {latency['p50']:.0f} ms"
            f"  p95 {latency['p95']:.0f} ms  p99 {latency['p99']:.0f} ms"
        ),
        "        collector CPU by thread (µs/report): "
        + ", ".join(f"{name} {us:.0f}" for name, us in threads),
        (
            f"        broker CPU {drain['broker_cpu_us_per_report']:.0f} µs/report;"
            f" machine idle {drain['machine_idle_share']:.0%} of both cores during the drain"
        ),
        *([f"        {drain['runnable']}"] if drain["runnable"] else []),
        (
            f"paced   {paced['answered']:>6} reports at {paced['offered_rps']:.0f}/s"
            f" offered: p50 {paced_latency['p50']:.1f} ms  p95 {paced_latency['p95']:.1f} ms"
            f"  p99 {paced_latency['p99']:.1f} ms   collector CPU"
            f" {paced['collector_cpu_us_per_report']:.0f} µs/report"
        ),
    ]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
