"""The service's clock: real time, or accelerated time for simulations.

With ``scale`` 3600 an hour of licenses, reports and authorizations passes every second, so a
simulator can play months of term expiries in minutes against a real collector. Virtual time
starts at ``origin`` (default: the real time at start) and runs ``scale`` times faster than
the monotonic clock, so a wall-clock step never moves it backwards.
"""

from __future__ import annotations

import time


class Clock:
    def __init__(self, *, scale: float = 1.0, origin: float | None = None) -> None:
        if scale <= 0:
            message = f"time scale must be positive, not {scale}"
            raise ValueError(message)
        self.scale = scale
        self._real = scale == 1.0 and origin is None
        self._origin = time.time() if origin is None else origin
        self._start = time.monotonic()

    def now(self) -> float:
        """Virtual seconds since the Unix epoch."""
        if self._real:
            return time.time()
        return self._origin + (time.monotonic() - self._start) * self.scale

    def real_seconds(self, virtual: float) -> float:
        """How long to sleep for ``virtual`` seconds to pass."""
        return max(0.0, virtual / self.scale)
