"""Scenario presets from TOML, and parameters from the command line."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from smartlic.simulator.scenarios import (
    STORIES,
    Parameters,
    ScenarioError,
    convert,
    load_scenarios,
    parse_assignment,
    parse_scenarios,
)
from smartlic.simulator.stories import STORY_CLASSES

if TYPE_CHECKING:
    from pathlib import Path


def test_every_story_the_issue_names_has_a_packaged_preset() -> None:
    assert set(STORIES) == set(load_scenarios())


def test_every_story_name_has_a_story_class() -> None:
    assert set(STORIES) == set(STORY_CLASSES)


def test_a_preset_overrides_the_default_parameters() -> None:
    scenarios = parse_scenarios('[quick]\nstory = "steady"\ndevices = 7\ntime_scale = 2.5\n')
    quick = scenarios["quick"]
    assert ("steady", 7, 2.5, Parameters().rate) == (
        quick.story,
        quick.parameters.devices,
        quick.parameters.time_scale,
        quick.parameters.rate,
    )


def test_a_preset_without_a_story_plays_the_story_of_its_name() -> None:
    assert "outage" == parse_scenarios("[outage]\ndevices = 3\n")["outage"].story


def test_an_unknown_key_is_refused_with_its_name() -> None:
    with pytest.raises(ScenarioError, match="unknown parameter 'devcies'"):
        parse_scenarios('[x]\nstory = "steady"\ndevcies = 3\n')


def test_an_unknown_story_is_refused() -> None:
    with pytest.raises(ScenarioError, match="story 'tornado'"):
        parse_scenarios('[x]\nstory = "tornado"\n')


def test_a_value_of_the_wrong_type_is_refused_with_the_parameter_name() -> None:
    with pytest.raises(ScenarioError, match="parameter devices"):
        parse_scenarios('[x]\ndevices = "many"\nstory = "steady"\n')


def test_invalid_toml_is_refused_with_where_it_came_from() -> None:
    with pytest.raises(ScenarioError, match=r"mine\.toml is not valid TOML"):
        parse_scenarios("[x", where="mine.toml")


def test_a_file_of_presets_adds_to_and_replaces_the_packaged_ones(tmp_path: Path) -> None:
    extra = tmp_path / "more.toml"
    extra.write_text('[steady]\ndevices = 9\n[mine]\nstory = "storm"\n', encoding="utf-8")
    scenarios = load_scenarios(extra)
    assert (9, "storm") == (scenarios["steady"].parameters.devices, scenarios["mine"].story)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("devices", "2000", 2000),
        ("time_scale", "3600", 3600.0),
        ("outage_kill", "yes", True),
        ("outage_kill", "false", False),
        ("protocol", "3.1.1", "3.1.1"),
        ("hostile_kinds", "forged, garbage", ("forged", "garbage")),
    ],
)
def test_text_from_the_command_line_becomes_the_parameters_type(
    name: str, text: str, expected: object
) -> None:
    assert expected == convert(name, text)


def test_a_fractional_device_count_is_refused() -> None:
    with pytest.raises(ScenarioError, match="parameter devices"):
        convert("devices", 2.5)


def test_a_param_assignment_splits_at_the_first_equals_and_accepts_dashes() -> None:
    assert ("time_scale", "60") == parse_assignment("time-scale=60")


def test_a_param_without_a_value_is_refused() -> None:
    with pytest.raises(ScenarioError, match="KEY=VALUE"):
        parse_assignment("devices")


def test_a_report_interval_under_the_collectors_minimum_is_refused() -> None:
    with pytest.raises(ScenarioError, match="report_interval"):
        Parameters().replace({"report_interval": 30})


def test_an_unknown_hostile_kind_is_refused() -> None:
    with pytest.raises(ScenarioError, match="unknown hostile kinds"):
        Parameters().replace({"hostile_kinds": "forged,nuclear"})


def test_a_share_above_one_is_refused() -> None:
    with pytest.raises(ScenarioError, match="hostile_share"):
        Parameters().replace({"hostile_share": 1.5})


def test_churning_every_zero_seconds_is_refused() -> None:
    """It divides the run into rounds: zero used to end in a ZeroDivisionError."""
    with pytest.raises(ScenarioError, match="churn_every must be positive"):
        Parameters().replace({"churn_every": 0})


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_a_number_that_is_negative_or_not_finite_is_refused_with_its_name(value: str) -> None:
    with pytest.raises(ScenarioError, match="drain must be a finite number, at least 0"):
        Parameters().replace({"drain": value})


def test_a_keepalive_beyond_mqtts_two_bytes_is_refused() -> None:
    """paho failed every device's connect on it, and the run waited a minute for nothing."""
    with pytest.raises(ScenarioError, match="keepalive must be at most 65535"):
        Parameters().replace({"keepalive": 65_536})


@pytest.mark.parametrize("name", ["storms", "hostile_each"])
def test_a_story_asked_to_do_its_thing_zero_times_is_refused(name: str) -> None:
    """A storm run without a storm, or hostile devices sending nothing, passed vacuously."""
    with pytest.raises(ScenarioError, match=f"{name} must be positive"):
        Parameters().replace({name: 0})


def test_no_hostile_kind_at_all_is_refused() -> None:
    with pytest.raises(ScenarioError, match="hostile_kinds must name at least one"):
        Parameters().replace({"hostile_kinds": ""})
