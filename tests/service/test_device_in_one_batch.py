"""One device's messages in a batch, decided as if they had come one by one: a report followed
by its device's deregistration is answered for the counts it set (against the pools as the
batch leaves them, as every answer of a batch is), copies of the two redelivered later get the
same answers again, and what a batch refused is logged once, when it commits."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from smartlic.collector.receipts import add_dead_letters
from smartlic.collector.service import ingest as ingest_module
from smartlic.collector.store import StoreError
from smartlic.protocol import Authorization, DeregistrationResult, ErrorCode, open_message
from structlog.testing import capture_logs

from .ingest_support import collector, decide, devices, refusals, report, uplink
from .support import now

if TYPE_CHECKING:
    from .support import Site

TAG = "network-advantage"


async def test_a_report_followed_by_its_devices_deregistration_is_answered_for_its_counts(
    collector_site: Site,
) -> None:
    """Not with the deregistered device's empty counts: that would be an authorization for
    nothing, which is not what the report asked about."""
    await collector_site.deposit("PO-1", quantity=10)
    (device,) = await devices(collector_site, "B1")
    leave, _ = device.deregistration_bytes()
    async with collector(collector_site) as ingest:
        prepared = await decide(ingest, [report(device, {TAG: 2}), uplink(device, leave)])
    answer, result = (open_message(item.answer or b"").message for item in prepared.items)
    assert [None, None] == refusals(prepared)
    assert isinstance(result, DeregistrationResult)
    assert isinstance(answer, Authorization)
    assert [TAG] == sorted(answer.tags)
    assert 0 == await collector_site.in_use()


async def test_a_report_and_deregistration_redelivered_together_get_their_answers_again(
    collector_site: Site,
) -> None:
    """The broker redelivers a committed batch whose acknowledgements were lost (SPEC §5):
    the copies got NOT_REGISTERED errors, dead letters and new notice numbers."""
    await collector_site.deposit("PO-1", quantity=10)
    (device,) = await devices(collector_site, "B2")
    leave, _ = device.deregistration_bytes()
    batch = [report(device, {TAG: 2}), uplink(device, leave)]
    async with collector(collector_site) as ingest:
        first = await decide(ingest, batch)
        again = await decide(ingest, batch)

    result = open_message(again.items[1].answer or b"").message
    assert [None, None] == refusals(again)
    assert first.items[0].answer == again.items[0].answer
    assert isinstance(result, DeregistrationResult)


async def test_a_deregistration_sent_again_after_it_went_through_gets_its_result_again(
    collector_site: Site,
) -> None:
    """Its answer was lost: the retry is answered as the first was, as a registration's is."""
    (device,) = await devices(collector_site, "B3")
    leave, _ = device.deregistration_bytes()
    async with collector(collector_site) as ingest:
        await decide(ingest, [uplink(device, leave)])
        again = await decide(ingest, [uplink(device, leave)])

    assert [None] == refusals(again)
    assert isinstance(open_message(again.items[0].answer or b"").message, DeregistrationResult)


async def test_a_report_of_a_deregistered_device_that_is_no_copy_is_refused(
    collector_site: Site,
) -> None:
    (device,) = await devices(collector_site, "B4")
    leave, _ = device.deregistration_bytes()
    async with collector(collector_site) as ingest:
        await decide(ingest, [uplink(device, leave)])
        late = await decide(ingest, [report(device, {TAG: 1})])

    assert [ErrorCode.NOT_REGISTERED] == refusals(late)


async def test_a_refusal_in_a_batch_that_failed_to_commit_is_logged_once_it_commits(
    collector_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Logged while deciding, each retry through a store outage logged it again."""
    (device,) = await devices(collector_site, "B5")
    stale = report(device, {TAG: 1}, issued_at=now() - 2 * 3600)
    failures = [StoreError("database is locked")]

    async def failing_once(*args: Any, **kwargs: Any) -> None:
        if failures:
            raise failures.pop()
        await add_dead_letters(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "add_dead_letters", failing_once)
    with capture_logs() as logs:
        async with collector(collector_site) as ingest:
            with pytest.raises(StoreError):
                await ingest.process([stale], now())
            await ingest.process([stale], now())

    assert ["CLOCK_SKEW"] == [e["code"] for e in logs if e["event"] == "collector.refused"]
