"""Usage reports through the running service: decisions, duplicates, replays, bad input."""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING

import pytest
from smartlic.protocol import (
    Authorization,
    ComplianceStatus,
    ErrorCode,
    ErrorNotice,
    KeyType,
    OutOfComplianceNotice,
    SigningKey,
    UsageReport,
    seal,
)
from structlog.testing import capture_logs

from .support import TOPICS, Device, Site, now

if TYPE_CHECKING:
    from smartlic.collector.service.service import CollectorService

    from .support import MakeDevice

pytestmark = [pytest.mark.usefixtures("service"), pytest.mark.timeout(60)]
TAG = "network-advantage"


async def _registered(site: Site, make_device: MakeDevice, **kwargs: str) -> Device:
    device = await make_device(**kwargs)
    await device.register(await site.token())
    return device


async def test_a_report_within_the_licenses_is_authorized(
    collector_site: Site, make_device: MakeDevice
) -> None:
    await collector_site.deposit("PO-1", quantity=5)
    device = await _registered(collector_site, make_device)

    answer = await device.report({TAG: 3})

    assert isinstance(answer, Authorization)
    assert 1 == answer.in_reply_to
    assert (3, 5, 0) == (
        answer.tags[TAG].in_use,
        answer.tags[TAG].entitled,
        answer.tags[TAG].shortfall,
    )
    assert answer.valid_until - answer.issued_at == 90 * 86_400
    assert answer.next_report_at - answer.issued_at == 86_400
    assert 3 == await collector_site.in_use()


async def test_a_report_beyond_the_licenses_gets_an_out_of_compliance_notice(
    collector_site: Site, make_device: MakeDevice
) -> None:
    await collector_site.deposit("PO-1", quantity=2)
    device = await _registered(collector_site, make_device)

    answer = await device.report({TAG: 5})

    assert isinstance(answer, OutOfComplianceNotice)
    assert (5, 2, 3) == (
        answer.tags[TAG].in_use,
        answer.tags[TAG].entitled,
        answer.tags[TAG].shortfall,
    )
    assert ComplianceStatus.OUT_OF_COMPLIANCE == answer.tags[TAG].status


async def test_a_tag_with_no_licenses_at_all_is_short_by_its_whole_use(
    collector_site: Site, make_device: MakeDevice
) -> None:
    device = await _registered(collector_site, make_device)

    answer = await device.report({"dna-essentials": 2})

    assert isinstance(answer, OutOfComplianceNotice)
    assert 2 == answer.tags["dna-essentials"].shortfall


async def test_an_exact_duplicate_gets_the_same_answer_and_changes_nothing(
    collector_site: Site, make_device: MakeDevice
) -> None:
    """A redelivered report (same bytes) is answered with the stored answer, byte for byte."""
    await collector_site.deposit("PO-1", quantity=5)
    device = await _registered(collector_site, make_device)
    report = device.report_bytes({TAG: 2})
    await device.send(report)
    await device.expect(lambda m: getattr(m, "in_reply_to", None) == 1)
    first = device.raw[-1].payload

    await device.send(report)
    await device.expect(lambda m: getattr(m, "in_reply_to", None) == 1)

    assert first == device.raw[-1].payload
    assert 2 == await collector_site.in_use()
    assert [{"n": 1}] == await collector_site.query("SELECT COUNT(*) AS n FROM accepted_reports")


async def test_a_different_report_with_a_used_sequence_number_is_refused_as_a_replay(
    collector_site: Site, make_device: MakeDevice
) -> None:
    await collector_site.deposit("PO-1", quantity=5)
    device = await _registered(collector_site, make_device)
    await device.report({TAG: 1})
    await device.report({TAG: 2})

    answer = await device.report({TAG: 4}, seq=1)

    assert isinstance(answer, ErrorNotice)
    assert ErrorCode.REPLAYED == answer.code
    assert 2 == await collector_site.in_use()


