"""Compliance cost per report update, with 1k, 10k and 100k devices in one VA.

The collector keeps each pool's in-use count incrementally (``pool_usage``), so evaluating a
pool after a report costs the same whatever the number of devices: the goal is a flat line.
For contrast, the last row recomputes in-use by summing every device's count, as a design
without counters would have to.

Each report update is what the service does per accepted report: load the device, store its
counts and sequence number, move the pool counter, load the pool (purchased now + in use) and
record its status if it flipped — here in batches of 100 reports per transaction (the service's
shape) and one report per transaction.

    .venv/bin/python bench/compliance_bench.py            # 1k, 10k, 100k
    .venv/bin/python bench/compliance_bench.py 1000 5000  # other sizes
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from smartlic.collector import site
from smartlic.collector.compliance import load_pool_states, record_statuses
from smartlic.collector.devices import (
    CountsUpdate,
    NewDevice,
    apply_reports,
    find_devices,
    register_devices,
)
from smartlic.collector.orders import OrderLine, deposit_order
from smartlic.collector.store import open_store
from smartlic.collector.users import load_actor
from smartlic.protocol import Algorithm, KeyType, SigningKey, Udi

if TYPE_CHECKING:
    from smartlic.collector.store import Store

TAG = "network-advantage"
NOW = 1_800_000_000
OPERATOR = "ops@example.com"
SETUP_BATCH = 2000
REPORTS = 2000
SCANS = 40


def _device_ids(count: int) -> list[str]:
    return [Udi(product_id="C9300/24T", serial=f"S{i:07d}").device_id for i in range(count)]


async def _setup(store: Store, devices: int) -> int:
    """A site whose default VA holds twice as many licenses as ``devices`` devices use (one
    each); the VA's id."""
    collector = SigningKey.from_seed(KeyType.ED25519, bytes(32))
    async with store.write() as tx:
        await site.init_site(tx, operator_email=OPERATOR, collector_key=collector.public, now=NOW)
        operator = await load_actor(tx, OPERATOR)
        _, va = await site.create_smart_account(
            tx, operator, name="ACME", admin_email="alice@acme.example", now=NOW
        )
        await deposit_order(
            tx,
            operator,
            number="PO-1",
            ordered_on=NOW,
            account_name="ACME",
            lines=[OrderLine(tag=TAG, quantity=2 * devices)],
            now=NOW,
        )
    key = bytes(32)
    ids = _device_ids(devices)
    for start in range(0, devices, SETUP_BATCH):
        chunk = ids[start : start + SETUP_BATCH]
        async with store.write() as tx:
            await register_devices(
                tx,
                [
                    NewDevice(
                        udi=Udi.from_device_id(i),
                        algorithm=Algorithm.ED25519,
                        public_key=key,
                        va_id=va.id,
                    )
                    for i in chunk
                ],
                now=NOW,
            )
            records = await find_devices(tx, chunk)
            await apply_reports(
                tx,
                [
                    CountsUpdate(device=records[i], seq=1, received_at=NOW, counts={TAG: 1})
                    for i in chunk
                ],
            )
    return va.id


async def _update(store: Store, batch: list[str], seq: int, rng: random.Random) -> None:
    """What the service does for a batch of accepted reports, compliance included."""
    async with store.write() as tx:
        records = await find_devices(tx, batch)
        await apply_reports(
            tx,
            [
                CountsUpdate(
                    device=records[i], seq=seq, received_at=NOW, counts={TAG: rng.randint(1, 2)}
                )
                for i in batch
            ],
        )
        keys = {(records[i].va_id, TAG) for i in batch}
        pools = await load_pool_states(tx, keys, NOW)
        await record_statuses(tx, pools.values(), actor="bench", now=NOW)


async def _per_report(store: Store, ids: list[str], batch_size: int, seq: int) -> float:
    rng = random.Random(seq)  # noqa: S311 -- reproducible workload, not secrets
    chosen = rng.sample(ids, min(REPORTS, len(ids)))
    started = time.perf_counter()
    for start in range(0, len(chosen), batch_size):
        await _update(store, chosen[start : start + batch_size], seq, rng)
    return (time.perf_counter() - started) / len(chosen) * 1e6


async def _recount(store: Store, va_id: int) -> float:
    """What each update would add if in-use were summed over the VA's devices (the query
    alone, inside an open transaction, as it would run in the report's own)."""
    async with store.read() as tx:
        started = time.perf_counter()
        for _ in range(SCANS):
            await tx.fetch_one(
                "SELECT SUM(u.count) AS n FROM device_usage u JOIN devices d"
                " ON d.id = u.device_id WHERE d.va_id = ? AND d.state = 'registered'"
                " AND u.tag = ?",
                (va_id, TAG),
            )
        return (time.perf_counter() - started) / SCANS * 1e6


async def _measure(devices: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        store = await open_store(Path(folder) / "bench.db", create=True)
        try:
            begun = time.perf_counter()
            va_id = await _setup(store, devices)
            print(
                f"{devices:>9,} devices set up in {time.perf_counter() - begun:.1f} s", flush=True
            )
            ids = _device_ids(devices)
            return {
                "incremental, 100 reports per transaction": await _per_report(store, ids, 100, 2),
                "incremental, 1 report per transaction": await _per_report(store, ids[:], 1, 3),
                "recount by scanning devices (no counters)": await _recount(store, va_id),
            }
        finally:
            await store.close()


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [1_000, 10_000, 100_000]
    results = {n: asyncio.run(_measure(n)) for n in sizes}
    rows = list(next(iter(results.values())))
    width = max(map(len, rows))
    print(f"compliance cost per report update, µs (SQLite; up to {REPORTS:,} reports each)")
    print(f"{'devices in the VA':<{width}}" + "".join(f"{n:>12,}" for n in sizes))
    for row in rows:
        print(f"{row:<{width}}" + "".join(f"{results[n][row]:>12,.0f}" for n in sizes))


if __name__ == "__main__":
    main(sys.argv[1:])
