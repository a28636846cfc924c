"""Virtual time, and aligning it with the collector's."""

from __future__ import annotations

import pytest
from smartlic.simulator.clock import ClockReading, VirtualClock, best_reading


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_virtual_time_starts_at_the_origin() -> None:
    clock = VirtualClock(scale=60, origin=1_000_000, monotonic=FakeMonotonic())
    assert 1_000_000 == clock.now()


def test_virtual_time_runs_scale_times_faster_than_real_time() -> None:
    real = FakeMonotonic()
    clock = VirtualClock(scale=3600, origin=0, monotonic=real)
    real.now += 2.0
    assert 7200 == clock.now()


def test_without_an_origin_virtual_time_starts_at_the_wall_clock() -> None:
    clock = VirtualClock(scale=10, monotonic=FakeMonotonic(), wall=lambda: 5_000.0)
    assert 5_000.0 == clock.now()


def test_a_real_delay_is_the_virtual_span_divided_by_the_scale() -> None:
    clock = VirtualClock(scale=100, origin=0, monotonic=FakeMonotonic())
    assert 2.5 == clock.real_delay(250)


def test_a_virtual_time_already_passed_is_no_delay() -> None:
    clock = VirtualClock(scale=100, origin=1_000, monotonic=FakeMonotonic())
    assert 0.0 == clock.real_delay(10)


def test_a_scale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        VirtualClock(scale=0)


def test_aligning_moves_the_clock_onto_the_remote_one_at_the_round_trip_midpoint() -> None:
    """Asked at 100, answered at 102 (monotonic), the remote said 50,000 (whole seconds)."""
    real = FakeMonotonic()
    clock = VirtualClock(scale=10, origin=0, monotonic=real)
    reading = ClockReading(sent=100.0, received=102.0, reported=50_000, scale=10)
    clock.align(reading)
    assert 50_000.5 == clock.at(101.0)


def test_a_reading_is_off_by_half_the_round_trip_in_virtual_seconds_plus_half_a_second() -> None:
    reading = ClockReading(sent=0.0, received=0.01, reported=0, scale=3600)
    assert 18.5 == pytest.approx(reading.error)


def test_the_best_reading_is_the_one_with_the_shortest_round_trip() -> None:
    slow = ClockReading(sent=0.0, received=0.5, reported=0, scale=1)
    fast = ClockReading(sent=1.0, received=1.01, reported=1, scale=1)
    assert fast is best_reading([slow, fast])
