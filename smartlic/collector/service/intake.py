"""The first look at a received message: which device's topic, what message, or why not.

Pure: takes the topic and bytes, returns a :class:`Parsed`. Remote input only ever becomes a
:class:`Refusal` here (after wsproto: bad input is an event, never a crash), so one hostile
message cannot stop the batch it arrived in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from smartlic.collector.service.decisions import Refusal
from smartlic.protocol import (
    DeregistrationRequest,
    ErrorCode,
    Opened,
    ProtocolError,
    RegistrationRequest,
    UsageReport,
    open_message,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from smartlic.mqtt.common import MqttMessage
    from smartlic.protocol import Topics, VerifyingKey

DEAD_LETTER_PAYLOAD_LIMIT: Final = 65_536
"""Raw bytes kept per dead letter; a larger message is kept cut, its size in the reason."""


@dataclass(slots=True, kw_only=True)
class Parsed:
    """One received message on its way through a batch."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    device_id: str | None
    """The device whose uplink topic it came on, when the topic is well formed."""
    opened: Opened | None = None
    verified_key: VerifyingKey | None = None
    """The key the signature was checked with (the device's, or the registering key)."""
    refusal: Refusal | None = None
    reply_to: int | bytes | None = None
    """What a refusal answers: the report's seq or the request's id, when it was readable."""
    registering: bool = False
    """A refused registration request: its answer carries the collector's key, since the
    device has none pinned yet, and it is answered whether or not the device is known."""
    answer: bytes | None = field(default=None, repr=False)

    @property
    def stored_payload(self) -> bytes:
        return self.payload[:DEAD_LETTER_PAYLOAD_LIMIT]

    def refuse(self, code: ErrorCode, reason: str, *, answer: bool) -> None:
        """Stop processing this message: it becomes a dead letter, answered when ``answer``."""
        if self.opened is not None:
            message = self.opened.message
            if isinstance(message, UsageReport):
                self.reply_to = message.seq
            elif isinstance(message, RegistrationRequest | DeregistrationRequest):
                self.reply_to = message.request_id
                self.registering = isinstance(message, RegistrationRequest)
        self.opened = None
        if len(self.payload) > DEAD_LETTER_PAYLOAD_LIMIT:
            reason = f"{reason} (message of {len(self.payload)} bytes, first 64 KiB kept)"
        self.refusal = Refusal(code=code, reason=reason, answer=answer)


def uplink_device(topics: Topics, topic: str) -> str | None:
    """The device whose uplink ``topic`` is, or None when it is not a well-formed one."""
    try:
        return topics.device_of_uplink(topic)
    except ProtocolError:
        return None


def parse(topics: Topics, topic: str, payload: bytes, *, mid: int = 0, qos: int = 1) -> Parsed:
    """Read a message received on an uplink topic. Never raises for any input."""
    device_id = uplink_device(topics, topic)
    item = Parsed(topic=topic, payload=payload, mid=mid, qos=qos, device_id=device_id)
    if device_id is None:
        item.refuse(ErrorCode.MALFORMED_TOPIC, f"not an uplink topic: {topic!r}", answer=False)
        return item
    try:
        opened = open_message(payload)
    except ProtocolError as exc:
        # The topic names the sender (broker ACLs), so it can be told; whether it will be
        # depends on whether the device is known, decided with the store at hand.
        item.refuse(exc.code, exc.message, answer=True)
        return item
    message = opened.message
    if not isinstance(message, RegistrationRequest | UsageReport | DeregistrationRequest):
        item.refuse(
            ErrorCode.UNKNOWN_MESSAGE_TYPE,
            f"a {message.message_type.name.lower()} is not something a device sends",
            answer=True,
        )
        return item
    if message.device_id != device_id:
        item.refuse(
            ErrorCode.WRONG_TOPIC,
            f"message for device {message.device_id} arrived on the topic of {device_id}",
            answer=True,
        )
        return item
    item.opened = opened
    return item


def worth_keeping_after_reconnect(
    waiting: Iterable[MqttMessage], *, generation: int, session_present: bool
) -> list[MqttMessage]:
    """Which received, not yet handled messages to keep when a new connection is up.

    One received on an earlier connection can no longer be acknowledged, and when the broker
    kept our session it delivers that message again on this connection (MQTT 3.1.1 §4.4):
    handling both copies would only answer one twice, and a collector whose store is down
    long enough to reconnect every keep-alive would buffer a fresh copy of everything each
    time. Without the session the earlier copy is the only one, so it stays.
    """
    if not session_present:
        return list(waiting)
    return [message for message in waiting if message.generation == generation]
