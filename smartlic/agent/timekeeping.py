"""Time as the agent trusts it: a wall clock that may jump, and a use clock that cannot go back.

Routers set their clocks late (no RTC: they boot in 1970 or at the firmware's build date and
jump when NTP answers) and sometimes wrongly, and an operator can set the clock back on
purpose. So every deadline the agent obeys is a :class:`Deadline` with two readings, and it is
reached when *either* is:

* ``wall``: the wall-clock time the collector or the schedule named (SPEC §3 deadlines are
  calendar times, and time the device spent switched off counts for them);
* ``elapsed``: the same span measured on the :class:`UseClock`, which only ever adds the
  forward steps it observes. Setting the clock back cannot extend an evaluation or an
  authorization: the use clock keeps counting.

A forward step longer than ``max_step`` is credited as ``max_step`` only: between two
observations of a running agent little time passes (the core asks to be ticked again within
half ``max_step``: :meth:`UseClock.observe_by`), so a long step is a suspend or a clock being
set, not hours of use — and a router whose clock jumps from 1970 to today must not lose its
90-day evaluation in one step.
"""

from __future__ import annotations

from dataclasses import dataclass

from smartlic.protocol.fields import TIME_MAX


@dataclass(frozen=True, slots=True, kw_only=True)
class Deadline:
    wall: float
    """Seconds since the epoch."""
    elapsed: float
    """Seconds on the use clock."""


class UseClock:
    """Seconds of observed forward time; never decreases. Mutable, one per core."""

    __slots__ = ("elapsed", "max_step", "wall")

    def __init__(
        self, *, elapsed: float = 0.0, wall: float | None = None, max_step: float | None = None
    ) -> None:
        self.elapsed = elapsed
        self.wall = wall
        """The last wall time observed in this run (``None`` until the first observation)."""
        self.max_step = max_step

    def observe(self, now: float) -> float:
        """Take a wall-clock reading; return the seconds credited to the use clock.

        The first reading of a run anchors the clock and credits nothing: time the agent was
        not running is not use. A step backwards re-anchors without crediting.
        """
        previous, self.wall = self.wall, now
        if previous is None or now <= previous:
            return 0.0
        step = now - previous
        if self.max_step is not None:
            step = min(step, self.max_step)
        self.elapsed += step
        return step

    def observe_by(self) -> float | None:
        """The wall time by which the next reading must come for the running time to count.

        Half ``max_step`` after the last reading: readings that come when asked are never a
        step the cap cuts short, so the use clock counts real running time, and one that comes
        up to ``max_step / 2`` late (a busy device) still loses nothing. ``None`` before the
        first reading of a run, or without a cap.
        """
        if self.wall is None or self.max_step is None:
            return None
        return self.wall + self.max_step / 2

    def after(self, seconds: float, now: float) -> Deadline:
        """The deadline ``seconds`` from ``now`` on both clocks."""
        return Deadline(wall=now + seconds, elapsed=self.elapsed + seconds)

    def at(self, wall: float, *, span: float) -> Deadline:
        """A deadline at wall time ``wall``, and no more than ``span`` seconds of use away.

        A signed notice may put its end up to 2**40 s after its issue time: the use-clock
        reading stays at most that too, a time the state file holds (beyond, it would be
        refused as damaged when read back).
        """
        return Deadline(wall=wall, elapsed=min(self.elapsed + max(0.0, span), float(TIME_MAX)))

    def reached(self, deadline: Deadline, now: float) -> bool:
        return now >= deadline.wall or self.elapsed >= deadline.elapsed

    def remaining(self, deadline: Deadline, now: float) -> float:
        """Seconds until ``deadline``, by whichever clock reaches it first (0 when reached)."""
        return max(0.0, min(deadline.wall - now, deadline.elapsed - self.elapsed))
