"""Reports out: queue the one that is due, and send what the in-flight window allows.

Each report gets the next sequence number and enters the outbox before anything is sent (the
:class:`Persist` that :meth:`Device._finish` puts first carries it). Each transmission sets a
retry deadline with exponential backoff and jitter; the answer, when it comes, retires the
report (``replies.py``). While connected, at most ``window`` publishes await their PUBACK.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from smartlic.agent.actions import Publish, ReportQueued
from smartlic.agent.device import Device
from smartlic.agent.outbox import OutboxEntry
from smartlic.agent.retry import backoff_delay, unit_interval
from smartlic.protocol import (
    DeregistrationRequest,
    RegistrationRequest,
    UsageReport,
    open_message,
    seal,
)
from smartlic.protocol.fields import MAX_TAGS, PERIOD_MAX

if TYPE_CHECKING:
    from smartlic.agent.actions import Action
    from smartlic.agent.snapshot import PendingRequest
    from smartlic.agent.timekeeping import Deadline


def _zeros(payload: bytes) -> list[str]:
    """The tags an outbox report (our own, already checked) states as 0."""
    report = open_message(payload).message
    if not isinstance(report, UsageReport):
        return []
    return [tag for tag, count in report.counts.items() if count == 0]


class Reporting(Device):
    __slots__ = ()

    def _pump(self, now: float, out: list[Action]) -> None:
        """Queue the report that is due, then send what the window allows."""
        clock = self._clock
        if self._may_report() and any(
            d is not None and clock.reached(d, now) for d in (self._next_report, self._usage_due)
        ):
            self._queue_report(now, out)
        if not self._connected:
            return
        room = self._room()
        pending = self._pending
        if pending is not None and self._pending_due(now):
            if room <= 0:
                return
            room -= 1
            out.append(self._send_pending(pending, now))
        for entry in self._outbox:
            if room <= 0:
                break
            if entry.in_flight or (entry.retry_at and not clock.reached(entry.retry_at, now)):
                continue
            room -= 1
            out.append(self._send(entry, now))

    def _pending_due(self, now: float) -> bool:
        """Whether the pending request goes (again) now: not yet sent on this connection, or
        unanswered past its retry time (a broker may lose it, e.g. in the gap before a
        restarted Mosquitto has the collector's shared subscription again)."""
        if self._pending_in_flight:
            return False
        if not self._pending_acked:
            return True
        retry_at = self._pending_retry_at
        return retry_at is not None and self._clock.reached(retry_at, now)

    def _send_pending(self, pending: PendingRequest, now: float) -> Publish:
        s = self._settings
        self._pending_in_flight = s.window is not None
        self._pending_acked = s.window is None
        self._pending_attempts += 1
        self._pending_retry_at = self._retry_deadline(self._pending_attempts, now)
        self.counters.publishes += 1
        stale = self._stale_request(now)
        if stale is not None:
            pending = self._reissued(pending, stale, now)
        # Saved before it goes: after a crash, a refusal of this copy must still be known
        # for one of the copies sent (Replies._refused_for_waiting).
        pending = self._pending = dataclasses.replace(pending, copies=pending.copies + 1)
        self._dirty = True
        return Publish(
            topic=self.uplink,
            payload=pending.payload,
            attempt=self._pending_attempts,
            request_id=pending.request_id,
        )

    def _retry_deadline(self, attempts: int, now: float) -> Deadline:
        """When a publish sent for the ``attempts``-th time goes again if still unanswered."""
        s = self._settings
        unit = unit_interval(self._entropy)
        delay = backoff_delay(attempts - 1, base=s.retry_base, cap=s.retry_cap, unit=unit)
        return self._clock.after(delay, now)

    def _reissued(
        self,
        pending: PendingRequest,
        request: RegistrationRequest | DeregistrationRequest,
        now: float,
    ) -> PendingRequest:
        """``pending`` signed again, issued at ``now``: the same request (the same id), so an
        answer to any copy is its answer, however late; a clock-skew refusal is taken for an
        older copy's while older copies are out (``Replies._refused_for_waiting``)."""
        fresh = dataclasses.replace(request, issued_at=int(now))
        self._pending = dataclasses.replace(
            pending,
            payload=seal(fresh, self._key),
            copies=0,
            older_copies=pending.older_copies + pending.copies,
        )
        self._dirty = True
        return self._pending

    def _send(self, entry: OutboxEntry, now: float) -> Publish:
        s = self._settings
        entry.attempts += 1
        entry.in_flight = s.window is not None
        if entry.first_sent_at is None:
            entry.first_sent_at = now
        entry.retry_at = self._retry_deadline(entry.attempts, now)
        self.counters.publishes += 1
        return Publish(
            topic=self.uplink, payload=entry.payload, attempt=entry.attempts, seq=entry.seq
        )

    def _queue_report(self, now: float, out: list[Action]) -> None:
        # A tag no longer in use is reported as 0, so the collector stops counting it; a
        # report carries at most MAX_TAGS tags, and zeros that do not fit wait their turn.
        # A zero still unanswered in the outbox rides along again: the report that carried it
        # may yet be compacted away, and then only a later report can tell the collector.
        unanswered = {tag for entry in self._outbox for tag in _zeros(entry.payload)}
        gone = sorted(tag for tag in self._reported.keys() | unanswered if tag not in self._usage)
        room = max(0, MAX_TAGS - len(self._usage))
        counts = dict.fromkeys(gone[:room], 0) | self._usage
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
        waiting = {tag: self._reported[tag] for tag in gone[room:]}
        self._reported = {tag: n for tag, n in counts.items() if n} | waiting
        self._usage_due = self._usage_since = None
        interval = self._report_interval or self._settings.default_report_interval
        self._next_report = self._clock.after(interval, now)
        self._last_report_at = now
        self._dirty = True
        self.counters.reports_queued += 1
        out.append(ReportQueued(seq=seq, counts=counts, at=now))
