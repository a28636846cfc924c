"""The final report: pass or fail, and what it says."""

from __future__ import annotations

from smartlic.simulator.checks import Verdict
from smartlic.simulator.metrics import summarize
from smartlic.simulator.report import RunReport
from smartlic.simulator.stories import Expectation


def report(
    verdict: Verdict | None = None,
    hostile: dict[str, tuple[int, int]] | None = None,
    expectations: list[Expectation] | None = None,
) -> RunReport:
    return RunReport(
        scenario="steady",
        story="steady",
        parameters={"time_scale": 30},
        broker="mosquitto",
        protocol="5",
        devices=2,
        connect_seconds=0.5,
        connected=2,
        reports_sent=4,
        reports_answered=4,
        verdict=verdict or Verdict(),
        checked_committed=True,
        throughput_rps=8.0,
        latency=summarize([1.0, 2.0, 3.0, 4.0]),
        phases={},
        states={"AUTHORIZED": 2},
        hostile=hostile or {},
        expectations=expectations or [],
    )


def test_a_clean_run_passes_with_exit_status_0() -> None:
    clean = report()
    assert (True, 0, "PASS") == (clean.ok, clean.exit_code, clean.render().split()[-1])


def test_a_lost_report_fails_the_run() -> None:
    failed = report(Verdict(lost=1))
    assert (1, ["1 report(s) lost"]) == (failed.exit_code, failed.failures())


def test_a_double_counted_report_fails_the_run() -> None:
    assert 1 == report(Verdict(pool_mismatches=1)).exit_code


def test_a_hostile_message_accepted_fails_the_run() -> None:
    failed = report(hostile={"forged": (3, 1)})
    assert (1, 3, 1) == (failed.exit_code, failed.hostile_sent, failed.hostile_accepted)


def test_an_unmet_expectation_fails_the_run() -> None:
    failed = report(expectations=[Expectation("Engineering goes out of compliance", met=False)])
    assert ["expected: Engineering goes out of compliance"] == failed.failures()


def test_an_unmet_expectation_names_its_detail() -> None:
    """A failed run says what it saw, not only what it expected (e.g. the devices' states)."""
    failed = report(
        expectations=[Expectation("3 joined are authorized", met=False, detail="{'NEW': 1}")]
    )
    assert ["expected: 3 joined are authorized ({'NEW': 1})"] == failed.failures()


def test_the_json_report_carries_the_issues_keys_at_the_top() -> None:
    data = report().as_json()
    assert (2, 4, 4, 0, 0, 0, 0, 8.0, 2.0, {"AUTHORIZED": 2}) == (
        data["devices"],
        data["reports_sent"],
        data["reports_answered"],
        data["reports_lost"],
        data["reports_double_counted"],
        data["hostile_sent"],
        data["hostile_accepted"],
        data["throughput_rps"],
        data["latency_ms"]["p50"],  # type: ignore[index]  # a dict here
        data["states"],
    )
