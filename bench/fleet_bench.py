"""The simulator's capacity: connections per second and memory per device at 1k, 5k and 10k
devices, and end-to-end reports per second with report → notice latency at a fixed offered load.

Run: ``.venv/bin/python bench/fleet_bench.py`` (needs mosquitto; a few minutes).
``--sizes 1000,5000`` and ``--skip-e2e`` / ``--skip-connect`` narrow it.

* **Connections** (each measurement a fresh child process and a fresh Mosquitto with
  ``max_connections -1``, RLIMIT_NOFILE raised to the hard limit): N devices connect at
  ``--rate`` per second (no jitter); *connect rate* is N over the time from the first connect
  to the last CONNACK + SUBACK; *memory per device* is the child's RSS once all are connected
  minus its RSS before the first, over N. The baseline, measured the same way in the same
  run, is N bare :class:`~smartlic.mqtt.aio.AsyncMqttClient` connections (paho on the asyncio
  loop, each subscribed to its downlink); the fleet adds an agent core, its state and
  bookkeeping to each (unregistered cores: they only connect).
* **End to end**: ``smartlic-sim``'s ``steady`` story with the run's own Mosquitto and
  collector process, every device registered; the report interval (60 virtual s) and the time
  scale set the offered load (devices x scale / 60 reports per second), with no other usage
  change. Throughput and latency are the main part's (after every device is authorized); the
  memory is the simulator process's peak RSS during the run minus its RSS before, per
  registered device.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from smartlic.agent import CoreSettings
from smartlic.mqtt.aio import AsyncMqttClient
from smartlic.mqtt.broker import MosquittoBroker
from smartlic.mqtt.url import parse_broker_url
from smartlic.protocol import Topics
from smartlic.simulator.clock import VirtualClock
from smartlic.simulator.fleet import Fleet
from smartlic.simulator.infra import raise_open_files
from smartlic.simulator.metrics import Metrics
from smartlic.simulator.runner import RunOptions, execute
from smartlic.simulator.scenarios import load_scenarios

if TYPE_CHECKING:
    from collections.abc import Sequence

PAGE: Final = os.sysconf("SC_PAGE_SIZE")
SIZES: Final = (1000, 5000, 10_000)
TOPICS: Final = Topics()


def rss_bytes() -> int:
    """The resident set of this process now (not the peak)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE


# ---- children ------------------------------------------------------------------------


async def connect_bare(url: str, devices: int, rate: float) -> dict[str, Any]:
    broker = parse_broker_url(url)
    clients: list[AsyncMqttClient] = []
    before = rss_bytes()
    started = time.monotonic()
    done: list[float] = []

    async def one(n: int) -> None:
        device_id = f"BENCH:bare-{n:06d}"
        client = AsyncMqttClient(
            client_id=device_id,
            broker=broker,
            on_message=lambda _m: None,
            subscriptions=[(TOPICS.downlink(device_id), 1)],
            keepalive=60,
        )
        clients.append(client)
        await client.connect(timeout=60)
        done.append(time.monotonic())

    tasks = []
    for n in range(devices):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n)))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    seconds = max(done, default=started) - started
    after = rss_bytes()
    await asyncio.gather(*(c.disconnect() for c in clients))
    return {
        "kind": "bare",
        "devices": devices,
        "connected": len(done),
        "errors": len(errors),
        "seconds": round(seconds, 3),
        "rate_per_s": round(len(done) / seconds, 1) if seconds else None,
        "bytes_per_device": round((after - before) / devices),
    }


async def connect_fleet(url: str, devices: int, rate: float) -> dict[str, Any]:
    clock = VirtualClock()
    metrics = Metrics(scale=1, now=time.monotonic())
    before = rss_bytes()
    fleet = Fleet(
        broker=parse_broker_url(url),
        clock=clock,
        settings=CoreSettings(),
        metrics=metrics,
        run_id="bench",
    )
    for _ in range(devices):
        fleet.add(va="DEFAULT", token=None, usage={"network-advantage": 1})
    fleet.start()
    started = time.monotonic()
    await fleet.ramp(fleet.devices, rate=rate)
    await fleet.wait_for(lambda: fleet.connected == devices, timeout=120)
    connected = [d.first_connected for d in fleet.devices if d.first_connected is not None]
    seconds = max(connected, default=started) - started
    after = rss_bytes()
    await fleet.close()
    return {
        "kind": "fleet",
        "devices": devices,
        "connected": len(connected),
        "errors": sum(fleet.connect_errors.values()),
        "seconds": round(seconds, 3),
        "rate_per_s": round(len(connected) / seconds, 1) if seconds else None,
        "bytes_per_device": round((after - before) / devices),
    }


