"""What a run measures: counters, report → notice latency by phase, and percentiles.

Latency is the agent core's own measure (``ReportAnswered``: ``answered_at - first_sent_at``),
in virtual seconds, turned into real milliseconds by the time scale. Percentiles use the
nearest-rank method (the smallest sample with at least p % of the samples at or below it), so
every figure reported is a latency that was actually observed.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile ``p`` (0 < p ≤ 100) of ``ordered`` (sorted, not empty)."""
    if not ordered:
        raise ValueError("no samples")
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is not in (0, 100]")
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencySummary:
    count: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "p50": round(self.p50, 2),
            "p95": round(self.p95, 2),
            "p99": round(self.p99, 2),
            "max": round(self.max, 2),
            "mean": round(self.mean, 2),
        }


def summarize(samples: Sequence[float]) -> LatencySummary | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return LatencySummary(
        count=len(ordered),
        p50=percentile(ordered, 50),
        p95=percentile(ordered, 95),
        p99=percentile(ordered, 99),
        max=ordered[-1],
        mean=math.fsum(ordered) / len(ordered),
    )


@dataclass(slots=True)
class Phase:
    """A stretch of a run (ramp-up, the scenario's main part, the drain) measured apart."""

    name: str
    started: float
    """Monotonic seconds."""
    ended: float | None = None
    reports_answered: int = 0
    latencies_ms: array[float] = field(default_factory=lambda: array("d"))

    def duration(self, now: float) -> float:
        return (self.ended if self.ended is not None else now) - self.started

    def as_dict(self, now: float) -> dict[str, object]:
        seconds = self.duration(now)
        summary = summarize(self.latencies_ms)
        return {
            "seconds": round(seconds, 3),
            "reports_answered": self.reports_answered,
            "throughput_rps": round(self.reports_answered / seconds, 1) if seconds > 0 else 0.0,
            "latency_ms": summary.as_dict() if summary else None,
        }


@dataclass(slots=True)
class Counters:
    """Fleet-wide totals, kept as the actions of every core are carried out."""

    reports_queued: int = 0
    reports_sent: int = 0
    """Distinct reports handed to MQTT at least once."""
    publishes: int = 0
    reports_answered: int = 0
    reports_superseded: int = 0
    """Retired unanswered because a newer report of the same device was answered."""
    reports_compacted: int = 0
    reports_abandoned: int = 0
    """Dropped from the outbox because the device was deregistered."""
    notices_applied: int = 0
    notices_ignored: int = 0
    registrations: int = 0
    registrations_refused: int = 0
    deregistrations: int = 0
    connects: int = 0
    disconnects: int = 0
    publish_errors: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """Honest reports answered with an error notice, by code."""
    ignored_reasons: Counter[str] = field(default_factory=Counter)
    pushes: Counter[str] = field(default_factory=Counter)
    """Notices applied that answered nothing (pushed), by message type."""


class Metrics:
    """Counters plus phases; latencies go to the current phase and to the whole run."""

    def __init__(self, *, scale: float, now: float) -> None:
        self.scale = scale
        self.counters = Counters()
        self.started = now
        self.phases: list[Phase] = [Phase("setup", now)]
        self.latencies_ms: array[float] = array("d")

    @property
    def phase(self) -> Phase:
        return self.phases[-1]

    def begin(self, name: str, now: float) -> None:
        self.phase.ended = now
        self.phases.append(Phase(name, now))

    def finish(self, now: float) -> None:
        if self.phase.ended is None:
            self.phase.ended = now

    def answered(self, first_sent_at: float | None, answered_at: float) -> None:
        """A report was answered; times are virtual seconds from the core."""
        self.counters.reports_answered += 1
        phase = self.phase
        phase.reports_answered += 1
        if first_sent_at is not None:
            latency = max(0.0, answered_at - first_sent_at) / self.scale * 1000
            phase.latencies_ms.append(latency)
            self.latencies_ms.append(latency)

    def summary(self) -> LatencySummary | None:
        return summarize(self.latencies_ms)

    def phase_named(self, name: str) -> Phase | None:
        """The last phase called ``name``."""
        return next((p for p in reversed(self.phases) if p.name == name), None)
