"""The collector's own Python per report, without MQTT: a repeatable figure to optimise against.

    .venv/bin/python bench/ingest_bench.py [--devices 2000] [--reports 10] [--rounds 3]

``collector_bench.py`` measures the whole service through a broker, and its figures drift by
±20 % from one minute to the next on a shared 2-vCPU machine. This one drives the service's
``Ingest`` directly, batch after batch over a real SQLite store, with the crypto in the usual
two worker processes, and reads the CPU time of the calling thread: the event loop's share of
a report without the MQTT client (parsing, verifying's bookkeeping, deciding, the SQL's Python
side, building and sealing the answers), and beside it the workers' CPU, read from ``/proc``
(they are started and have answered before the clock starts). Measured on the fourth machine:
103-107 µs per report over three rounds, against 121-140 µs for the whole event loop in
``collector_bench.py``; on the fifth, 158-175 µs and 152-156 µs in the workers.

Batches of 500 in publishing order (every device's first report, then every second, ...), as
the service sees them, each prepared then committed; no batch is prepared ahead.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

from smartlic.collector.cli.run import tune_garbage_collector
from smartlic.collector.service.crypto import CryptoPool
from smartlic.collector.service.ingest import Ingest, Settings
from smartlic.collector.service.logs import configure_logging
from smartlic.collector.signing_key import read_key_file
from smartlic.collector.site import site_info
from smartlic.collector.store import open_store
from smartlic.mqtt.common import MqttMessage

from collector_bench import TOPICS, build_site
from procstat import cpu_seconds

BATCH = 500
CLOCK_SKEW = 300


async def one_round(devices: int, reports: int, workers: int) -> tuple[float, float, float]:
    """CPU µs per report over a fresh store: the calling thread's (prepare, commit), and the
    crypto workers' together."""
    with tempfile.TemporaryDirectory(prefix="smartlic-ingest-") as tmp:
        db, key_path, signed = await build_site(Path(tmp), devices, reports)
        store = await open_store(db)
        crypto = CryptoPool(workers)
        try:
            async with store.read() as tx:
                site = await site_info(tx)
            ingest = Ingest(
                store,
                crypto,
                Settings(
                    topics=TOPICS,
                    key=read_key_file(key_path),
                    fingerprint=site.key_fingerprint,
                    clock_skew=CLOCK_SKEW,
                ),
            )
            messages = [
                MqttMessage(
                    topic=topic,
                    payload=payload,
                    qos=1,
                    mid=n % 65535 + 1,
                    retain=False,
                    duplicate=False,
                )
                for n, (topic, payload, _) in enumerate(signed)
            ]
            await crypto.start()
            workers_before = sum(cpu_seconds(pid) for pid in crypto.pids)
            gc.collect()
            tune_garbage_collector()
            prepare = commit = 0.0
            for start in range(0, len(messages), BATCH):
                began = time.thread_time()
                prepared = await ingest.prepare(messages[start : start + BATCH])
                middle = time.thread_time()
                await ingest.commit(prepared, int(time.time()))
                prepare += middle - began
                commit += time.thread_time() - middle
            in_workers = sum(cpu_seconds(pid) for pid in crypto.pids) - workers_before
            gc.unfreeze()
        finally:
            await crypto.close()
            await store.close()
    per_report = 1e6 / len(messages)
    return prepare * per_report, commit * per_report, in_workers * per_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--devices", type=int, default=2000)
    parser.add_argument("--reports", type=int, default=10, help="reports per device")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--crypto-workers", type=int, default=2)
    args = parser.parse_args()
    configure_logging("warning")
    totals, in_workers = [], []
    for number in range(1, args.rounds + 1):
        prepare, commit, workers = asyncio.run(
            one_round(args.devices, args.reports, args.crypto_workers)
        )
        totals.append(prepare + commit)
        in_workers.append(workers)
        print(
            f"round {number}: prepare {prepare:.1f} µs + commit {commit:.1f} µs"
            f" = {prepare + commit:.1f} µs of the calling thread's CPU per report;"
            f" crypto workers {workers:.1f} µs"
        )
    print(
        f"median {statistics.median(totals):.1f} µs per report in the calling thread,"
        f" {statistics.median(in_workers):.1f} µs in the workers"
        f" ({args.devices} devices x {args.reports} reports, batches of {BATCH},"
        f" {args.crypto_workers} crypto workers)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
