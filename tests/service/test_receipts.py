"""Answers to accepted reports are kept for duplicates, for ``receipt_retention_days`` only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from smartlic.collector.receipts import prune_accepted
from smartlic.collector.store import open_store
from smartlic.protocol import Authorization, ErrorCode, ErrorNotice
from structlog.testing import capture_logs

from .conftest import running_service
from .support import DAY, now

if TYPE_CHECKING:
    from smartlic.mqtt.broker import MosquittoBroker

    from .support import Device, MakeDevice, Site

pytestmark = [pytest.mark.timeout(60)]
TAG = "network-advantage"


async def _accepted_ago(site: Site, days: float) -> None:
    """Every stored answer, as if its report had been accepted ``days`` ago."""
    store = await open_store(site.db)
    try:
        async with store.write() as tx:
            await tx.execute("UPDATE accepted_reports SET accepted_at = ?", (now() - days * DAY,))
    finally:
        await store.close()


async def _answered_by_a_service_since_stopped(
    site: Site, mosquitto: MosquittoBroker, make_device: MakeDevice
) -> tuple[Device, bytes, Any]:
    """A registered device, its report of 2 licenses of 5, and the authorization it got."""
    await site.deposit("PO-1", quantity=5)
    device = await make_device()
    report = device.report_bytes({TAG: 2}, seq=1)
    async with running_service(site, mosquitto):
        await device.register(await site.token())
        await device.send(report)
        answer = await device.expect(lambda m: isinstance(m, Authorization))
    return device, report, answer


async def test_pruning_forgets_only_answers_accepted_before_the_cutoff(
    collector_site: Site, mosquitto: MosquittoBroker, make_device: MakeDevice
) -> None:
    await collector_site.deposit("PO-1", quantity=5)
    devices = [await make_device(), await make_device()]
    async with running_service(collector_site, mosquitto):
        for device in devices:
            await device.register(await collector_site.token())
            await device.report({TAG: 1})
    store = await open_store(collector_site.db)
    try:
        async with store.write() as tx:
            await tx.execute(
                "UPDATE accepted_reports SET accepted_at = ? WHERE device_id = "
                "(SELECT MIN(device_id) FROM accepted_reports)",
                (now() - 10 * DAY,),
            )
            pruned = await prune_accepted(tx, before=now() - 5 * DAY)
    finally:
        await store.close()

    assert 1 == pruned
    assert [{"n": 1}] == await collector_site.query("SELECT COUNT(*) AS n FROM accepted_reports")


async def test_the_service_prunes_old_answers_at_start_up_and_a_late_duplicate_is_a_replay(
    collector_site: Site, mosquitto: MosquittoBroker, make_device: MakeDevice
) -> None:
    """A duplicate of a report whose answer was forgotten is refused, not counted again."""
    device, report, _ = await _answered_by_a_service_since_stopped(
        collector_site, mosquitto, make_device
    )
    await _accepted_ago(collector_site, 31)

    with capture_logs() as logs:
        async with running_service(collector_site, mosquitto, receipt_retention_days=30):
            await device.send(report)
            answer = await device.expect(lambda m: isinstance(m, ErrorNotice))

    assert ErrorCode.REPLAYED == answer.code
    assert [1] == [e["count"] for e in logs if e["event"] == "collector.receipts_pruned"]
    assert [{"n": 0}] == await collector_site.query("SELECT COUNT(*) AS n FROM accepted_reports")
    assert 2 == await collector_site.in_use()


async def test_answers_within_the_retention_survive_a_restart(
    collector_site: Site, mosquitto: MosquittoBroker, make_device: MakeDevice
) -> None:
    device, report, first = await _answered_by_a_service_since_stopped(
        collector_site, mosquitto, make_device
    )
    await _accepted_ago(collector_site, 29)

    async with running_service(collector_site, mosquitto, receipt_retention_days=30):
        await device.send(report)
        again = await device.expect(lambda m: isinstance(m, Authorization))

    assert first == again
