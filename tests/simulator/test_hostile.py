"""Hostile message builders, and the ledger that judges what became of them."""

from __future__ import annotations

import random

import pytest
from smartlic.agent.notices import Ignored, judge
from smartlic.collector.service.decisions import classify_sequence, report_digest
from smartlic.collector.service.intake import parse
from smartlic.protocol import (
    Authorization,
    ErrorCode,
    ErrorNotice,
    KeyType,
    ProtocolError,
    SigningKey,
    Topics,
    UsageReport,
    open_message,
    seal,
)
from smartlic.simulator import hostile
from smartlic.simulator.hostile import (
    HOSTILE_SEQ_BASE,
    DeadLetterRow,
    HostileKind,
    HostileLedger,
)

TOPICS = Topics()
DEVICE = "C9300-SIM:attacker"
VICTIM = "C9300-SIM:victim"
NOW = 1_800_000_000
COUNTS = {"network-advantage": 2}


def key(n: int) -> SigningKey:
    return SigningKey.from_seed(KeyType.ED25519, bytes([n]) * 32)


def entropy(n: int) -> bytes:
    return random.Random(7).randbytes(n)  # noqa: S311 -- garbage bytes for a test


def test_a_forged_report_does_not_verify_with_the_devices_key() -> None:
    message = hostile.forged_report(
        device_id=DEVICE,
        seq=HOSTILE_SEQ_BASE,
        counts=COUNTS,
        now=NOW,
        topics=TOPICS,
        entropy=entropy,
    )
    with pytest.raises(ProtocolError) as caught:
        open_message(message.payload).verify(key(1).public)
    assert caught.value.code in message.expected


def test_a_tampered_report_carries_the_devices_signature_over_other_bytes() -> None:
    message = hostile.tampered_report(
        key=key(1), device_id=DEVICE, seq=HOSTILE_SEQ_BASE, counts=COUNTS, now=NOW, topics=TOPICS
    )
    opened = open_message(message.payload)
    with pytest.raises(ProtocolError) as caught:
        opened.verify(key(1).public)
    assert (ErrorCode.BAD_SIGNATURE, {"network-advantage": 1002}) == (
        caught.value.code,
        dict(opened.message.counts),  # type: ignore[union-attr]  # a UsageReport here
    )


def test_a_replayed_report_is_validly_signed_but_not_the_accepted_one() -> None:
    """Its sequence number was accepted with other bytes: the collector's rule says REPLAYED."""
    accepted = seal(
        UsageReport(device_id=DEVICE, seq=5, issued_at=NOW, period=0, counts=COUNTS), key(1)
    )
    message = hostile.replayed_report(
        key=key(1), device_id=DEVICE, accepted_seq=5, counts=COUNTS, now=NOW, topics=TOPICS
    )
    opened = open_message(message.payload)
    opened.verify(key(1).public)
    verdict = classify_sequence(
        seq=5,
        last_accepted=5,
        accepted_digest=report_digest(open_message(accepted).envelope.payload),
        digest=report_digest(opened.envelope.payload),
    )
    assert "replayed" == verdict.value


def test_a_skewed_report_is_dated_the_skew_in_the_past() -> None:
    message = hostile.skewed_report(
        key=key(1),
        device_id=DEVICE,
        seq=HOSTILE_SEQ_BASE,
        counts=COUNTS,
        now=NOW,
        skew=86_400,
        topics=TOPICS,
    )
    assert NOW - 86_400 == open_message(message.payload).message.issued_at


@pytest.mark.parametrize(
    ("build", "code"),
    [
        (
            lambda: hostile.oversize_report(
                key=key(1),
                device_id=DEVICE,
                seq=HOSTILE_SEQ_BASE,
                counts=COUNTS,
                now=NOW,
                topics=TOPICS,
            ),
            ErrorCode.OVERSIZE,
        ),
        (
            lambda: hostile.wrong_topic_report(
                key=key(1),
                device_id=DEVICE,
                victim=VICTIM,
                seq=HOSTILE_SEQ_BASE,
                counts=COUNTS,
                now=NOW,
                topics=TOPICS,
            ),
            ErrorCode.WRONG_TOPIC,
        ),
    ],
)
def test_the_collectors_first_look_refuses_it_with_the_expected_code(
    build: object, code: ErrorCode
) -> None:
    message = build()  # type: ignore[operator]  # a builder
    item = parse(TOPICS, message.topic, message.payload)
    assert item.refusal is not None
    assert (code, True) == (item.refusal.code, item.refusal.code in message.expected)


