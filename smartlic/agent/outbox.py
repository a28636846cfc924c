"""The durable outbox: reports kept until the collector's signed answer for them arrives.

Every report is a complete statement of the device's usage (SPEC §3 sums each device's *most
recent* counts), so a newer report supersedes the older ones. That gives the two rules that keep
the outbox bounded without losing anything that matters:

* when it holds more than ``limit`` reports, the oldest go first — never the latest;
* an answer to report ``n`` also retires every report older than ``n``: the collector has
  accepted a newer sequence number, so it would refuse them as replays anyway.

The entries are mutable (retry bookkeeping changes on every send); :meth:`Outbox.stored` gives
the frozen form that goes into a snapshot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartlic.agent.snapshot import StoredReport

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from smartlic.agent.timekeeping import Deadline


class OutboxEntry:
    __slots__ = (
        "attempts",
        "created_at",
        "first_sent_at",
        "in_flight",
        "payload",
        "retry_at",
        "seq",
    )

    def __init__(self, *, seq: int, created_at: float, payload: bytes) -> None:
        self.seq = seq
        self.created_at = created_at
        self.payload = payload
        self.attempts = 0
        """Transmissions so far in this run."""
        self.in_flight = False
        """Handed to MQTT and not yet acknowledged by the broker (PUBACK)."""
        self.retry_at: Deadline | None = None
        """When to send again if no answer came; ``None``: send as soon as possible."""
        self.first_sent_at: float | None = None


class Outbox:
    __slots__ = ("_entries", "limit")

    def __init__(self, limit: int, stored: Iterable[StoredReport] = ()) -> None:
        if limit < 1:
            raise ValueError("the outbox must hold at least the latest report")
        self.limit = limit
        self._entries = [
            OutboxEntry(seq=r.seq, created_at=r.created_at, payload=r.payload)
            for r in sorted(stored, key=lambda r: r.seq)
        ]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[OutboxEntry]:
        return iter(self._entries)

    def __contains__(self, seq: object) -> bool:
        return any(e.seq == seq for e in self._entries)

    @property
    def latest(self) -> OutboxEntry | None:
        return self._entries[-1] if self._entries else None

    def get(self, seq: int) -> OutboxEntry | None:
        for entry in self._entries:
            if entry.seq == seq:
                return entry
        return None

    def add(self, entry: OutboxEntry) -> list[OutboxEntry]:
        """Append the newest report; return the oldest ones compacted away to stay in bounds."""
        if self._entries and entry.seq <= self._entries[-1].seq:
            raise ValueError(f"report {entry.seq} is not newer than {self._entries[-1].seq}")
        self._entries.append(entry)
        excess = len(self._entries) - self.limit
        if excess <= 0:
            return []
        dropped, self._entries = self._entries[:excess], self._entries[excess:]
        return dropped

    def answered(self, seq: int) -> tuple[OutboxEntry | None, list[OutboxEntry]]:
        """Remove report ``seq`` and every older one; return it and the older ones."""
        entry = self.get(seq)
        if entry is None:
            return None, []
        older = [e for e in self._entries if e.seq < seq]
        self._entries = [e for e in self._entries if e.seq > seq]
        return entry, older

    def clear(self) -> list[OutboxEntry]:
        dropped, self._entries = self._entries, []
        return dropped

    def stored(self) -> tuple[StoredReport, ...]:
        return tuple(
            StoredReport(seq=e.seq, created_at=e.created_at, payload=e.payload)
            for e in self._entries
        )
