"""A scripted collector for the agent's tests, made from the protocol package alone.

It is a test double, not the collector: it keeps a few dicts instead of a store and answers
at once. :class:`CollectorScript` is pure (bytes in, bytes out, ``now`` passed in) so the unit
tests drive cores with it directly; :class:`MqttCollector` puts it on a real broker for the
integration tests and the footprint benchmark (it subscribes to the uplink filter with a
persistent session, like the real collector's shared subscription would).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from smartlic.mqtt.url import parse_broker_url
from smartlic.protocol import (
    Authorization,
    DeregistrationRequest,
    DeregistrationResult,
    ErrorCode,
    ErrorNotice,
    KeyType,
    OutOfComplianceNotice,
    ProtocolError,
    RegistrationRequest,
    RegistrationResult,
    RegistrationToken,
    SigningKey,
    TagCompliance,
    Topics,
    UsageReport,
    VerifyingKey,
    open_message,
    seal,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from smartlic.protocol import CollectorMessage

COLLECTOR_SEED = bytes(range(32))


def collector_key(seed: bytes = COLLECTOR_SEED) -> SigningKey:
    return SigningKey.from_seed(KeyType.ED25519, seed)


@dataclass
class CollectorScript:
    """Answers device messages the way docs/architecture.md says the collector does."""

    key: SigningKey = field(default_factory=collector_key)
    topics: Topics = field(default_factory=Topics)
    smart_account: str = "Acme"
    virtual_account: str = "Default"
    report_interval: int = 86_400
    validity: int = 90 * 86_400
    entitled: dict[str, int] = field(default_factory=dict)
    refuse_registration: ErrorCode | None = None
    refuse_reports: ErrorCode | None = None
    """Set: every report is refused with this code, and nothing of it accepted."""
    answer_reports: bool = True
    """False: reports are dropped unprocessed, as if the collector were down."""
    rng: random.Random = field(default_factory=lambda: random.Random(5))  # noqa: S311 -- nonces of a test double
    devices: dict[str, VerifyingKey] = field(default_factory=dict)
    notice_seq: dict[str, int] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)
    stored_answers: dict[tuple[str, int], tuple[bytes, bytes]] = field(default_factory=dict)
    latest_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    reports: list[UsageReport] = field(default_factory=list)
    refused: list[tuple[str, ErrorCode]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def token(self, *, fingerprint: bytes | None = None) -> str:
        return str(
            RegistrationToken(
                token_id=bytes(range(8)),
                secret=bytes(range(16)),
                collector_fingerprint=fingerprint or self.key.public.fingerprint,
            )
        )

    def next_notice_seq(self, device_id: str) -> int:
        self.notice_seq[device_id] = self.notice_seq.get(device_id, 0) + 1
        return self.notice_seq[device_id]

    def handle(self, topic: str, payload: bytes, now: float) -> list[tuple[str, bytes]]:
        """The (topic, bytes) answers to one uplink message."""
        with self.lock:
            return self._handle(topic, payload, int(now))

    def _handle(  # noqa: PLR0911 -- one return per kind of message
        self, topic: str, payload: bytes, now: int
    ) -> list[tuple[str, bytes]]:
        try:
            device_id = self.topics.device_of_uplink(topic)
            opened = open_message(payload)
        except ProtocolError:
            return []
        message = opened.message
        down = self.topics.downlink(device_id)
        if isinstance(message, RegistrationRequest):
            try:
                opened.verify_proof_of_possession()
            except ProtocolError:
                return []
            return [(down, self._register(message, now))]
        key = self.devices.get(device_id)
        if key is None:
            return []
        try:
            opened.verify(key)
        except ProtocolError:
            return []
        if isinstance(message, DeregistrationRequest):
            del self.devices[device_id]
            self.latest_counts.pop(device_id, None)
            answer = DeregistrationResult(
                device_id=device_id,
                request_id=message.request_id,
                notice_seq=self.next_notice_seq(device_id),
                issued_at=now,
            )
            return [(down, seal(answer, self.key))]
        if isinstance(message, UsageReport):
            return self._report(message, payload, now)
        return []

    def _register(self, request: RegistrationRequest, now: int) -> bytes:
        device_id = request.device_id
        code = self.refuse_registration
        if code is None and device_id in self.devices:
            code = ErrorCode.ALREADY_REGISTERED
        if code is not None:
            self.refused.append((device_id, code))
            refusal = ErrorNotice(
                device_id=device_id,
                notice_seq=self.next_notice_seq(device_id),
                issued_at=now,
                in_reply_to=request.request_id,
                code=code,
                message=f"refused: {code.name.lower()}",
                collector_key=self.key.public,
            )
            return seal(refusal, self.key)
        self.devices[device_id] = request.verifying_key
        result = RegistrationResult(
            device_id=device_id,
            request_id=request.request_id,
            notice_seq=self.next_notice_seq(device_id),
            issued_at=now,
            smart_account=self.smart_account,
            virtual_account=self.virtual_account,
            report_interval=self.report_interval,
            collector_key=self.key.public,
        )
        return seal(result, self.key)

    def _report(self, report: UsageReport, payload: bytes, now: int) -> list[tuple[str, bytes]]:
        if not self.answer_reports:
            return []
        device_id = report.device_id
        down = self.topics.downlink(device_id)
        if self.refuse_reports is not None:
            self.refused.append((device_id, self.refuse_reports))
            return [(down, self._refusal(device_id, now, report.seq, self.refuse_reports))]
        if report.seq <= self.last_seq.get(device_id, 0):
            stored = self.stored_answers.get((device_id, report.seq))
            if stored is not None and stored[0] == payload:
                return [(down, stored[1])]
            self.refused.append((device_id, ErrorCode.REPLAYED))
            return [(down, self._refusal(device_id, now, report.seq, ErrorCode.REPLAYED))]
        self.last_seq[device_id] = report.seq
        self.latest_counts[device_id] = dict(report.counts)
        self.reports.append(report)
        answer = seal(self.compliance(device_id, now, in_reply_to=report.seq), self.key)
        self.stored_answers[device_id, report.seq] = (payload, answer)
        return [(down, answer)]

    def _refusal(self, device_id: str, now: int, seq: int, code: ErrorCode) -> bytes:
        refusal = ErrorNotice(
            device_id=device_id,
            notice_seq=self.next_notice_seq(device_id),
            issued_at=now,
            in_reply_to=seq,
            code=code,
            message=f"refused: {code.name.lower()}",
        )
        return seal(refusal, self.key)

    def compliance(
        self, device_id: str, now: int, *, in_reply_to: int | None
    ) -> Authorization | OutOfComplianceNotice:
        """The notice for ``device_id`` given every device's latest counts (SPEC §3)."""
        consumed = [t for t, n in self.latest_counts.get(device_id, {}).items() if n]
        tags = {
            tag: TagCompliance(
                in_use=sum(c.get(tag, 0) for c in self.latest_counts.values()),
                entitled=self.entitled.get(tag, 0),
            )
            for tag in consumed
        }
        kind = OutOfComplianceNotice if any(c.shortfall for c in tags.values()) else Authorization
        return kind(
            device_id=device_id,
            notice_seq=self.next_notice_seq(device_id),
            issued_at=now,
            in_reply_to=in_reply_to,
            virtual_account=self.virtual_account,
            valid_until=now + self.validity,
            next_report_at=now + self.report_interval,
            nonce=self.rng.randbytes(16),
            tags=tags,
        )

    def push(self, device_id: str, now: float) -> tuple[str, bytes]:
        """A pushed compliance notice reflecting the pools now."""
        with self.lock:
            notice = self.compliance(device_id, int(now), in_reply_to=None)
            return self.topics.downlink(device_id), seal(notice, self.key)

    def push_not_registered(self, device_id: str, now: float) -> tuple[str, bytes]:
        """What an administrator's deregistration pushes."""
        with self.lock:
            self.devices.pop(device_id, None)
            notice = ErrorNotice(
                device_id=device_id,
                notice_seq=self.next_notice_seq(device_id),
                issued_at=int(now),
                in_reply_to=None,
                code=ErrorCode.NOT_REGISTERED,
                message="deregistered by an administrator",
            )
            return self.topics.downlink(device_id), seal(notice, self.key)

    def sign(self, message: CollectorMessage) -> bytes:
        return seal(message, self.key)


class MqttCollector:
    """:class:`CollectorScript` on a real broker (paho's own thread; tests only)."""

    def __init__(self, broker_url: str, script: CollectorScript | None = None) -> None:
        self.script = script or CollectorScript()
        self.address = parse_broker_url(broker_url)
        self.received = 0
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="scripted-collector", clean_session=False
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, *_: object) -> None:
        client.subscribe(self.script.topics.uplink_filter, qos=1)

    def _on_subscribe(self, *_: object) -> None:
        self._subscribed.set()

    def _on_message(self, client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        self.received += 1
        for topic, answer in self.script.handle(msg.topic, bytes(msg.payload), time.time()):
            client.publish(topic, answer, qos=1)

    def publish(self, topic_and_payload: tuple[str, bytes]) -> None:
        topic, payload = topic_and_payload
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def start(self, timeout: float = 5.0) -> MqttCollector:
        self.client.connect(self.address.host, self.address.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.stop()
            raise TimeoutError("the scripted collector did not get its SUBACK")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # paho keeps the socket pair that wakes its loop thread; close it so a restarted
        # collector (start again) does not leak it.
        self.client._reset_sockets()


def wait_for(condition: Callable[[], object], timeout: float = 10.0, step: float = 0.02) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)
