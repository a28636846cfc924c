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
:meth:`~AgentCore.next_timer` at the latest: a shell whose wall clock can be set back passes
it the clock's reading), and the operator's :meth:`~AgentCore.register`,
:meth:`~AgentCore.deregister`, :meth:`~AgentCore.forget_registration`.

Delivery (SPEC §5): reports get strictly increasing sequence numbers and enter the durable
outbox before they are sent (the :class:`Persist` comes first in every action list). Each is
re-sent with exponential backoff and jitter until the collector's signed answer arrives; while
connected, at most ``window`` publishes wait for their PUBACK (paho keys them by a 16-bit
packet id). A run that did not stop cleanly jumps the sequence ahead by ``seq_jump``: if the
storage lost its last write, numbers the collector already saw are not reused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from smartlic.agent.actions import NoticeIgnored, Publish
from smartlic.agent.device import AUTHORIZED_STATES
from smartlic.agent.errors import LocalAgentError
from smartlic.agent.notices import Ignored, judge
from smartlic.agent.replies import Replies
from smartlic.agent.reporting import Reporting
from smartlic.agent.settings import DAY, CoreSettings, Counters
from smartlic.agent.snapshot import PendingRequest, RequestKind, Snapshot
from smartlic.agent.states import LicenseState
from smartlic.agent.status import AgentStatus, status_of
from smartlic.agent.usage import check_counts, same_usage
from smartlic.protocol import (
    DeregistrationRequest,
    ProtocolError,
    RegistrationRequest,
    Udi,
    parse_token,
    seal,
)
from smartlic.protocol.cose import algorithm_for

if TYPE_CHECKING:
    from collections.abc import Mapping

    from smartlic.agent.actions import Action
    from smartlic.agent.retry import Entropy
    from smartlic.agent.timekeeping import Deadline
    from smartlic.protocol import SigningKey, VerifyingKey

__all__ = ["DAY", "AgentCore", "CoreSettings", "Counters"]
REQUEST_ID_BYTES: Final = 16


class AgentCore(Reporting, Replies):
    """One device agent, sans I/O. Build with :meth:`new` or :meth:`restore`."""

    __slots__ = ()

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

    def status(self, now: float) -> AgentStatus:
        return status_of(
            self.snapshot(), now=now, evaluation_period=self._settings.evaluation_period
        )

    def next_timer(self, now: float | None = None) -> float | None:
        """The wall time by which :meth:`tick` must be called next (``None``: no timer yet).

        Never later than the use clock's :meth:`~smartlic.agent.timekeeping.UseClock.observe_by`,
        so a core ticked when asked counts all its running time (a longer step would be cut
        to ``max_clock_step``). Every timer counts from the last wall time the core was given;
        with ``now`` (the wall clock's reading), a clock set back since then makes the timer
        due at once: the tick re-anchors the timers on the new time, where waiting for the
        old one would leave the core without a tick (no retry, report, checkpoint, use
        counted) for as long as the clock went back.
        """
        last = self._clock.wall
        if last is None:
            return None
        if now is not None and now < last:
            return now
        return self._timer_from(last)

    def _timer_from(self, last: float) -> float:
        """:meth:`next_timer` of a core whose last input came at wall time ``last``."""
        clock, s = self._clock, self._settings
        candidates = [last + s.checkpoint_interval - (clock.elapsed - self._persisted_elapsed)]
        observe_by = clock.observe_by()
        if observe_by is not None:
            candidates.append(observe_by)
        if self._state is LicenseState.EVALUATION:
            candidates.append(last + s.evaluation_period - self._evaluation_used)
        deadlines: list[Deadline | None] = []
        if self._state in AUTHORIZED_STATES:
            deadlines.append(self._authorization)
        if self._may_report():
            deadlines += [self._next_report, self._usage_due]
        # Sends wait for a PUBACK (publish_acked) when the window is full, not for a timer.
        if self._connected and self._room() > 0:
            for entry in self._outbox:
                if not entry.in_flight:
                    deadlines.append(entry.retry_at or clock.after(0, last))
            if self._pending is not None and not self._pending_in_flight:
                if self._pending_acked:
                    deadlines.append(self._pending_retry_at)
                else:
                    candidates.append(last)
        candidates += [last + clock.remaining(d, last) for d in deadlines if d is not None]
        return max(last, min(candidates))

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
