"""Percentiles and the latency the fleet reports."""

from __future__ import annotations

import pytest
from smartlic.simulator.metrics import Metrics, percentile, summarize


def test_the_median_of_an_odd_count_is_the_middle_sample() -> None:
    assert 3.0 == percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50)


def test_a_nearest_rank_percentile_is_always_an_observed_sample() -> None:
    """p95 of 1..10 is the 10th sample (rank ceil(9.5) = 10), not an interpolation."""
    samples = [float(n) for n in range(1, 11)]
    assert 10.0 == percentile(samples, 95)


def test_p99_of_a_hundred_samples_is_the_99th() -> None:
    samples = [float(n) for n in range(1, 101)]
    assert 99.0 == percentile(samples, 99)


def test_p100_is_the_largest_sample() -> None:
    assert 7.0 == percentile([1.0, 7.0], 100)


@pytest.mark.parametrize("p", [0, -1, 100.5])
def test_a_percentile_outside_0_to_100_is_refused(p: float) -> None:
    with pytest.raises(ValueError, match="not in"):
        percentile([1.0], p)


def test_there_is_no_percentile_of_no_samples() -> None:
    with pytest.raises(ValueError, match="no samples"):
        percentile([], 50)


def test_a_summary_of_no_samples_is_none() -> None:
    assert None is summarize([])


def test_a_summary_sorts_its_samples_first() -> None:
    summary = summarize([30.0, 10.0, 20.0])
    assert summary is not None
    assert (3, 20.0, 30.0, 30.0, 30.0, 20.0) == (
        summary.count,
        summary.p50,
        summary.p95,
        summary.p99,
        summary.max,
        summary.mean,
    )


def test_latency_in_virtual_seconds_is_reported_in_real_milliseconds() -> None:
    """At x3600, an answer 36 virtual seconds after the report took 10 real ms."""
    metrics = Metrics(scale=3600, now=0.0)
    metrics.answered(first_sent_at=1000.0, answered_at=1036.0)
    assert [10.0] == list(metrics.latencies_ms)


def test_an_answer_to_a_report_sent_by_an_earlier_run_counts_without_a_latency() -> None:
    metrics = Metrics(scale=1, now=0.0)
    metrics.answered(first_sent_at=None, answered_at=5.0)
    assert (1, []) == (metrics.counters.reports_answered, list(metrics.latencies_ms))


def test_latencies_go_to_the_phase_they_were_measured_in() -> None:
    metrics = Metrics(scale=1, now=0.0)
    metrics.answered(first_sent_at=0.0, answered_at=0.001)
    metrics.begin("main", 1.0)
    metrics.answered(first_sent_at=0.0, answered_at=0.002)
    main = metrics.phase_named("main")
    assert main is not None
    assert ([2.0], 1) == (list(main.latencies_ms), main.reports_answered)
