"""Property: the incremental pool counters always equal the sum over the registered devices."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smartlic.collector.device_admin import deregister_device, move_device
from smartlic.collector.store import open_store

from .collector_support import NOW, Site, udi_of

if TYPE_CHECKING:
    from collections.abc import Sequence

SERIALS = ("S0", "S1", "S2", "S3")
VAS = ("DEFAULT", "Engineering")
TAGS = ("a", "b", "c")

operations = st.one_of(
    st.tuples(st.just("register"), st.sampled_from(VAS)),
    st.tuples(
        st.just("report"),
        st.integers(0, 3),
        st.dictionaries(st.sampled_from(TAGS), st.integers(0, 5), max_size=3),
    ),
    st.tuples(st.just("move"), st.integers(0, 3), st.sampled_from(VAS)),
    st.tuples(st.just("deregister"), st.integers(0, 3)),
)
"""Operations name a registered device by its index among them (modulo how many there are),
so almost every generated operation does something."""


async def _apply(site: Site, operation: tuple[object, ...], registered: list[str]) -> None:
    kind = operation[0]
    if kind == "register":
        free = [s for s in SERIALS if not any(d.endswith(f":{s}") for d in registered)]
        if free:
            registered += await site.register("ACME", str(operation[1]), free[0])
        return
    if not registered:
        return
    index = int(str(operation[1])) % len(registered)
    device = await site.device(registered[index])
    if kind == "report":
        counts = operation[2]
        assert isinstance(counts, dict)
        await site.report(device.device_id, counts)
    elif kind == "move" and device.va_name != operation[2]:
        await site.run(
            move_device,
            account_name="ACME",
            udi=udi_of(device.device_id),
            to_va=str(operation[2]),
            now=NOW,
        )
    elif kind == "deregister":
        registered.remove(device.device_id)
        await site.run(
            deregister_device, account_name="ACME", udi=udi_of(device.device_id), now=NOW
        )


async def _counters_and_sums(
    site: Site,
) -> tuple[Counter[tuple[int, str]], Counter[tuple[int, str]]]:
    async with site.store.read() as tx:
        counters = Counter(
            {
                (int(r["va_id"]), str(r["tag"])): int(r["in_use"])
                for r in await tx.fetch_all("SELECT * FROM pool_usage")
            }
        )
        sums = Counter(
            {
                (int(r["va_id"]), str(r["tag"])): int(r["total"])
                for r in await tx.fetch_all(
                    "SELECT d.va_id, u.tag, SUM(u.count) AS total FROM device_usage u"
                    " JOIN devices d ON d.id = u.device_id WHERE d.state = 'registered'"
                    " GROUP BY d.va_id, u.tag"
                )
            }
        )
    return +counters, +sums


async def _run(template: Path, ops: Sequence[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "c.db"
        shutil.copyfile(template, path)
        store = await open_store(path)
        try:
            site, registered = Site(store), list[str]()
            for operation in ops:
                await _apply(site, operation, registered)
                counters, sums = await _counters_and_sums(site)
                assert sums == counters
        finally:
            await store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(operations, max_size=12))
def test_pool_counters_equal_the_sum_over_registered_devices(
    site_template: Path, ops: list[tuple[object, ...]]
) -> None:
    asyncio.run(_run(site_template, ops))
