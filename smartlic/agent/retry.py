"""Retry delays: exponential backoff with jitter drawn from randomness the caller passes in.

"Equal jitter" (AWS Architecture Blog, *Exponential Backoff And Jitter*, 2015): the delay is
half the exponential ceiling plus a random share of the other half. Unlike full jitter it never
retries immediately, which matters to thousands of devices coming back after a broker outage,
and the random half still spreads them out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeAlias

Entropy: TypeAlias = Callable[[int], bytes]
"""``entropy(n)`` returns ``n`` random bytes (``os.urandom`` in the daemon, a seeded
``random.Random(...).randbytes`` in tests and the simulator)."""

_UNIT_BYTES: Final = 7
_MANTISSA_BITS: Final = 53
_MAX_DOUBLINGS: Final = 40


def unit_interval(entropy: Entropy) -> float:
    """A number in ``[0, 1)`` made of 53 random bits (a float's mantissa: exact, never 1.0)."""
    bits = int.from_bytes(entropy(_UNIT_BYTES), "big") >> (8 * _UNIT_BYTES - _MANTISSA_BITS)
    return bits / float(1 << _MANTISSA_BITS)


def backoff_delay(attempt: int, *, base: float, cap: float, unit: float) -> float:
    """The wait before retry number ``attempt`` (0 for the first), ``unit`` in ``[0, 1)``.

    Always within ``[ceiling / 2, ceiling]`` where ``ceiling = min(cap, base * 2**attempt)``.
    """
    ceiling = min(cap, base * 2.0 ** min(max(attempt, 0), _MAX_DOUBLINGS))
    return ceiling / 2 + unit * ceiling / 2