def test_garbage_is_refused_by_the_collectors_first_look() -> None:
    message = hostile.garbage(device_id=DEVICE, topics=TOPICS, entropy=entropy)
    item = parse(TOPICS, message.topic, message.payload)
    assert item.refusal is not None
    assert item.refusal.code in message.expected


def test_a_forged_notice_is_ignored_by_the_victims_agent_core() -> None:
    collector = key(9)
    message = hostile.forged_notice(
        key=key(1),
        device_id=DEVICE,
        victim=VICTIM,
        notice_seq=HOSTILE_SEQ_BASE,
        now=NOW,
        topics=TOPICS,
    )
    verdict = judge(
        message.topic,
        message.payload,
        downlink=TOPICS.downlink(VICTIM),
        device_id=VICTIM,
        collector_key=collector.public,
        pending=None,
        outbox=(),
        last_notice_seq=3,
    )
    assert isinstance(verdict, Ignored)
    assert "signature refused" in verdict.reason


def _forged() -> hostile.HostileMessage:
    return hostile.forged_report(
        device_id=DEVICE,
        seq=HOSTILE_SEQ_BASE,
        counts=COUNTS,
        now=NOW,
        topics=TOPICS,
        entropy=entropy,
    )


def test_a_message_kept_as_a_dead_letter_with_an_expected_code_was_refused() -> None:
    ledger = HostileLedger()
    message = _forged()
    ledger.record(message)
    letter = DeadLetterRow(topic=message.topic, payload=message.payload, code=114)
    assert {HostileKind.FORGED: (1, 0)} == ledger.verdicts([letter], notice_seqs={})


def test_a_message_the_collector_did_not_keep_counts_as_accepted() -> None:
    ledger = HostileLedger()
    ledger.record(_forged())
    assert {HostileKind.FORGED: (1, 1)} == ledger.verdicts([], notice_seqs={})


def test_a_dead_letter_with_an_unexpected_code_does_not_count_as_refused() -> None:
    ledger = HostileLedger()
    message = _forged()
    ledger.record(message)
    letter = DeadLetterRow(
        topic=message.topic, payload=message.payload, code=int(ErrorCode.REPLAYED)
    )
    assert {HostileKind.FORGED: (1, 1)} == ledger.verdicts([letter], notice_seqs={})


def test_a_hostile_report_answered_with_an_authorization_counts_as_accepted() -> None:
    ledger = HostileLedger()
    message = _forged()
    ledger.record(message)
    answer = Authorization(
        device_id=DEVICE,
        notice_seq=4,
        issued_at=NOW,
        in_reply_to=HOSTILE_SEQ_BASE,
        virtual_account="DEFAULT",
        valid_until=NOW + 10,
        next_report_at=NOW + 10,
        nonce=b"n" * 16,
        tags={},
    )
    ledger.observe(DEVICE, seal(answer, key(9)))
    letter = DeadLetterRow(topic=message.topic, payload=message.payload, code=114)
    assert {HostileKind.FORGED: (1, 1)} == ledger.verdicts([letter], notice_seqs={})


def test_an_error_notice_answering_a_hostile_report_is_remembered_as_its_refusal() -> None:
    ledger = HostileLedger()
    ledger.record(_forged())
    refusal = ErrorNotice(
        device_id=DEVICE,
        notice_seq=4,
        issued_at=NOW,
        in_reply_to=HOSTILE_SEQ_BASE,
        code=ErrorCode.BAD_SIGNATURE,
        message="signature does not verify",
    )
    ledger.observe(DEVICE, seal(refusal, key(9)))
    assert {(DEVICE, HOSTILE_SEQ_BASE): ErrorCode.BAD_SIGNATURE} == ledger.refusal_codes


def test_a_forged_notice_counts_as_accepted_when_the_victim_reached_its_notice_seq() -> None:
    ledger = HostileLedger()
    ledger.record(
        hostile.forged_notice(
            key=key(1),
            device_id=DEVICE,
            victim=VICTIM,
            notice_seq=HOSTILE_SEQ_BASE,
            now=NOW,
            topics=TOPICS,
        )
    )
    refused = ledger.verdicts([], notice_seqs={VICTIM: 12})
    accepted = ledger.verdicts([], notice_seqs={VICTIM: HOSTILE_SEQ_BASE})
    assert ((1, 0), (1, 1)) == (
        refused[HostileKind.FORGED_NOTICE],
        accepted[HostileKind.FORGED_NOTICE],
    )
