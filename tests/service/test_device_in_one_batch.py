"""One device's report and deregistration in one batch: the report is answered for the
counts it set, as if the two had come in separate batches."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartlic.protocol import Authorization, DeregistrationResult, open_message

from .ingest_support import collector, decide, devices, refusals, report, uplink

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
