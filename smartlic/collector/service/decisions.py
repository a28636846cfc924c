"""The service's decisions about one message, as pure functions of plain values.

Nothing here touches the broker, the store or the clock: ``ingest.py`` gathers the facts
(the device's record, its pools, ``now``), calls these, and writes what they decide. Each rule
lives in exactly one function whose name says what it decides.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from smartlic.collector.compliance import device_status
from smartlic.protocol import (
    Authorization,
    ComplianceNotice,
    ComplianceStatus,
    ErrorCode,
    OutOfComplianceNotice,
    TagCompliance,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from smartlic.collector.accounts import Policy


class SequenceVerdict(Enum):
    NEW = "new"
    """Above the last accepted ``seq``: process it."""
    DUPLICATE = "duplicate"
    """The very report that was accepted before: answer it again, change nothing."""
    REPLAYED = "replayed"
    """Not above the last accepted ``seq`` and not a copy of an accepted report: refuse."""


def report_digest(payload: bytes) -> bytes:
    """What identifies an accepted report's content (for telling duplicates from replays)."""
    return hashlib.sha256(payload).digest()


def classify_sequence(
    *, seq: int, last_accepted: int, accepted_digest: bytes | None, digest: bytes
) -> SequenceVerdict:
    """The replay window (SPEC §4): only a report above the last accepted one is new.

    ``accepted_digest`` is the digest of the accepted report with this ``seq``, if any. A
    broker redelivers a message whose acknowledgement was lost (MQTT 3.1.1 §4.3.2), and the
    device re-sends what it never saw answered; both arrive as exact copies and deserve the
    same answer. Anything else at or below the window is a replay.
    """
    if seq > last_accepted:
        return SequenceVerdict.NEW
    if accepted_digest is not None and accepted_digest == digest:
        return SequenceVerdict.DUPLICATE
    return SequenceVerdict.REPLAYED


def clock_skew_error(*, issued_at: int, now: int, window: int) -> str | None:
    """Why a message's issue time is refused, or ``None`` when it is within ``window``."""
    drift = issued_at - now
    if abs(drift) <= window:
        return None
    direction = "ahead of" if drift > 0 else "behind"
    return f"issue time is {abs(drift)} s {direction} the collector's clock (window {window} s)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """A message the service will not act on: kept as a dead letter, maybe answered."""

    code: ErrorCode
    reason: str
    answer: bool
    """Whether the sender is identified well enough to deserve a signed error notice."""


def refuse_unverified(reason: str, *, device_known: bool) -> Refusal:
    """A message whose signature does not hold.

    The topic names the sender: the broker's ACLs let a device publish only on its own uplink
    (deploy/), so a device we know gets told why it was refused. An unknown device id gets
    nothing: answering would let anyone make the collector sign messages for any topic.
    """
    return Refusal(code=ErrorCode.BAD_SIGNATURE, reason=reason, answer=device_known)


def compliance_notice(
    *,
    device_id: str,
    notice_seq: int,
    now: int,
    in_reply_to: int | None,
    virtual_account: str,
    tags: Mapping[str, TagCompliance],
    policy: Policy,
    nonce: bytes,
) -> ComplianceNotice:
    """The notice a device gets: an authorization only when none of its tags is short.

    ``tags`` holds the pools of the tags the device *consumes* (count > 0). SPEC §3: a pool's
    shortfall puts every device of the VA consuming that tag out of compliance, and leaves
    devices that do not consume it alone — so one short consumed tag makes the notice an
    out-of-compliance notice, and an unconsumed tag is not the device's business.
    """
    kind: type[ComplianceNotice] = (
        OutOfComplianceNotice
        if device_status(tags) is ComplianceStatus.OUT_OF_COMPLIANCE
        else Authorization
    )
    return kind(
        device_id=device_id,
        notice_seq=notice_seq,
        issued_at=now,
        in_reply_to=in_reply_to,
        virtual_account=virtual_account,
        valid_until=now + policy.authorization_validity,
        next_report_at=now + policy.report_interval,
        nonce=nonce,
        tags=tags,
    )
