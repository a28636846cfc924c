"""Device records carried between batches: used only while nothing else changed the store."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest
from smartlic.collector.devices import find_devices
from smartlic.collector.service.crypto import CryptoUnavailable
from smartlic.collector.service.records import kept_records_hold
from smartlic.protocol import ErrorCode

from .ingest_support import collector, decide, devices, refusals, report

if TYPE_CHECKING:
    from collections.abc import Sequence

    from smartlic.collector.devices import DeviceRecord
    from smartlic.collector.store import Store

    from .support import Site

TAG = "network-advantage"


async def stored(store: Store, device_ids: Sequence[str]) -> dict[str, DeviceRecord]:
    async with store.read() as tx:
        return await find_devices(tx, device_ids)


def test_kept_records_hold_only_at_the_version_they_were_kept_at() -> None:
    assert (True, False, False) == (
        kept_records_hold((3, 7), (3, 7)),
        kept_records_hold((3, 7), (4, 7)),
        kept_records_hold(None, (3, 7)),
    )


async def test_a_steady_stream_loads_each_device_once(collector_site: Site) -> None:
    fleet = await devices(collector_site, "A1", "A2")
    async with collector(collector_site) as ingest:
        for counts in ({TAG: 1}, {TAG: 2}, {TAG: 3}):
            await decide(ingest, [report(d, counts) for d in fleet])
        loaded = ingest.device_records.loaded
    assert 2 == loaded


async def test_kept_records_are_what_the_store_holds(collector_site: Site) -> None:
    """Counts set, changed, zeroed and left alone; sequence numbers and report times."""
    fleet = await devices(collector_site, "B1", "B2", "B3")
    batches = [
        [{TAG: 2, "dna": 1}, {TAG: 1}, {"dna": 4}],
        [{TAG: 0}, {TAG: 5, "dna": 0}, {}],
        [{"dna": 0}, {TAG: 5}, {TAG: 1, "dna": 4}],
    ]
    async with collector(collector_site) as ingest:
        for counts in batches:
            await decide(ingest, [report(d, c) for d, c in zip(fleet, counts, strict=True)])
        ids = [d.device_id for d in fleet]
        async with ingest.store.write() as tx:
            kept = await ingest.device_records.current(tx, ids)
        fresh = await stored(ingest.store, ids)
    # notice_seq is reserved in the store and never read from a kept record.
    assert {i: dataclasses.replace(r, notice_seq=0) for i, r in fresh.items()} == {
        i: dataclasses.replace(r, notice_seq=0) for i, r in kept.items()
    }
    assert 3 == ingest.device_records.loaded


async def test_a_report_another_collector_accepted_is_not_accepted_again(
    collector_site: Site,
) -> None:
    """Two collectors of one shared subscription on one database: one's stale records must
    not let a report with a sequence number the other accepted count a second time."""
    (device,) = await devices(collector_site, "C1")
    async with collector(collector_site) as first, collector(collector_site) as second:
        await decide(first, [report(device, {TAG: 1}, seq=1)])
        await decide(second, [report(device, {TAG: 2}, seq=2)])
        replay = await decide(first, [report(device, {TAG: 7}, seq=2)])
    assert [ErrorCode.REPLAYED] == refusals(replay)
    assert 2 == await collector_site.in_use(TAG)


async def test_a_device_moved_by_an_administrator_counts_in_its_new_va(
    collector_site: Site,
) -> None:
    (device,) = await devices(collector_site, "D1")
    async with collector(collector_site) as ingest:
        await decide(ingest, [report(device, {TAG: 3})])
        await collector_site.move(str(device.udi), "Engineering")
        await decide(ingest, [report(device, {TAG: 4})])
    assert (0, 4) == (
        await collector_site.in_use(TAG, "DEFAULT"),
        await collector_site.in_use(TAG, "Engineering"),
    )


async def test_a_device_deregistered_by_an_administrator_no_longer_counts(
    collector_site: Site,
) -> None:
    (device,) = await devices(collector_site, "E1")
    async with collector(collector_site) as ingest:
        await decide(ingest, [report(device, {TAG: 3})])
        await collector_site.deregister(str(device.udi))
        late = await decide(ingest, [report(device, {TAG: 4})])
    assert ([ErrorCode.NOT_REGISTERED], 0) == (refusals(late), await collector_site.in_use(TAG))


async def test_a_batch_that_fails_keeps_no_records(
    collector_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its decisions were rolled back, so what it made of its records never was."""
    (device,) = await devices(collector_site, "F1")
    async with collector(collector_site) as ingest:
        await decide(ingest, [report(device, {TAG: 1}, seq=1)])

        async def unavailable(*_: object) -> list[bytes]:
            raise CryptoUnavailable("test")

        with monkeypatch.context() as patched:
            patched.setattr(ingest.crypto, "seal", unavailable)
            with pytest.raises(CryptoUnavailable):
                await decide(ingest, [report(device, {TAG: 5}, seq=2)])
        again = await decide(ingest, [report(device, {TAG: 5}, seq=2)])
        loaded = ingest.device_records.loaded
    assert ([None], 5, 2) == (refusals(again), await collector_site.in_use(TAG), loaded)
