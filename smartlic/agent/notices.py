"""Which collector messages a device believes, and what each one is to it.

:func:`judge` is the one place where downlink bytes become something the core acts on. A
message is accepted only when all of these hold (SPEC §4, docs/architecture.md "Protocol
conventions"), checked in this order, the first failure naming the reason:

1. it arrived on this device's downlink topic;
2. it is a well-formed COSE_Sign1 carrying a collector → device message;
3. it names this device (the payload's device id; the signature binds the same id as
   external AAD, so a notice re-addressed to another device fails step 4);
4. it is signed by the pinned collector key — or, for the answer to a pending registration,
   by a collector key that hashes to the token's fingerprint (``verify_first_reply``);
5. it is relevant: it answers the pending (de)registration request, or a report still in the
   outbox, or it was pushed (``in_reply_to`` absent) with a ``notice_seq`` above the last one
   applied. An answer to an outbox report is accepted even with an old ``notice_seq`` (the
   collector re-sends the stored answer to a duplicate report) but marked stale, so it clears
   the outbox without rolling the device's state back.

Everything else comes back as :class:`Ignored` with a reason for the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from smartlic.agent.snapshot import PendingRequest, RequestKind
from smartlic.protocol import (
    Authorization,
    DeregistrationResult,
    ErrorNotice,
    Opened,
    OutOfComplianceNotice,
    ProtocolError,
    RegistrationResult,
    VerifyingKey,
    open_message,
)

if TYPE_CHECKING:
    from collections.abc import Container

    from smartlic.protocol import CollectorMessage

_COLLECTOR_MESSAGES = (
    RegistrationResult,
    Authorization,
    OutOfComplianceNotice,
    ErrorNotice,
    DeregistrationResult,
)


class Relevance(Enum):
    REGISTRATION = "answers the pending registration"
    DEREGISTRATION = "answers the pending deregistration"
    ANSWER = "answers a report in the outbox"
    STALE_ANSWER = "answers a report in the outbox with an old notice_seq"
    PUSHED = "pushed by the collector"


@dataclass(frozen=True, slots=True, kw_only=True)
class Accepted:
    message: CollectorMessage
    relevance: Relevance
    collector_key: VerifyingKey
    """The key that verified it: the pinned one, or the one to pin after a registration."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ignored:
    reason: str


def judge(  # noqa: PLR0911 -- one early return per rule, in the order the docstring gives
    topic: str,
    payload: bytes,
    *,
    downlink: str,
    device_id: str,
    collector_key: VerifyingKey | None,
    pending: PendingRequest | None,
    outbox: Container[int],
    last_notice_seq: int,
) -> Accepted | Ignored:
    """Accept a downlink message or say why not (see the module docstring for the rules)."""
    if topic != downlink:
        return Ignored(reason=f"arrived on {topic!r}, not this device's downlink")
    try:
        opened = open_message(payload)
    except ProtocolError as exc:
        return Ignored(reason=f"unreadable message: {exc.message} [{exc.code.name}]")
    message = opened.message
    if not isinstance(message, _COLLECTOR_MESSAGES):
        return Ignored(reason=f"a {message.message_type.name} is not a collector message")
    if message.device_id != device_id:
        return Ignored(reason=f"addressed to {message.device_id}, not to this device")
    answers_pending = pending is not None and _in_reply_to(message) == pending.request_id
    key = _verified_by(opened, message, collector_key, pending if answers_pending else None)
    if isinstance(key, Ignored):
        return key
    relevance = _relevance(message, pending if answers_pending else None, outbox, last_notice_seq)
    if isinstance(relevance, Ignored):
        return relevance
    return Accepted(message=message, relevance=relevance, collector_key=key)


def _verified_by(
    opened: Opened,
    message: CollectorMessage,
    collector_key: VerifyingKey | None,
    answered: PendingRequest | None,
) -> VerifyingKey | Ignored:
    """The key that signed ``message``: the pinned one, or the first reply's checked one."""
    try:
        if answered is not None and answered.fingerprint is not None:
            return opened.verify_first_reply(answered.fingerprint)
        if collector_key is None:
            return Ignored(reason=f"a {message.message_type.name}, but no collector key is pinned")
        opened.verify(collector_key)
    except ProtocolError as exc:
        return Ignored(reason=f"signature refused: {exc.message} [{exc.code.name}]")
    return collector_key


def _relevance(  # noqa: PLR0911 -- one return per kind of relevance
    message: CollectorMessage,
    answered: PendingRequest | None,
    outbox: Container[int],
    last_notice_seq: int,
) -> Relevance | Ignored:
    if answered is not None:
        if answered.kind is RequestKind.REGISTER and isinstance(
            message, RegistrationResult | ErrorNotice
        ):
            return Relevance.REGISTRATION
        if answered.kind is RequestKind.DEREGISTER and isinstance(
            message, DeregistrationResult | ErrorNotice
        ):
            return Relevance.DEREGISTRATION
    if isinstance(message, RegistrationResult | DeregistrationResult) or isinstance(
        message.in_reply_to, bytes
    ):
        return Ignored(reason=f"a {message.message_type.name} answering no request of ours")
    if message.in_reply_to is not None:
        if message.in_reply_to not in outbox:
            return Ignored(
                reason=f"answers report {message.in_reply_to}, which is not in the outbox"
            )
        fresh = message.notice_seq > last_notice_seq
        return Relevance.ANSWER if fresh else Relevance.STALE_ANSWER
    if message.notice_seq <= last_notice_seq:
        return Ignored(
            reason=f"pushed notice {message.notice_seq} is not newer than {last_notice_seq} "
            "(replayed or out of date)"
        )
    return Relevance.PUSHED


def _in_reply_to(message: CollectorMessage) -> object:
    if isinstance(message, RegistrationResult | DeregistrationResult):
        return message.request_id
    return message.in_reply_to
