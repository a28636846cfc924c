"""``deregister --force``: the registration forgotten locally, saved as a clean stop saves it."""

from __future__ import annotations

import stat
import time
from typing import TYPE_CHECKING

import pytest
from agent_support import UDI, Harness, device_key, new_core, restore
from smartlic.agent import cli
from smartlic.agent.settings import CoreSettings
from smartlic.agent.snapshot import decode_snapshot
from smartlic.agent.statedir import KEY_FILE
from smartlic.agent.storage import FileStorage, write_private

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from smartlic.agent.snapshot import Snapshot

SEQ_JUMP = CoreSettings().seq_jump


def registered_state(folder: Path, *, stopped: bool) -> None:
    """A registered, authorized agent's directory: ``stopped`` cleanly, or left by a crash."""
    folder.mkdir(exist_ok=True)
    write_private(folder / KEY_FILE, device_key().to_pem())
    harness = Harness(new_core(), storage=FileStorage(folder))  # type: ignore[arg-type]
    now = time.time()
    harness.start(now)
    harness.register(now + 1)
    if stopped:
        harness.run(harness.core.stop(now + 2), now + 2)


def crashed(folder: Path) -> Snapshot:
    """A state left by a crash; returns the snapshot on disk."""
    registered_state(folder, stopped=False)
    snapshot = FileStorage(folder).load()
    assert snapshot is not None
    return snapshot


def recovered(folder: Path) -> Snapshot:
    """A state whose current file is damaged; returns the previous copy it recovers from."""
    registered_state(folder, stopped=True)
    (folder / "state.cbor").write_bytes(b"\x00" * 10)
    return decode_snapshot((folder / "state.cbor.prev").read_bytes())


UNCLEAN = {"after a crash": crashed, "recovered from the previous copy": recovered}


def force(folder: Path, *extra: str) -> int:
    return cli.main(["deregister", "--force", "--state-dir", str(folder), *extra])


def saved(folder: Path) -> Snapshot:
    snapshot = FileStorage(folder).load()
    assert snapshot is not None
    return snapshot


@pytest.mark.parametrize("make", UNCLEAN.values(), ids=UNCLEAN.keys())
def test_deregister_force_on_an_unclean_state_saves_it_clean(
    tmp_path: Path, make: Callable[[Path], Snapshot]
) -> None:
    """The next start does not warn that --force "did not stop cleanly"."""
    make(tmp_path)
    assert 0 == force(tmp_path)
    assert True is saved(tmp_path).clean


@pytest.mark.parametrize("make", UNCLEAN.values(), ids=UNCLEAN.keys())
def test_deregister_force_on_an_unclean_state_jumps_the_numbers_only_once(
    tmp_path: Path, make: Callable[[Path], Snapshot]
) -> None:
    """The jump --force made for the unclean state is not made again by the next start."""
    before = make(tmp_path)
    assert 0 == force(tmp_path)
    next_start = restore(saved(tmp_path))
    assert before.next_seq + SEQ_JUMP == next_start.snapshot().next_seq


def _hook(tmp_path: Path, line: str) -> Path:
    """A registered, stopped state in ``tmp_path/state``, and a hook script running ``line``."""
    registered_state(tmp_path / "state", stopped=True)
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\n{line}\n")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    return hook


def test_deregister_force_runs_the_hook_for_the_state_change(tmp_path: Path) -> None:
    """The hook gets the new and previous state and the event, as the daemon runs it."""
    out = tmp_path / "hook.out"
    hook = _hook(tmp_path, f'echo "$@ $SMARTLIC_EVENT $SMARTLIC_UDI" > {out}')
    assert 0 == force(tmp_path / "state", "--hook", str(hook))
    ran = out.read_text() if out.exists() else "(the hook did not run)"
    assert f"EVALUATION AUTHORIZED DEREGISTERED {UDI}\n" == ran


def test_deregister_force_runs_the_hook_after_the_state_is_saved(tmp_path: Path) -> None:
    """The hook may read the new state (``status --json``): it is on disk when it runs."""
    out = tmp_path / "hook.out"
    hook = _hook(tmp_path, f"cp {tmp_path / 'state' / 'state.cbor'} {out}")
    assert 0 == force(tmp_path / "state", "--hook", str(hook))
    assert "EVALUATION" == decode_snapshot(out.read_bytes()).state.value


@pytest.mark.parametrize("force_flag", [["--force"], []], ids=["--force", "without --force"])
def test_deregister_on_an_empty_directory_makes_no_key(
    tmp_path: Path, force_flag: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing to deregister: refused (exit 1) with the directory as it was, no key in it."""
    argv = ["deregister", *force_flag, "--state-dir", str(tmp_path), "--udi", str(UDI)]
    code = cli.main(argv)
    assert (1, False) == (code, (tmp_path / KEY_FILE).exists())
    assert capsys.readouterr().err.startswith("smartlic-agent: no agent state in")
