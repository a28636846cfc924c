"""What one device agent knows, and the bookkeeping every part of the core shares.

:class:`Device` holds the core's state (loaded from, and turned back into, a
:class:`~smartlic.agent.snapshot.Snapshot`) and the small steps every input goes through:
bring the clocks forward and fire the license timers (:meth:`Device._advance`), move the state
machine (:meth:`Device._move`), and put a :class:`Persist` in front of the actions when
something durable changed (:meth:`Device._finish`). The core is assembled from it in
``core.py``, with ``reporting.py`` (reports out) and ``replies.py`` (answers in).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from smartlic.agent.actions import Persist, ReportDropped, StateChanged
from smartlic.agent.errors import LocalAgentError
from smartlic.agent.outbox import Outbox
from smartlic.agent.settings import CoreSettings, Counters
from smartlic.agent.snapshot import RequestKind, Snapshot, collector_key_from
from smartlic.agent.states import LicenseEvent, LicenseState, transition
from smartlic.agent.timekeeping import Deadline, UseClock
from smartlic.protocol import DeregistrationRequest, RegistrationRequest, Udi, open_message

if TYPE_CHECKING:
    from smartlic.agent.actions import Action
    from smartlic.agent.outbox import OutboxEntry
    from smartlic.agent.retry import Entropy
    from smartlic.agent.snapshot import PendingRequest, StoredTag
    from smartlic.protocol import SigningKey, VerifyingKey

AUTHORIZED_STATES: Final = frozenset({LicenseState.AUTHORIZED, LicenseState.OUT_OF_COMPLIANCE})
"""The states whose answer carries a validity end that can lapse."""


class Device:
    """One device's state and shared bookkeeping; see :class:`~smartlic.agent.core.AgentCore`."""

    __slots__ = (
        "_authorization",
        "_clock",
        "_collector_key",
        "_connected",
        "_dirty",
        "_entropy",
        "_evaluation_used",
        "_key",
        "_last_answer_at",
        "_last_nonce",
        "_last_notice_seq",
        "_last_report_at",
        "_next_report",
        "_next_seq",
        "_outbox",
        "_pending",
        "_pending_acked",
        "_pending_attempts",
        "_pending_in_flight",
        "_pending_retry_at",
        "_persisted_elapsed",
        "_registered_at",
        "_report_interval",
        "_reported",
        "_running",
        "_seq_jumps",
        "_settings",
        "_skew_refusals",
        "_smart_account",
        "_state",
        "_tags",
        "_usage",
        "_usage_due",
        "_usage_since",
        "_virtual_account",
        "counters",
        "device_id",
        "downlink",
        "recovered_unclean",
        "udi",
        "uplink",
    )

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        key: SigningKey,
        entropy: Entropy,
        settings: CoreSettings | None = None,
    ) -> None:
        if snapshot.key_fingerprint != key.public.fingerprint:
            raise LocalAgentError(
                "the state belongs to another key than this device's key file: "
                "restore the matching key, or start over with a fresh state directory"
            )
        s = self._settings = settings or CoreSettings()
        self._key = key
        self._entropy = entropy
        self.udi = Udi.parse(snapshot.udi)
        self.device_id = self.udi.device_id
        self.uplink = s.topics.uplink(self.device_id)
        self.downlink = s.topics.downlink(self.device_id)
        self.counters = Counters()
        self._clock = UseClock(elapsed=snapshot.use_elapsed, max_step=s.max_clock_step)
        self._state = snapshot.state
        self._evaluation_used = snapshot.evaluation_used
        self.recovered_unclean = not snapshot.clean
        jump = s.seq_jump if self.recovered_unclean else 0
        self._next_seq = snapshot.next_seq + jump
        self._seq_jumps = snapshot.seq_jumps
        # Consecutive CLOCK_SKEW refusals of the latest report, for their backoff. Not saved:
        # a restart only begins the backoff again from its first step.
        self._skew_refusals = 0
        self._last_notice_seq = snapshot.last_notice_seq
        self._last_nonce = snapshot.last_nonce
        self._collector_key: VerifyingKey | None = None
        if snapshot.collector_key is not None and snapshot.collector_key_type is not None:
            self._collector_key = collector_key_from(
                snapshot.collector_key_type, snapshot.collector_key
            )
        self._smart_account = snapshot.smart_account
        self._virtual_account = snapshot.virtual_account
        self._report_interval = snapshot.report_interval
        self._registered_at = snapshot.registered_at
        self._pending = snapshot.pending
        self._pending_in_flight = False
        self._pending_acked = False
        self._pending_attempts = 0
        self._pending_retry_at: Deadline | None = None
        self._authorization = snapshot.authorization
        self._next_report = snapshot.next_report
        self._usage: dict[str, int] = dict(snapshot.usage)
        self._reported: dict[str, int] = dict(snapshot.reported)
        self._usage_due: Deadline | None = None
        self._usage_since: float | None = None
        self._tags: dict[str, StoredTag] = dict(snapshot.tags)
        self._last_report_at = snapshot.last_report_at
        self._last_answer_at = snapshot.last_answer_at
        self._outbox = Outbox(s.outbox_limit, snapshot.outbox)
        self._connected = False
        self._running = not snapshot.clean
        self._dirty = jump > 0
        self._persisted_elapsed = snapshot.use_elapsed

    def snapshot(self) -> Snapshot:
        key = self._collector_key
        return Snapshot(
            udi=str(self.udi),
            key_fingerprint=self._key.public.fingerprint,
            state=self._state,
            clean=not self._running,
            use_elapsed=self._clock.elapsed,
            evaluation_used=self._evaluation_used,
            next_seq=self._next_seq,
            seq_jumps=self._seq_jumps,
            last_notice_seq=self._last_notice_seq,
            last_nonce=self._last_nonce,
            collector_key=None if key is None else key.raw,
            collector_key_type=None if key is None else key.key_type.value,
            smart_account=self._smart_account,
            virtual_account=self._virtual_account,
            report_interval=self._report_interval,
            registered_at=self._registered_at,
            pending=self._pending,
            authorization=self._authorization,
            next_report=self._next_report,
            usage=dict(self._usage),
            reported=dict(self._reported),
            tags=dict(self._tags),
            last_report_at=self._last_report_at,
            last_answer_at=self._last_answer_at,
            outbox=self._outbox.stored(),
        )

    def _advance(self, now: float, out: list[Action]) -> None:
        """Bring the clocks forward; fire the license timers that ran out."""
        credited = self._clock.observe(now)
        if self._state is LicenseState.EVALUATION:
            self._evaluation_used += credited
            if self._evaluation_used >= self._settings.evaluation_period:
                self._move(LicenseEvent.EVALUATION_SPENT, now, out)
        if (
            self._state in AUTHORIZED_STATES
            and self._authorization is not None
            and self._clock.reached(self._authorization, now)
        ):
            self._move(LicenseEvent.VALIDITY_ENDED, now, out)
        if self._clock.elapsed - self._persisted_elapsed >= self._settings.checkpoint_interval:
            self._dirty = True

    def _finish(self, out: list[Action]) -> list[Action]:
        if not self._dirty:
            return out
        self._dirty = False
        self._persisted_elapsed = self._clock.elapsed
        return [Persist(snapshot=self.snapshot()), *out]

    def _move(self, event: LicenseEvent, now: float, out: list[Action]) -> None:
        previous = self._state
        self._state = transition(previous, event)
        self._dirty = True
        if self._state is not previous:
            out.append(StateChanged(previous=previous, state=self._state, event=event, at=now))

    def _set_pending(self, pending: PendingRequest | None) -> None:
        self._pending = pending
        self._pending_in_flight = False
        self._pending_acked = False
        self._pending_attempts = 0
        self._pending_retry_at = None
        self._dirty = True

    def _stale_request(self, now: float) -> RegistrationRequest | DeregistrationRequest | None:
        """The pending request if it was issued ``request_refresh`` or more ago: the
        collector may refuse it for its age, and it is signed again before it is re-sent."""
        if self._pending is None:
            return None
        request = open_message(self._pending.payload).message
        if not isinstance(request, RegistrationRequest | DeregistrationRequest):
            return None
        return request if now - request.issued_at >= self._settings.request_refresh else None

    def _usage_changed_at(self, now: float) -> None:
        s = self._settings
        if self._usage_since is None:
            self._usage_since = now
        delay = min(s.debounce, max(0.0, self._usage_since + s.debounce_max - now))
        self._usage_due = self._clock.after(delay, now)

    def _may_report(self) -> bool:
        pending = self._pending
        return self._state.registered and (
            pending is None or pending.kind is not RequestKind.DEREGISTER
        )

    def _room(self) -> int:
        """How many more publishes the window allows now."""
        window = self._settings.window
        if window is None:
            return len(self._outbox) + 1
        return window - self._pending_in_flight - sum(e.in_flight for e in self._outbox)

    def _dropped(self, entry: OutboxEntry, reason: str, now: float, out: list[Action]) -> None:
        self.counters.reports_dropped += 1
        out.append(ReportDropped(seq=entry.seq, reason=reason, at=now))
