"""``smartlic-sim``'s command line: listing, usage errors, exit statuses, the JSON report."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from smartlic.simulator.cli import main

if TYPE_CHECKING:
    from pathlib import Path

REQUIRED_KEYS = {
    "devices",
    "reports_sent",
    "reports_answered",
    "reports_lost",
    "reports_double_counted",
    "hostile_sent",
    "hostile_accepted",
    "throughput_rps",
    "latency_ms",
    "states",
}


def test_scenarios_lists_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    assert 0 == main(["scenarios"])
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert ["churn", "growth", "hostile", "outage", "steady", "storm"] == names


def test_an_unknown_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert 2 == main(["run", "--scenario", "tornado"])
    assert "no scenario 'tornado'" in capsys.readouterr().err


def test_a_bad_parameter_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert 2 == main(["run", "--scenario", "steady", "--param", "devices=many"])
    assert "parameter devices" in capsys.readouterr().err


def test_a_foreign_broker_without_a_database_or_token_cannot_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["run", "--scenario", "steady", "--broker", "mqtt://127.0.0.1:9", "--no-progress"])
    assert 3 == code
    assert "pass --db" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.timeout(90)
def test_a_run_writes_the_json_report_and_exits_0_when_clean(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    code = main(
        [
            "run",
            "--scenario",
            "steady",
            "--devices",
            "50",
            "--duration",
            "2",
            "--json",
            str(report),
            "--no-progress",
            "--workdir",
            str(tmp_path / "run"),
        ]
    )
    data = json.loads(report.read_text(encoding="utf-8"))
    assert (0, set(), 0, 0) == (
        code,
        REQUIRED_KEYS - set(data),
        data["reports_lost"],
        data["reports_double_counted"],
    )
    assert {"p50", "p95", "p99"} <= set(data["latency_ms"])