async def end_to_end(devices: int, load: float, duration: float) -> dict[str, Any]:
    scale = load * 60 / devices
    scenario = load_scenarios()["steady"].with_values(
        {
            "devices": devices,
            "duration": duration,
            "time_scale": scale,
            "report_interval": 60,
            "auth_validity": 86_400,
            "change_share": 0.0,
            "rate": 2000,
            "ready_timeout": 120,
            "drain": 60,
        }
    )
    before = rss_bytes()
    peak = before
    running = True

    async def sample() -> None:
        nonlocal peak
        while running:
            peak = max(peak, rss_bytes())
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as workdir:
        report = await execute(
            RunOptions(
                scenario=scenario, workdir=Path(workdir), progress=False, stream=io.StringIO()
            )
        )
    running = False
    await sampler
    data = report.as_json()
    phases: dict[str, Any] = report.phases
    return {
        "kind": "e2e",
        "devices": devices,
        "offered_rps": load,
        "time_scale": round(scale, 3),
        "ok": data["ok"],
        "failures": data["failures"],
        "reports_lost": data["reports_lost"],
        "reports_double_counted": data["reports_double_counted"],
        "throughput_rps": phases.get("main", {}).get("throughput_rps"),
        "latency_ms": phases.get("main", {}).get("latency_ms"),
        "connect": data["connect"],
        "ramp": phases.get("ramp"),
        "peak_bytes_per_device": round((peak - before) / devices),
    }


def child(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("bare", "fleet", "e2e"))
    parser.add_argument("--url", default="")
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--load", type=float, default=500)
    parser.add_argument("--duration", type=float, default=20)
    args = parser.parse_args(argv)
    raise_open_files()
    if args.what == "bare":
        result = asyncio.run(connect_bare(args.url, args.devices, args.rate))
    elif args.what == "fleet":
        result = asyncio.run(connect_fleet(args.url, args.devices, args.rate))
    else:
        result = asyncio.run(end_to_end(args.devices, args.load, args.duration))
    print(json.dumps(result))


# ---- the parent ----------------------------------------------------------------------


def run_child(args: list[str], timeout: float = 600) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-3:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def connections(sizes: Sequence[int], rate: float) -> list[dict[str, Any]]:
    results = []
    for size in sizes:
        for kind in ("bare", "fleet"):
            with tempfile.TemporaryDirectory(prefix="fleet-bench-broker-") as folder:
                broker = MosquittoBroker(Path(folder), extra_config="max_connections -1\n")
                broker.start()
                try:
                    result = run_child(
                        [kind, "--url", broker.url, "--devices", str(size), "--rate", str(rate)]
                    )
                finally:
                    broker.kill()
            result.setdefault("kind", kind)
            result.setdefault("devices", size)
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--child"]:
        child(args_list[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--rate", type=float, default=2000, help="connections per second")
    parser.add_argument(
        "--e2e",
        default="2000:250,2000:500,2000:1000,2000:2000,10000:1000",
        help="end-to-end runs, DEVICES:OFFERED_REPORTS_PER_SECOND,...",
    )
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--skip-connect", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args(args_list)
    raise_open_files()
    if not args.skip_connect:
        connections([int(s) for s in args.sizes.split(",")], args.rate)
    if not args.skip_e2e:
        for run in args.e2e.split(","):
            devices, _, load = run.partition(":")
            result = run_child(
                [
                    "e2e",
                    "--devices",
                    devices,
                    "--load",
                    load,
                    "--duration",
                    str(args.duration),
                ]
            )
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
