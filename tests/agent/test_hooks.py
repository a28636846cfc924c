"""The state-change hook: real processes, one at a time, in order, killed when overdue."""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
from smartlic.agent.actions import StateChanged
from smartlic.agent.errors import ConfigError
from smartlic.agent.hooks import HookRunner
from smartlic.agent.states import LicenseEvent, LicenseState

if TYPE_CHECKING:
    from collections.abc import Iterator
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


@pytest.fixture
def started_hooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every hook process the runner starts; any left running is killed afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def recording_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        process: subprocess.Popen[bytes] = real_popen(*args, **kwargs)
        started.append(process)
        return process

    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def _slow_hook(tmp_path: Path) -> str:
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(60)\n", encoding="utf-8")
    return f"{sys.executable} {slow}"


def _shut_down_with_a_slow_hook(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, *states: LicenseState
) -> HookRunner:
    """A runner of a 60 s hook told of changes from REGISTERED through ``states``, then given
    0.3 s to finish, its warnings in ``caplog``."""
    runner = HookRunner(_slow_hook(tmp_path), udi=UDI, timeout=60.0)
    for previous, state in itertools.pairwise((LicenseState.REGISTERED, *states)):
        runner.state_changed(_change(previous, state))
    with caplog.at_level(logging.WARNING, logger="smartlic.agent"):
        runner.finish(timeout=0.3)
    return runner


def test_at_shutdown_a_hook_still_running_at_the_deadline_is_killed(
    tmp_path: Path,
    started_hooks: list[subprocess.Popen[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = _shut_down_with_a_slow_hook(tmp_path, caplog, LicenseState.AUTHORIZED)

    assert ([True], False) == ([p.poll() is not None for p in started_hooks], runner.busy)
    assert 1 == sum("still running at shutdown" in r.getMessage() for r in caplog.records)


def test_at_shutdown_a_change_whose_hook_never_ran_is_logged_naming_its_state(
    tmp_path: Path,
    started_hooks: list[subprocess.Popen[bytes]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _shut_down_with_a_slow_hook(
        tmp_path, caplog, LicenseState.AUTHORIZED, LicenseState.OUT_OF_COMPLIANCE
    )

    dropped = f"hook {sys.executable} not run at shutdown: the change to OUT_OF_COMPLIANCE"
    assert 1 == len(started_hooks)
    assert [f"{dropped} (from AUTHORIZED)"] == [
        r.getMessage() for r in caplog.records if "not run" in r.getMessage()
    ]


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


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaps has ended)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:  # noqa: PTH123 -- a /proc read
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("at", ["overrun", "shutdown"])
def test_a_hook_killed_takes_what_it_started_with_it(tmp_path: Path, at: str) -> None:
    """Only the hook itself was killed: a shell script's ``sleep`` (a curl, a child of any
    kind) went on running behind the agent."""
    child = tmp_path / "child.pid"
    script = tmp_path / "hook.sh"
    script.write_text(f"#!/bin/sh\nsleep 1234 &\necho $! > {child}\nwait\n", encoding="utf-8")
    script.chmod(0o755)
    runner = HookRunner(str(script), udi=UDI, timeout=0.3 if at == "overrun" else 60.0)
    runner.state_changed(_change(LicenseState.REGISTERED, LicenseState.AUTHORIZED))
    deadline = time.monotonic() + 5
    while not child.exists() or not child.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pid = int(child.read_text())

    if at == "overrun":
        time.sleep(0.4)
        runner.pump()
    runner.finish(timeout=0.1)

    # SIGKILL takes its moment to reach a process that is not our child.
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(pid)