async def test_a_report_from_too_far_in_the_past_is_refused_for_clock_skew(
    collector_site: Site, make_device: MakeDevice
) -> None:
    device = await _registered(collector_site, make_device)

    answer = await device.report({TAG: 1}, issued_at=now() - 3600)

    assert isinstance(answer, ErrorNotice)
    assert ErrorCode.CLOCK_SKEW == answer.code
    assert 0 == await collector_site.in_use()
    assert [{"last_seq": 0}] == await collector_site.query("SELECT last_seq FROM devices")


async def test_a_report_signed_with_another_key_is_refused_and_kept(
    collector_site: Site, make_device: MakeDevice
) -> None:
    device = await _registered(collector_site, make_device)
    forged = UsageReport(
        device_id=device.device_id, seq=1, issued_at=now(), period=0, counts={TAG: 9}
    )
    forger = SigningKey.from_seed(KeyType.ED25519, secrets.token_bytes(32))

    await device.send(seal(forged, forger))
    answer = await device.expect()

    assert isinstance(answer, ErrorNotice)
    assert ErrorCode.BAD_SIGNATURE == answer.code
    assert 0 == await collector_site.in_use()
    assert [ErrorCode.BAD_SIGNATURE] == [d["code"] for d in await collector_site.dead_letters()]


async def test_a_report_on_another_devices_topic_is_refused_as_wrong_topic(
    collector_site: Site, make_device: MakeDevice
) -> None:
    """Without broker ACLs a device could publish on another's uplink; the collector still
    refuses a message whose signer is not the topic's device."""
    mine = await _registered(collector_site, make_device)
    theirs = await _registered(collector_site, make_device)

    await mine.send(mine.report_bytes({TAG: 7}), topic=TOPICS.uplink(theirs.device_id))
    await asyncio.sleep(0.5)

    assert 0 == await collector_site.in_use()
    letters = await collector_site.dead_letters()
    assert [ErrorCode.WRONG_TOPIC] == [d["code"] for d in letters]


async def test_garbage_is_kept_as_a_dead_letter_and_the_service_goes_on(
    collector_site: Site, make_device: MakeDevice
) -> None:
    """Random bytes, an empty message and an oversize one never stop the service."""
    await collector_site.deposit("PO-1", quantity=5)
    device = await _registered(collector_site, make_device)

    for payload in (b"\xff\x00garbage", b"", secrets.token_bytes(10_000)):
        await device.send(payload)
    answer = await device.report({TAG: 1})

    assert isinstance(answer, Authorization)
    codes = [d["code"] for d in await collector_site.dead_letters()]
    assert [ErrorCode.MALFORMED_CBOR, ErrorCode.MALFORMED_CBOR, ErrorCode.OVERSIZE] == codes


async def test_a_report_from_an_unknown_device_is_kept_but_not_answered(
    collector_site: Site, make_device: MakeDevice
) -> None:
    """Nobody vouches for the sender, so the collector signs nothing for it."""
    stranger = await make_device()

    await stranger.send(stranger.report_bytes({TAG: 1}))

    assert [] == await stranger.silence()
    assert [ErrorCode.UNKNOWN_DEVICE] == [d["code"] for d in await collector_site.dead_letters()]


async def test_a_device_that_deregisters_itself_stops_counting(
    collector_site: Site, make_device: MakeDevice
) -> None:
    await collector_site.deposit("PO-1", quantity=5)
    device = await _registered(collector_site, make_device)
    await device.report({TAG: 3})

    result = await device.deregister()

    assert "DeregistrationResult" == type(result).__name__
    assert 0 == await collector_site.in_use()
    answer = await device.report({TAG: 3})
    assert isinstance(answer, ErrorNotice)
    assert ErrorCode.NOT_REGISTERED == answer.code


async def test_refusals_are_logged_with_the_device_and_reason(
    collector_site: Site, make_device: MakeDevice, service: CollectorService
) -> None:
    device = await _registered(collector_site, make_device)
    with capture_logs() as logs:
        await device.report({TAG: 1}, issued_at=now() - 3600)

    refusals = [e for e in logs if e["event"] == "collector.refused"]
    assert [device.device_id] == [e["device_id"] for e in refusals]
    assert "CLOCK_SKEW" == refusals[0]["code"]
    assert service.processed >= 2
