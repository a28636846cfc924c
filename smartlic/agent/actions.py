"""What the core asks its shell to do, and what it tells the shell happened.

Every call into :class:`~smartlic.agent.core.AgentCore` returns a list of these, in the order
the shell must carry them out. Only three of them need doing — :class:`Persist` (save the
snapshot; it always comes first, so a report is on disk before it is sent), :class:`Publish`
(hand the bytes to MQTT with QoS 1, then call ``core.publish_acked(action, now)`` on PUBACK) and
:class:`StateChanged` (run the hook) — the others are facts to log or count. The simulator
measures report → notice latency from :class:`ReportAnswered` (``first_sent_at`` and
``answered_at``) and counts everything else from these types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Mapping

    from smartlic.agent.snapshot import Snapshot
    from smartlic.agent.states import LicenseEvent, LicenseState
    from smartlic.protocol import ErrorCode, MessageType


@dataclass(frozen=True, slots=True, kw_only=True)
class Persist:
    """Save ``snapshot`` durably before carrying out the actions after it."""

    snapshot: Snapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class Publish:
    """Publish ``payload`` on ``topic`` with QoS 1 (never retained).

    ``seq`` is set for a usage report, ``request_id`` for a (de)registration request. The shell
    must report the broker's PUBACK with ``core.publish_acked(this, now)`` and must not
    retransmit by itself across connections: the core does (paho: ``drop_out_messages()``).
    """

    topic: str
    payload: bytes
    attempt: int
    """1 for the first transmission, 2 for the first retry, ..."""
    seq: int | None = None
    request_id: bytes | None = None
    qos: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class StateChanged:
    previous: LicenseState
    state: LicenseState
    event: LicenseEvent
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportQueued:
    """A new report entered the outbox (it is persisted by the :class:`Persist` before it)."""

    seq: int
    counts: Mapping[str, int]
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportAnswered:
    """The collector's signed answer to report ``seq`` arrived; the report left the outbox."""

    seq: int
    created_at: float
    first_sent_at: float | None
    """When it was first handed to MQTT in this run (``None``: sent by an earlier run)."""
    answered_at: float
    answer: MessageType
    notice_seq: int
    applied: bool
    """False for a stored answer re-sent with an old ``notice_seq``: no state rolled back."""
    code: ErrorCode | None = None
    """The refusal code when the answer is an error notice."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportDropped:
    """A report left the outbox unanswered: compacted, superseded, or deregistered."""

    seq: int
    reason: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class NoticeApplied:
    """A verified, fresh collector message changed what the device knows."""

    kind: MessageType
    notice_seq: int
    in_reply_to: int | bytes | None
    at: float
    code: ErrorCode | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NoticeIgnored:
    """Something arrived on the downlink that the device does not act on; ``reason`` says why."""

    reason: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationSucceeded:
    smart_account: str
    virtual_account: str
    collector_fingerprint: bytes
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationRefused:
    code: ErrorCode
    message: str
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Deregistered:
    by_collector: bool
    """True when the collector pushed ``NOT_REGISTERED`` (an administrator deregistered it)."""
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class DeregistrationRefused:
    code: ErrorCode
    message: str
    at: float


Action: TypeAlias = (
    Persist
    | Publish
    | StateChanged
    | ReportQueued
    | ReportAnswered
    | ReportDropped
    | NoticeApplied
    | NoticeIgnored
    | RegistrationSucceeded
    | RegistrationRefused
    | Deregistered
    | DeregistrationRefused
)
