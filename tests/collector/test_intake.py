"""The remote-input boundary of the collector: reading what arrives, and what the service
keeps of its buffer when a new connection comes up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from smartlic.collector.service.intake import parse, worth_keeping_after_reconnect
from smartlic.mqtt.common import MqttMessage
from smartlic.protocol import (
    ErrorCode,
    KeyType,
    SigningKey,
    Topics,
    UsageReport,
    seal,
)

from sample_notices import an_authorization

TOPICS = Topics()
DEVICE = "ISR4331:FDO1"
KEY = SigningKey.from_seed(KeyType.ED25519, b"k" * 32)


def _report(device_id: str = DEVICE) -> bytes:
    report = UsageReport(device_id=device_id, seq=1, issued_at=1, period=60, counts={"a": 1})
    return seal(report, KEY)


def test_a_message_off_the_uplink_topics_is_refused_unanswered() -> None:
    """Nobody can be told: the topic names no device."""
    item = parse(TOPICS, "smartlic/v1/d/ISR4331:FDO1/down", _report())

    assert (None, ErrorCode.MALFORMED_TOPIC, False) == (
        item.device_id,
        item.refusal and item.refusal.code,
        item.refusal and item.refusal.answer,
    )
    assert item.opened is None


def test_a_collectors_message_sent_by_a_device_is_refused_and_answered() -> None:
    notice = an_authorization(DEVICE)

    item = parse(TOPICS, TOPICS.uplink(DEVICE), seal(notice, KEY))

    assert item.refusal is not None
    assert (ErrorCode.UNKNOWN_MESSAGE_TYPE, True) == (item.refusal.code, item.refusal.answer)
    assert "authorization is not something a device sends" in item.refusal.reason


def test_a_report_signed_for_another_device_is_refused_as_wrong_topic_in_reply_to_nothing() -> None:
    """Its sequence number is the other device's: an answer naming it could retire a report
    of the topic's own device that happens to carry the same number."""
    item = parse(TOPICS, TOPICS.uplink(DEVICE), _report("ISR4331:FDO2"))

    assert item.refusal is not None
    assert (ErrorCode.WRONG_TOPIC, True, None) == (
        item.refusal.code,
        item.refusal.answer,
        item.reply_to,
    )


def test_a_report_on_its_own_uplink_is_opened_for_verifying() -> None:
    item = parse(TOPICS, TOPICS.uplink(DEVICE), _report())

    assert (None, DEVICE) == (item.refusal, item.opened and item.opened.message.device_id)


@given(topic=st.text(max_size=60), payload=st.binary(max_size=300))
def test_any_topic_and_bytes_are_either_opened_or_refused(topic: str, payload: bytes) -> None:
    """The boundary never raises: everything ends as an opened message or a refusal."""
    item = parse(TOPICS, topic, payload)

    assert (item.opened is None) is (item.refusal is not None)


def _message(mid: int, generation: int) -> MqttMessage:
    return MqttMessage(
        topic="t",
        payload=b"x",
        qos=1,
        mid=mid,
        retain=False,
        duplicate=False,
        generation=generation,
    )


def test_with_the_session_kept_the_earlier_connections_messages_are_left_to_redelivery() -> None:
    waiting = [_message(1, 1), _message(2, 2), _message(3, 1), _message(4, 2)]

    kept = worth_keeping_after_reconnect(waiting, generation=2, session_present=True)

    assert [2, 4] == [m.mid for m in kept]


def test_without_the_session_every_waiting_message_is_kept() -> None:
    """The broker has nothing to deliver again: the buffered copy is the only one."""
    waiting = [_message(1, 1), _message(2, 2)]

    kept = worth_keeping_after_reconnect(waiting, generation=2, session_present=False)

    assert [1, 2] == [m.mid for m in kept]
