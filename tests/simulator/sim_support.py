"""Running scenarios from tests: the simulator's own Mosquitto and collector process."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pytest
from smartlic.mqtt.broker import find_mosquitto
from smartlic.simulator.runner import RunOptions, execute
from smartlic.simulator.scenarios import load_scenarios

if TYPE_CHECKING:
    from pathlib import Path

    from smartlic.simulator.report import RunReport


async def play(
    name: str, workdir: Path, *, broker_kind: str = "mosquitto", **values: object
) -> RunReport:
    """Play preset ``name`` with ``values`` changed; the run's files stay in ``workdir``."""
    if broker_kind == "mosquitto" and find_mosquitto() is None:
        pytest.fail("mosquitto is missing: run scripts/bootstrap (or apt-get install mosquitto)")
    scenario = load_scenarios()[name].with_values(values)
    options = RunOptions(
        scenario=scenario,
        broker_kind=broker_kind,
        workdir=workdir,
        progress=False,
        stream=io.StringIO(),
    )
    return await execute(options)


def assert_clean(report: RunReport) -> None:
    """Nothing lost, nothing double-counted, nothing stale, every expectation met."""
    verdict = report.verdict
    assert report.checked_committed
    assert (0, 0, 0, []) == (
        verdict.lost,
        verdict.double_counted,
        verdict.stale_usage,
        report.failures(),
    ), (report.failures(), verdict.examples)
    assert report.reports_answered > 0
