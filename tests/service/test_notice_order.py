"""A device's notices leave the collector in the order of their numbers.

A device applies a notice only when its ``notice_seq`` is above the last one it applied (SPEC
§4, ``smartlic.agent.notices``): one numbered lower but sent later is taken for stale, and
what it says is lost. A batch answers in arrival order and pushes after that, so that is the
order its notices must be numbered in.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smartlic.protocol import (
    Authorization,
    CollectorMessage,
    DeregistrationResult,
    ErrorCode,
    ErrorNotice,
    OutOfComplianceNotice,
    open_message,
)

from .ingest_support import collector, devices, refusals, report, uplink
from .support import Device, Site, now

if TYPE_CHECKING:
    from collections.abc import Sequence

    from smartlic.collector.service.ingest import Ingest
    from smartlic.collector.service.outbox import Outgoing
    from smartlic.mqtt.common import MqttMessage

TAG = "network-advantage"
LONG_AGO = 86_400


def notice(payload: bytes) -> CollectorMessage:
    message = open_message(payload).message
    assert isinstance(message, CollectorMessage)
    return message


def notices_to(device: Device, sent: Sequence[Outgoing]) -> list[tuple[type, int]]:
    """What ``device`` was sent, in sending order: each notice's type and ``notice_seq``."""
    told = [notice(o.payload) for o in sent if o.device_id == device.device_id]
    return [(type(m), m.notice_seq) for m in told]


async def one_batch(ingest: Ingest, messages: Sequence[MqttMessage]) -> list[Outgoing]:
    return await ingest.commit(await ingest.prepare(messages), now())


async def test_a_refusal_received_before_an_accepted_report_is_numbered_before_its_answer(
    collector_site: Site,
) -> None:
    await collector_site.deposit("PO-1", quantity=10)
    (device,) = await devices(collector_site, "N1")
    async with collector(collector_site) as ingest:
        sent = await one_batch(
            ingest,
            [
                report(device, {TAG: 1}, issued_at=now() - LONG_AGO),
                report(device, {TAG: 2}),
            ],
        )
    assert [(ErrorNotice, 1), (Authorization, 2)] == notices_to(device, sent)


async def test_a_push_is_numbered_after_the_refusal_sent_before_it(
    collector_site: Site,
) -> None:
    """The device's skewed report is refused while another device's report flips its pool."""
    await collector_site.deposit("PO-1", quantity=2)
    device, other = await devices(collector_site, "N2", "N3")
    async with collector(collector_site) as ingest:
        await one_batch(ingest, [report(device, {TAG: 1})])
        sent = await one_batch(
            ingest,
            [report(device, {TAG: 1}, issued_at=now() - LONG_AGO), report(other, {TAG: 2})],
        )
    assert [(ErrorNotice, 2), (OutOfComplianceNotice, 3)] == notices_to(device, sent)


async def test_a_deregistration_result_is_numbered_before_the_refusals_after_it(
    collector_site: Site,
) -> None:
    (device,) = await devices(collector_site, "N4")
    payload, _ = device.deregistration_bytes()
    async with collector(collector_site) as ingest:
        prepared = await ingest.prepare([uplink(device, payload), report(device, {TAG: 1})])
        sent = await ingest.commit(prepared, now())
    assert [None, ErrorCode.NOT_REGISTERED] == refusals(prepared)
    assert [(DeregistrationResult, 1), (ErrorNotice, 2)] == notices_to(device, sent)


DEVICES = 3
operations = st.tuples(
    st.integers(0, DEVICES - 1),
    st.sampled_from(["report", "skewed", "replayed", "resent", "garbage", "deregister"]),
    st.integers(0, 3),
)
"""(which device, what it sends, its count): enough kinds of answer to interleave."""


def _message(device: Device, kind: str, count: int, sent: list[bytes]) -> MqttMessage:
    if kind == "deregister":
        payload, _ = device.deregistration_bytes()
        return uplink(device, payload)
    if kind == "garbage":
        return uplink(device, b"\xff not CBOR")
    if kind == "resent" and sent:
        return uplink(device, sent[-1])
    if kind == "replayed" and device.seq:
        payload = device.report_bytes({TAG: count + 1}, seq=device.seq)
    elif kind == "skewed":
        payload = device.report_bytes({TAG: count}, issued_at=now() - LONG_AGO)
    else:
        payload = device.report_bytes({TAG: count})
    sent.append(payload)
    return uplink(device, payload)


async def _sent_in_order(
    batches: Sequence[Sequence[tuple[int, str, int]]],
) -> tuple[list[Device], list[Outgoing]]:
    with tempfile.TemporaryDirectory() as folder:
        site = await Site.create(Path(folder))
        await site.account("ACME")
        await site.deposit("PO-1", quantity=3)
        fleet = await devices(site, *(f"P{n}" for n in range(DEVICES)))
        reports: dict[int, list[bytes]] = defaultdict(list)
        sent: list[Outgoing] = []
        async with collector(site) as ingest:
            for batch in batches:
                messages = [_message(fleet[n], kind, c, reports[n]) for n, kind, c in batch]
                sent += await one_batch(ingest, messages)
        return fleet, sent


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(operations, min_size=1, max_size=8), min_size=1, max_size=4))
def test_each_device_is_sent_rising_notice_numbers_whatever_a_batch_holds(
    batches: list[list[tuple[int, str, int]]],
) -> None:
    """Except the stored answer sent again to a duplicate: the very bytes sent before."""
    fleet, sent = asyncio.run(_sent_in_order(batches))
    for device in fleet:
        seen: set[bytes] = set()
        last = 0
        for outgoing in sent:
            if outgoing.device_id != device.device_id or outgoing.payload in seen:
                continue
            seen.add(outgoing.payload)
            notice_seq = notice(outgoing.payload).notice_seq
            assert notice_seq > last, (device.device_id, notice_seq, last)
            last = notice_seq
