"""End to end: scenarios against a real Mosquitto and a real collector process.

Each run starts its own broker and ``smartlic-collector run``, plays a scenario with the
agent's core in every virtual device, and reads the collector's committed state: nothing may
be lost or double-counted, and every hostile message must be refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from smartlic.simulator.hostile import HostileKind

from .sim_support import assert_clean, play

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = [pytest.mark.slow, pytest.mark.broker]


@pytest.mark.timeout(90)
async def test_a_steady_fleet_of_500_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path,
) -> None:
    report = await play("steady", tmp_path, devices=500, duration=6)
    assert_clean(report)
    assert ({"AUTHORIZED": 500}, 500) == (report.states, report.connected)


@pytest.mark.timeout(120)
async def test_growth_goes_out_of_compliance_and_back_twice(tmp_path: Path) -> None:
    """Partner order delivered, then a trial expires by the clock and licenses move in."""
    report = await play("growth", tmp_path, devices=100, term_hours=6)
    assert_clean(report)
    assert ({"AUTHORIZED": 100}, 7) == (report.states, len(report.expectations))
    assert {"AUTHORIZATION", "OUT_OF_COMPLIANCE"} <= set(report.extra["pushes"])


@pytest.mark.timeout(120)
async def test_a_broker_restart_mid_run_loses_nothing(tmp_path: Path) -> None:
    report = await play("outage", tmp_path, devices=200, duration=10)
    assert_clean(report)
    assert report.extra["connects"] >= 2 * 200


@pytest.mark.timeout(120)
async def test_a_broker_killed_mid_run_loses_nothing_either(tmp_path: Path) -> None:
    """SIGKILL: the broker loses what it had not saved; the devices send it again."""
    report = await play("outage", tmp_path, devices=150, duration=8, outage_kill=True)
    assert_clean(report)


@pytest.mark.timeout(90)
async def test_every_hostile_message_is_refused(tmp_path: Path) -> None:
    report = await play("hostile", tmp_path, devices=100, duration=6)
    assert_clean(report)
    hostile_devices = 10
    assert {str(k): (hostile_devices, 0) for k in HostileKind} == report.hostile


@pytest.mark.timeout(90)
async def test_a_fleet_that_is_all_hostile_aims_its_wrong_topic_reports_at_others(
    tmp_path: Path,
) -> None:
    """A device's report on its own uplink is a valid one: with no honest device to aim at,
    an attacker once picked itself, was accepted, and spent its sequence numbers."""
    report = await play(
        "hostile",
        tmp_path,
        devices=4,
        duration=3,
        hostile_share=1,
        hostile_kinds=("wrong_topic", "forged_notice"),
        hostile_each=2,
    )
    assert_clean(report)
    assert {"wrong_topic": (8, 0), "forged_notice": (8, 0)} == report.hostile


@pytest.mark.timeout(90)
async def test_a_hostile_share_of_zero_sends_nothing_hostile(tmp_path: Path) -> None:
    report = await play("hostile", tmp_path, devices=10, duration=2, hostile_share=0)
    assert_clean(report)
    assert 0 == sum(sent for sent, _ in report.hostile.values())


@pytest.mark.timeout(90)
async def test_a_reconnection_storm_loses_nothing(tmp_path: Path) -> None:
    report = await play("storm", tmp_path, devices=300, duration=6, storms=1)
    assert_clean(report)


@pytest.mark.timeout(90)
async def test_devices_joining_leaving_and_moving_are_counted_where_they_are(
    tmp_path: Path,
) -> None:
    report = await play("churn", tmp_path, devices=200, duration=6, churn_every=2)
    assert_clean(report)
    assert report.extra["deregistrations"] > 0
