"""Virtual time: the fleet's clock, accelerated like the collector's, and aligned with it.

With ``scale`` 3600 an hour passes every real second, so term licenses expire and daily reports
come due within a run of minutes. The collector runs the same kind of clock
(``--time-scale``/``--time-origin``), but it starts in another process at another instant, so
the two would disagree by (start-up delay x scale) — an hour of virtual time per real second at
3600. :meth:`VirtualClock.align` removes that: the simulator asks the collector for the time
(a clock probe, see ``infra.py``) and moves its own clock onto the collector's, as NTP would.

Every core of the fleet gets ``now`` from here; real delays (sleeps, timeouts) come from
:meth:`VirtualClock.real_delay`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


class VirtualClock:
    """Virtual epoch seconds running ``scale`` times faster than the monotonic clock."""

    __slots__ = ("_monotonic", "_origin", "_start", "offset", "scale")

    def __init__(
        self,
        *,
        scale: float = 1.0,
        origin: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if scale <= 0:
            raise ValueError(f"the time scale must be positive, not {scale}")
        self.scale = scale
        self._monotonic = monotonic
        self._start = monotonic()
        self._origin = wall() if origin is None else origin
        self.offset = 0.0
        """Virtual seconds added by :meth:`align`."""

    @property
    def origin(self) -> float:
        """The virtual time when the clock started (before any alignment)."""
        return self._origin

    def now(self) -> float:
        return self.at(self._monotonic())

    def at(self, monotonic: float) -> float:
        """The virtual time at a reading of the monotonic clock."""
        return self._origin + (monotonic - self._start) * self.scale + self.offset

    def real_delay(self, until: float) -> float:
        """Real seconds from now until virtual time ``until`` (0 when it has passed)."""
        return max(0.0, (until - self.now()) / self.scale)

    def real_seconds(self, virtual: float) -> float:
        """How long ``virtual`` seconds last in real time."""
        return virtual / self.scale

    def virtual_seconds(self, real: float) -> float:
        return real * self.scale

    def align(self, reading: ClockReading) -> float:
        """Move onto another clock, from one reading of it; the correction made (virtual s)."""
        correction = reading.estimate - self.at(reading.midpoint)
        self.offset += correction
        return correction


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockReading:
    """One look at a remote clock: asked at ``sent``, answered at ``received`` (monotonic).

    The remote clock said ``reported`` (whole seconds, truncated) somewhere in between. Taking
    the midpoint of the round trip and half a second for the truncation, the estimate is off by
    at most half the round trip (in virtual seconds) plus half a second: :attr:`error`.
    """

    sent: float
    received: float
    reported: int
    scale: float

    @property
    def midpoint(self) -> float:
        return (self.sent + self.received) / 2

    @property
    def estimate(self) -> float:
        return self.reported + 0.5

    @property
    def error(self) -> float:
        return (self.received - self.sent) / 2 * self.scale + 0.5


def best_reading(readings: list[ClockReading]) -> ClockReading:
    """The reading with the smallest error (the shortest round trip), as NTP picks."""
    if not readings:
        raise ValueError("no clock readings to choose from")
    return min(readings, key=lambda r: r.error)
