"""Knobs of one agent core, and the counters it keeps for whoever drives it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from smartlic.agent.errors import LocalAgentError
from smartlic.protocol import Topics

DAY: Final = 86_400


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
    request_refresh: float = 60.0
    """A pending (de)registration request older than this is signed again with a fresh issue
    time before it is re-sent: the collector refuses requests issued outside its clock-skew
    window (300 s by default; SPEC §4), and one kept through an outage must not look like a
    replay. One refused for skew after waiting that long is issued again, not given up."""
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
