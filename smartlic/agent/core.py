"""The agent's sans-I/O core: one device's license state, reports, outbox and notices.

Nothing here opens a socket or a file, reads a clock, draws randomness by itself or logs. The
shell (the daemon, the CLI's ``register``, or the simulator driving thousands of cores on one
asyncio loop) feeds it inputs — each method takes ``now``, wall seconds since the epoch as a
float — and carries out the :mod:`~smartlic.agent.actions` it returns, in order.

Inputs: :meth:`AgentCore.start` / :meth:`~AgentCore.stop` (a run begins / ends cleanly),
:meth:`~AgentCore.connected` (after the SUBACK of :attr:`~AgentCore.downlink`: the device must
be subscribed before it publishes, or it could miss its answer) / :meth:`~AgentCore.disconnected`,
:meth:`~AgentCore.received` (a downlink message), :meth:`~AgentCore.publish_acked` (the PUBACK of
a :class:`Publish`), :meth:`~AgentCore.usage_changed`, :meth:`~AgentCore.tick` (call it by
:meth:`~AgentCore.next_timer` at the latest), and the operator's :meth:`~AgentCore.register`,
:meth:`~AgentCore.deregister`, :meth:`~AgentCore.forget_registration`.

Delivery (SPEC §5): reports get strictly increasing sequence numbers and enter the durable
outbox before they are sent (the :class:`Persist` comes first in every action list). Each is
re-sent with exponential backoff and jitter until the collector's signed answer arrives; while
connected, at most ``window`` publishes wait for their PUBACK (paho keys them by a 16-bit
packet id). A run that did not stop cleanly jumps the sequence ahead by ``seq_jump``: if the
storage lost its last write, numbers the collector already saw are not reused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from smartlic.agent.actions import (
    Action,
    Deregistered,
    DeregistrationRefused,
    NoticeApplied,
    NoticeIgnored,
    Persist,
    Publish,
    RegistrationRefused,
    RegistrationSucceeded,
    ReportAnswered,
    ReportDropped,
    ReportQueued,
    StateChanged,
)
from smartlic.agent.errors import LocalAgentError
from smartlic.agent.notices import Accepted, Ignored, Relevance, judge
from smartlic.agent.outbox import Outbox, OutboxEntry
from smartlic.agent.retry import Entropy, backoff_delay, unit_interval
from smartlic.agent.snapshot import (
    PendingRequest,
    RequestKind,
    Snapshot,
    StoredTag,
    collector_key_from,
)
from smartlic.agent.states import LicenseEvent, LicenseState, transition
from smartlic.agent.status import AgentStatus, status_of
from smartlic.agent.timekeeping import Deadline, UseClock
from smartlic.agent.usage import check_counts, same_usage
from smartlic.protocol import (
    Authorization,
    DeregistrationRequest,
    ErrorCode,
    ErrorNotice,
    OutOfComplianceNotice,
    ProtocolError,
    RegistrationRequest,
    RegistrationResult,
    Topics,
    Udi,
    UsageReport,
    parse_token,
    seal,
)
from smartlic.protocol.cose import algorithm_for
from smartlic.protocol.fields import PERIOD_MAX

if TYPE_CHECKING:
    from collections.abc import Mapping

    from smartlic.protocol import CollectorMessage, SigningKey, VerifyingKey

DAY: Final = 86_400
REQUEST_ID_BYTES: Final = 16
_DEREGISTERING: Final = frozenset({ErrorCode.NOT_REGISTERED, ErrorCode.UNKNOWN_DEVICE})
_MAX_JUMP_DOUBLINGS: Final = 20
_A = LicenseState.AUTHORIZED
_OOC = LicenseState.OUT_OF_COMPLIANCE


@dataclass(frozen=True, slots=True, kw_only=True)
class CoreSettings:
    evaluation_period: float = 90 * DAY
    default_report_interval: int = DAY
    """Until the collector sets one (registration result, then every notice)."""
    debounce: float = 5.0
    """A usage change is reported once usage has been still this long ..."""
    debounce_max: float = 60.0
    """... or this long after the first change, whichever comes first."""
    retry_base: float = 30.0
    retry_cap: float = 3600.0
    window: int | None = 4
    """Publishes awaiting PUBACK at most; ``None`` when the transport bounds them itself."""
    outbox_limit: int = 16
    seq_jump: int = 1000
    max_clock_step: float | None = 300.0
    checkpoint_interval: float = 600.0
    """Persist the use clock at least this often, so evaluation time survives a crash."""
    topics: Topics = field(default_factory=Topics)

    def __post_init__(self) -> None:
        if self.window is not None and self.window < 1:
            raise LocalAgentError("window must be at least 1")
        if min(self.debounce, self.retry_base, self.checkpoint_interval) <= 0:
            raise LocalAgentError("debounce, retry_base and checkpoint_interval must be > 0")


@dataclass(slots=True)
class Counters:
    """Running totals for one core (the simulator sums them over a fleet)."""

    reports_queued: int = 0
    publishes: int = 0
    reports_answered: int = 0
    reports_dropped: int = 0
    notices_applied: int = 0
    notices_ignored: int = 0


class AgentCore:
    """One device agent, sans I/O. Build with :meth:`new` or :meth:`restore`."""

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
        "_pending_in_flight",
        "_persisted_elapsed",
        "_registered_at",
        "_report_interval",
        "_reported",
        "_running",
        "_seq_jumps",
        "_settings",
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

    @classmethod
    def new(
        cls,
        udi: Udi,
        *,
        key: SigningKey,
        entropy: Entropy,
        settings: CoreSettings | None = None,
    ) -> AgentCore:
        """A device that has never run: in evaluation, nothing reported."""
        snapshot = Snapshot(udi=str(udi), key_fingerprint=key.public.fingerprint)
        return cls(snapshot, key=key, entropy=entropy, settings=settings)

    @classmethod
    def restore(
        cls,
        snapshot: Snapshot,
        *,
        key: SigningKey,
        entropy: Entropy,
        settings: CoreSettings | None = None,
    ) -> AgentCore:
        """A device as its saved ``snapshot`` left it (``clean`` False: after a crash)."""
        return cls(snapshot, key=key, entropy=entropy, settings=settings)

    # ---- queries -------------------------------------------------------------------------

    @property
    def state(self) -> LicenseState:
        return self._state

    @property
    def connected_now(self) -> bool:
        return self._connected

    @property
    def outbox_depth(self) -> int:
        return len(self._outbox)

    @property
    def collector_key(self) -> VerifyingKey | None:
        return self._collector_key

    @property
    def pending(self) -> PendingRequest | None:
        return self._pending

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

    def status(self, now: float) -> AgentStatus:
        return status_of(
            self.snapshot(), now=now, evaluation_period=self._settings.evaluation_period
        )

    def next_timer(self) -> float | None:
        """The wall time by which :meth:`tick` must be called next (``None``: no timer yet)."""
        now = self._clock.wall
        if now is None:
            return None
        clock, s = self._clock, self._settings
        candidates = [now + s.checkpoint_interval - (clock.elapsed - self._persisted_elapsed)]
        if self._state is LicenseState.EVALUATION:
            candidates.append(now + s.evaluation_period - self._evaluation_used)
        deadlines: list[Deadline | None] = []
        if self._state in (_A, _OOC):
            deadlines.append(self._authorization)
        if self._may_report():
            deadlines += [self._next_report, self._usage_due]
        if self._connected:
            for entry in self._outbox:
                if not entry.in_flight:
                    deadlines.append(entry.retry_at or clock.after(0, now))
            if self._pending is not None and not (self._pending_in_flight or self._pending_acked):
                candidates.append(now)
        candidates += [now + clock.remaining(d, now) for d in deadlines if d is not None]
        return max(now, min(candidates))

    # ---- inputs --------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        """A run begins: from now until :meth:`stop`, the state on disk says "not clean"."""
        out: list[Action] = []
        self._advance(now, out)
        self._running = True
        self._dirty = True
        for entry in self._outbox:
            entry.retry_at = None
        if self._state.registered and not same_usage(self._usage, self._reported):
            self._usage_changed_at(now)
        self._pump(now, out)
        return self._finish(out)

    def stop(self, now: float) -> list[Action]:
        """The run ends cleanly (SIGTERM): persist, marked clean."""
        out: list[Action] = []
        self._advance(now, out)
        self._running = False
        self._dirty = True
        return self._finish(out)

    def connected(self, now: float) -> list[Action]:
        """Subscribed to :attr:`downlink` (SUBACK received): publishing may begin."""
        out: list[Action] = []
        self._advance(now, out)
        self._connected = True
        self._pump(now, out)
        return self._finish(out)

    def disconnected(self, now: float) -> list[Action]:
        """The connection dropped: what awaited a PUBACK goes again on the next connection."""
        out: list[Action] = []
        self._advance(now, out)
        self._connected = False
        if self._settings.window is not None:
            for entry in self._outbox:
                if entry.in_flight:
                    entry.in_flight = False
                    entry.retry_at = None
            self._pending_in_flight = False
            self._pending_acked = False
        return self._finish(out)

    def publish_acked(self, publish: Publish, now: float) -> list[Action]:
        """The broker acknowledged ``publish`` (PUBACK): room for the next one."""
        out: list[Action] = []
        self._advance(now, out)
        if publish.seq is not None:
            entry = self._outbox.get(publish.seq)
            if entry is not None:
                entry.in_flight = False
        pending = self._pending
        if pending is not None and publish.request_id == pending.request_id:
            self._pending_in_flight = False
            self._pending_acked = True
        self._pump(now, out)
        return self._finish(out)

    def tick(self, now: float) -> list[Action]:
        out: list[Action] = []
        self._advance(now, out)
        self._pump(now, out)
        return self._finish(out)

    def usage_changed(self, counts: Mapping[str, int], now: float) -> list[Action]:
        """The device's current per-tag counts (the whole set, not a delta)."""
        checked = check_counts(counts)
        out: list[Action] = []
        self._advance(now, out)
        if checked != self._usage:
            self._usage = checked
            self._dirty = True
            if not self._state.registered:
                pass
            elif same_usage(checked, self._reported):
                self._usage_due = self._usage_since = None
            else:
                self._usage_changed_at(now)
        self._pump(now, out)
        return self._finish(out)

    def received(self, topic: str, payload: bytes, now: float) -> list[Action]:
        """A message arrived on the downlink; see :func:`~smartlic.agent.notices.judge`."""
        out: list[Action] = []
        self._advance(now, out)
        verdict = judge(
            topic,
            payload,
            downlink=self.downlink,
            device_id=self.device_id,
            collector_key=self._collector_key,
            pending=self._pending,
            outbox=self._outbox,
            last_notice_seq=self._last_notice_seq,
        )
        if isinstance(verdict, Ignored):
            self.counters.notices_ignored += 1
            out.append(NoticeIgnored(reason=verdict.reason, at=now))
        else:
            self._accept(verdict, now, out)
        self._pump(now, out)
        return self._finish(out)

    def register(self, token: str, now: float) -> list[Action]:
        """Send a registration request with ``token`` (replacing any pending one)."""
        if self._state.registered:
            raise LocalAgentError(
                f"already registered (virtual account {self._virtual_account}): deregister first"
            )
        try:
            parsed = parse_token(token)
        except ProtocolError as exc:
            raise LocalAgentError(exc.message) from None
        out: list[Action] = []
        self._advance(now, out)
        request_id = self._entropy(REQUEST_ID_BYTES)
        request = RegistrationRequest(
            udi=self.udi,
            algorithm=algorithm_for(self._key.key_type),
            public_key=self._key.public.raw,
            token=token.strip(),
            request_id=request_id,
            issued_at=int(now),
        )
        self._set_pending(
            PendingRequest(
                kind=RequestKind.REGISTER,
                request_id=request_id,
                payload=seal(request, self._key),
                fingerprint=parsed.collector_fingerprint,
            )
        )
        self._pump(now, out)
        return self._finish(out)

    def deregister(self, now: float) -> list[Action]:
        """Ask the collector to release this device's licenses; reports stop meanwhile."""
        if not self._state.registered:
            raise LocalAgentError("not registered: there is nothing to deregister")
        out: list[Action] = []
        self._advance(now, out)
        if self._pending is None or self._pending.kind is not RequestKind.DEREGISTER:
            request_id = self._entropy(REQUEST_ID_BYTES)
            request = DeregistrationRequest(
                device_id=self.device_id, request_id=request_id, issued_at=int(now)
            )
            self._set_pending(
                PendingRequest(
                    kind=RequestKind.DEREGISTER,
                    request_id=request_id,
                    payload=seal(request, self._key),
                )
            )
        self._pump(now, out)
        return self._finish(out)

    def forget_registration(self, now: float) -> list[Action]:
        """Drop the registration (or a pending request) locally, without the collector."""
        out: list[Action] = []
        self._advance(now, out)
        if self._state.registered:
            self._become_unregistered(now, out, by_collector=False)
        elif self._pending is not None:
            self._set_pending(None)
        else:
            raise LocalAgentError("not registered and no registration pending")
        return self._finish(out)

    # ---- internals -----------------------------------------------------------------------

    def _advance(self, now: float, out: list[Action]) -> None:
        """Bring the clocks forward; fire the license timers that ran out."""
        credited = self._clock.observe(now)
        if self._state is LicenseState.EVALUATION:
            self._evaluation_used += credited
            if self._evaluation_used >= self._settings.evaluation_period:
                self._move(LicenseEvent.EVALUATION_SPENT, now, out)
        if (
            self._state in (_A, _OOC)
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
        self._dirty = True

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

    def _pump(self, now: float, out: list[Action]) -> None:
        """Queue the report that is due, then send what the window allows."""
        clock = self._clock
        if self._may_report() and any(
            d is not None and clock.reached(d, now) for d in (self._next_report, self._usage_due)
        ):
            self._queue_report(now, out)
        if not self._connected:
            return
        window = self._settings.window
        room = (window or len(self._outbox) + 1) - self._pending_in_flight
        room -= sum(e.in_flight for e in self._outbox)
        pending = self._pending
        if pending is not None and not (self._pending_in_flight or self._pending_acked):
            if room <= 0:
                return
            room -= 1
            self._pending_in_flight = window is not None
            self._pending_acked = window is None
            self.counters.publishes += 1
            out.append(
                Publish(
                    topic=self.uplink,
                    payload=pending.payload,
                    attempt=1,
                    request_id=pending.request_id,
                )
            )
        for entry in self._outbox:
            if room <= 0:
                break
            if entry.in_flight or (entry.retry_at and not clock.reached(entry.retry_at, now)):
                continue
            room -= 1
            out.append(self._send(entry, now))

    def _send(self, entry: OutboxEntry, now: float) -> Publish:
        s = self._settings
        entry.attempts += 1
        entry.in_flight = s.window is not None
        if entry.first_sent_at is None:
            entry.first_sent_at = now
        delay = backoff_delay(
            entry.attempts - 1,
            base=s.retry_base,
            cap=s.retry_cap,
            unit=unit_interval(self._entropy),
        )
        entry.retry_at = self._clock.after(delay, now)
        self.counters.publishes += 1
        return Publish(
            topic=self.uplink, payload=entry.payload, attempt=entry.attempts, seq=entry.seq
        )

    def _queue_report(self, now: float, out: list[Action]) -> None:
        counts = dict.fromkeys(self._reported, 0) | self._usage
        seq = self._next_seq
        last = self._last_report_at
        period = 0 if last is None else int(min(max(0.0, now - last), PERIOD_MAX))
        report = UsageReport(
            device_id=self.device_id,
            seq=seq,
            issued_at=int(now),
            period=period,
            counts=counts,
            nonce=self._last_nonce,
        )
        entry = OutboxEntry(seq=seq, created_at=now, payload=seal(report, self._key))
        self._next_seq = seq + 1
        for dropped in self._outbox.add(entry):
            self._dropped(dropped, f"compacted: the outbox keeps {self._outbox.limit}", now, out)
        self._reported = {tag: n for tag, n in counts.items() if n}
        self._usage_due = self._usage_since = None
        interval = self._report_interval or self._settings.default_report_interval
        self._next_report = self._clock.after(interval, now)
        self._last_report_at = now
        self._dirty = True
        self.counters.reports_queued += 1
        out.append(ReportQueued(seq=seq, counts=counts, at=now))

    def _dropped(self, entry: OutboxEntry, reason: str, now: float, out: list[Action]) -> None:
        self.counters.reports_dropped += 1
        out.append(ReportDropped(seq=entry.seq, reason=reason, at=now))

    def _accept(self, verdict: Accepted, now: float, out: list[Action]) -> None:
        message, relevance = verdict.message, verdict.relevance
        if relevance is Relevance.REGISTRATION:
            self._registration_answered(message, verdict.collector_key, now, out)
        elif relevance is Relevance.DEREGISTRATION:
            self._deregistration_answered(message, now, out)
        else:
            if relevance is not Relevance.PUSHED:
                self._report_answered(message, now, out, fresh=relevance is Relevance.ANSWER)
            if relevance is not Relevance.STALE_ANSWER:
                self._apply(message, now, out)

    def _report_answered(
        self, message: CollectorMessage, now: float, out: list[Action], *, fresh: bool
    ) -> None:
        seq = getattr(message, "in_reply_to", None)
        if not isinstance(seq, int):
            return
        entry, older = self._outbox.answered(seq)
        if entry is None:
            return
        for old in older:
            self._dropped(old, f"superseded: report {seq} was answered", now, out)
        code = message.code if isinstance(message, ErrorNotice) else None
        self._last_answer_at = now
        self._dirty = True
        self.counters.reports_answered += 1
        out.append(
            ReportAnswered(
                seq=seq,
                created_at=entry.created_at,
                first_sent_at=entry.first_sent_at,
                answered_at=now,
                answer=message.message_type,
                notice_seq=getattr(message, "notice_seq", 0),
                applied=fresh,
                code=code,
            )
        )
        was_latest = len(self._outbox) == 0
        if code is ErrorCode.REPLAYED and was_latest:
            # The collector has accepted a higher seq than ours: state restored from an old
            # copy. Jump ahead, doubling each time it happens again, and report afresh.
            self._next_seq += self._settings.seq_jump << min(self._seq_jumps, _MAX_JUMP_DOUBLINGS)
            self._seq_jumps += 1
            self._next_report = self._clock.after(0, now)
        elif code is ErrorCode.CLOCK_SKEW and was_latest:
            s = self._settings
            unit = unit_interval(self._entropy)
            delay = backoff_delay(entry.attempts, base=s.retry_base, cap=s.retry_cap, unit=unit)
            self._next_report = self._clock.after(delay, now)

    def _apply(self, message: CollectorMessage, now: float, out: list[Action]) -> None:
        """Act on a fresh notice (answer or push); its ``notice_seq`` becomes the last one."""
        self._last_notice_seq = message.notice_seq
        self._dirty = True
        self.counters.notices_applied += 1
        in_reply_to = getattr(message, "in_reply_to", None)
        if isinstance(message, ErrorNotice):
            out.append(
                NoticeApplied(
                    kind=message.message_type,
                    notice_seq=message.notice_seq,
                    in_reply_to=in_reply_to,
                    at=now,
                    code=message.code,
                )
            )
            if message.code in _DEREGISTERING and self._state.registered:
                self._become_unregistered(now, out, by_collector=True)
            return
        if not isinstance(message, Authorization | OutOfComplianceNotice):
            return
        clock = self._clock
        self._virtual_account = message.virtual_account
        self._tags = {
            tag: StoredTag(in_use=c.in_use, entitled=c.entitled) for tag, c in message.tags.items()
        }
        self._last_nonce = message.nonce
        self._authorization = clock.at(
            message.valid_until, span=message.valid_until - message.issued_at
        )
        self._next_report = clock.at(
            message.next_report_at, span=message.next_report_at - message.issued_at
        )
        self._last_answer_at = now
        self._seq_jumps = 0
        out.append(
            NoticeApplied(
                kind=message.message_type,
                notice_seq=message.notice_seq,
                in_reply_to=in_reply_to,
                at=now,
            )
        )
        authorized = isinstance(message, Authorization)
        self._move(
            LicenseEvent.AUTHORIZATION_RECEIVED
            if authorized
            else LicenseEvent.OUT_OF_COMPLIANCE_RECEIVED,
            now,
            out,
        )
        if clock.reached(self._authorization, now):
            self._move(LicenseEvent.VALIDITY_ENDED, now, out)

    def _registration_answered(
        self, message: CollectorMessage, key: VerifyingKey, now: float, out: list[Action]
    ) -> None:
        self._set_pending(None)
        if isinstance(message, ErrorNotice):
            out.append(RegistrationRefused(code=message.code, message=message.message, at=now))
            return
        if not isinstance(message, RegistrationResult):
            return
        self._collector_key = key
        self._smart_account = message.smart_account
        self._virtual_account = message.virtual_account
        self._report_interval = message.report_interval
        self._registered_at = now
        self._last_notice_seq = message.notice_seq
        self._last_nonce = None
        self._tags = {}
        self._authorization = None
        self._next_report = self._clock.after(0, now)
        self._move(LicenseEvent.REGISTRATION_ACCEPTED, now, out)
        out.append(
            RegistrationSucceeded(
                smart_account=message.smart_account,
                virtual_account=message.virtual_account,
                collector_fingerprint=key.fingerprint,
                at=now,
            )
        )

    def _deregistration_answered(
        self, message: CollectorMessage, now: float, out: list[Action]
    ) -> None:
        if isinstance(message, ErrorNotice) and message.code not in _DEREGISTERING:
            self._set_pending(None)
            out.append(DeregistrationRefused(code=message.code, message=message.message, at=now))
            return
        if self._state.registered:
            self._become_unregistered(now, out, by_collector=False)

    def _become_unregistered(self, now: float, out: list[Action], *, by_collector: bool) -> None:
        for entry in self._outbox.clear():
            self._dropped(entry, "deregistered", now, out)
        self._set_pending(None)
        self._collector_key = None
        self._smart_account = self._virtual_account = None
        self._report_interval = None
        self._registered_at = None
        self._authorization = self._next_report = self._usage_due = None
        self._usage_since = None
        self._tags = {}
        self._reported = {}
        self._last_nonce = None
        self._last_notice_seq = 0
        spent = self._evaluation_used >= self._settings.evaluation_period
        event = LicenseEvent.DEREGISTERED_EVALUATION_SPENT if spent else LicenseEvent.DEREGISTERED
        self._move(event, now, out)
        out.append(Deregistered(by_collector=by_collector, at=now))
