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
        window = self._settings.window
        room = self._room()
        pending = self._pending
        if pending is not None and not (self._pending_in_flight or self._pending_acked):
            if room <= 0:
                return
            room -= 1
            self._pending_in_flight = window is not None
            self._pending_acked = window is None
            self.counters.publishes += 1
            pending = self._refreshed(pending, now)
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

    def _refreshed(self, pending: PendingRequest, now: float) -> PendingRequest:
        """``pending``, issued again at ``now`` (same request id) when it has grown stale."""
        request = open_message(pending.payload).message
        if not isinstance(request, RegistrationRequest | DeregistrationRequest):
            return pending
        if now - request.issued_at < self._settings.request_refresh:
            return pending
        fresh = dataclasses.replace(request, issued_at=int(now))
        self._pending = dataclasses.replace(pending, payload=seal(fresh, self._key))
        self._dirty = True
        return self._pending

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
