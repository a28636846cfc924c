"""The state-change hook: real processes, one at a time, in order, killed when overdue."""

from __future__ import annotations

import itertools
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
from smartlic.agent.actions import StateChanged
from smartlic.agent.errors import ConfigError
from smartlic.agent.hooks import HookRunner
from smartlic.agent.states import LicenseEvent, LicenseState

if TYPE_CHECKING:
    from pathlib import Path

UDI = "ISR4331/K9:FOC0001"


def _change(previous: LicenseState, state: LicenseState) -> StateChanged:
    return StateChanged(
        previous=previous, state=state, event=LicenseEvent.AUTHORIZATION_RECEIVED, at=0.0
    )


def _recording_hook(tmp_path: Path, *, sleep: float = 0.0) -> tuple[str, Path]:
    """A hook that appends its arguments and environment, as JSON lines, to a file."""
    record = tmp_path / "calls.jsonl"
    script = tmp_path / "hook.py"
    script.write_text(
        "import json, os, sys, time\n"
        "started = time.time()\n"
        f"time.sleep({sleep})\n"
        f"with open({str(record)!r}, 'a') as f:\n"
        "    env = {k: v for k, v in os.environ.items() if k.startswith('SMARTLIC_')}\n"
        "    call = {'argv': sys.argv[1:], 'env': env, 'ran': [started, time.time()]}\n"
        "    f.write(json.dumps(call) + '\\n')\n",
        encoding="utf-8",
    )
    return f"{sys.executable} {script}", record


def _calls(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]


def test_the_hook_gets_the_new_and_previous_state_as_arguments_and_in_its_environment(
    tmp_path: Path,
) -> None:
    command, record = _recording_hook(tmp_path)
    runner = HookRunner(command, udi=UDI, timeout=10.0)

    runner.state_changed(_change(LicenseState.REGISTERED, LicenseState.AUTHORIZED))
    runner.finish(timeout=10.0)

    assert [
        {
            "argv": ["AUTHORIZED", "REGISTERED"],
            "env": {
                "SMARTLIC_STATE": "AUTHORIZED",
                "SMARTLIC_PREVIOUS_STATE": "REGISTERED",
                "SMARTLIC_EVENT": "AUTHORIZATION_RECEIVED",
                "SMARTLIC_UDI": UDI,
            },
        }
    ] == [{k: v for k, v in call.items() if k != "ran"} for call in _calls(record)]


def test_hooks_run_one_at_a_time_in_the_order_of_the_changes(tmp_path: Path) -> None:
    command, record = _recording_hook(tmp_path, sleep=0.2)
    runner = HookRunner(command, udi=UDI, timeout=10.0)
    states = [LicenseState.REGISTERED, LicenseState.AUTHORIZED, LicenseState.OUT_OF_COMPLIANCE]

    for previous, state in itertools.pairwise(states):
        runner.state_changed(_change(previous, state))
    runner.finish(timeout=10.0)
    calls = _calls(record)

    assert [
        [LicenseState.AUTHORIZED.value, LicenseState.REGISTERED.value],
        [LicenseState.OUT_OF_COMPLIANCE.value, LicenseState.AUTHORIZED.value],
    ] == [call["argv"] for call in calls]
    assert calls[0]["ran"][1] <= calls[1]["ran"][0]


def test_a_hook_that_overruns_its_timeout_is_killed_and_the_next_one_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(60)\n", encoding="utf-8")
    runner = HookRunner(f"{sys.executable} {slow}", udi=UDI, timeout=0.3)
    runner.state_changed(_change(LicenseState.REGISTERED, LicenseState.AUTHORIZED))
    runner.state_changed(_change(LicenseState.AUTHORIZED, LicenseState.OUT_OF_COMPLIANCE))

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="smartlic.agent"):
        runner.finish(timeout=10.0)

    assert not runner.busy
    assert time.monotonic() - started < 5.0
    assert 2 == sum("overran" in r.getMessage() for r in caplog.records)


def test_a_hook_that_fails_is_logged_with_its_status(caplog: pytest.LogCaptureFixture) -> None:
    runner = HookRunner(f'{sys.executable} -c "raise SystemExit(3)"', udi=UDI, timeout=10.0)

    with caplog.at_level(logging.WARNING, logger="smartlic.agent"):
        runner.state_changed(_change(LicenseState.REGISTERED, LicenseState.AUTHORIZED))
        runner.finish(timeout=10.0)

    assert ["hook " + sys.executable + " exited with status 3"] == [
        r.getMessage() for r in caplog.records
    ]


def test_a_hook_that_cannot_be_started_is_logged_and_the_agent_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner = HookRunner(str(tmp_path / "missing-hook"), udi=UDI, timeout=10.0)

    with caplog.at_level(logging.ERROR, logger="smartlic.agent"):
        runner.state_changed(_change(LicenseState.REGISTERED, LicenseState.AUTHORIZED))

    assert not runner.busy
    assert 1 == sum("cannot run hook" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("command", "problem"), [("", "hook is empty"), ("hook 'unclosed", "hook: No closing")]
)
def test_a_hook_command_that_cannot_be_split_is_a_configuration_error(
    command: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem):
        HookRunner(command, udi=UDI, timeout=10.0)
