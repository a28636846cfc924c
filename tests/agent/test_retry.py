"""Backoff delays: exponential, capped, jittered within bounds, from passed-in randomness."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from smartlic.agent.retry import backoff_delay, unit_interval

units = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(st.integers(min_value=0, max_value=10_000), units)
def test_delay_is_between_half_the_ceiling_and_the_ceiling(attempt: int, unit: float) -> None:
    ceiling = min(3600.0, 30.0 * 2.0 ** min(attempt, 40))
    delay = backoff_delay(attempt, base=30.0, cap=3600.0, unit=unit)
    assert ceiling / 2 <= delay <= ceiling


@given(st.integers(min_value=0, max_value=10_000), units)
def test_delay_never_exceeds_the_cap(attempt: int, unit: float) -> None:
    assert backoff_delay(attempt, base=1.0, cap=300.0, unit=unit) <= 300.0


def test_the_ceiling_doubles_with_each_attempt() -> None:
    assert [30.0, 60.0, 120.0, 240.0] == [
        backoff_delay(n, base=30.0, cap=3600.0, unit=1.0) for n in range(4)
    ]


def test_zero_randomness_gives_half_the_ceiling() -> None:
    assert 15.0 == backoff_delay(0, base=30.0, cap=3600.0, unit=0.0)


@given(st.integers(min_value=0, max_value=2**32))
def test_unit_interval_is_in_zero_to_one(seed: int) -> None:
    value = unit_interval(random.Random(seed).randbytes)  # noqa: S311 -- not secret
    assert 0.0 <= value < 1.0


def test_unit_interval_of_all_ones_stays_below_one() -> None:
    assert unit_interval(lambda n: b"\xff" * n) < 1.0
