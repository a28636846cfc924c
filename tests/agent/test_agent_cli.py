"""The command line: every setting a flag and a TOML key, one-line errors, status output."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from agent_support import T0, UDI, Harness, device_key, new_core
from smartlic.agent import cli
from smartlic.agent.config import KEYS, AgentConfig, build_config, read_config_file
from smartlic.agent.errors import ConfigError, explain
from smartlic.agent.settings import CoreSettings
from smartlic.agent.statedir import KEY_FILE
from smartlic.agent.states import LicenseState
from smartlic.agent.status import status_of
from smartlic.agent.storage import FileStorage, write_private
from smartlic.protocol import ErrorCode

STATUS_KEYS = {"udi", "state", "virtual_account", "tags", "authorization_expires"}
STATUS_KEYS |= {"last_report_at", "outbox"}


def test_every_config_key_is_also_a_flag() -> None:
    parser = cli.build_parser()
    flags = {a.dest for a in parser._actions if a.option_strings}
    assert set(KEYS) <= flags


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('state-dir = "/a"\nbroker = "mqtt://b"\nkeepalive = 30\n')
    config = build_config(read_config_file(path), {"state_dir": "/c", "broker": None})
    assert ("/c", "mqtt://b", 30) == (str(config.state_dir), config.broker, config.keepalive)


def test_an_unknown_config_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('brokre = "mqtt://b"\n')
    with pytest.raises(ConfigError, match="unknown setting 'brokre'"):
        read_config_file(path)


def test_usage_file_and_command_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="not both"):
        AgentConfig(usage_command="x", usage_file=Path("usage.toml"))


def test_a_malformed_udi_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="PRODUCT_ID:SERIAL"):
        build_config({}, {"udi": "no-serial"})


def prepared_state(folder: Path) -> None:
    """A state directory as a registered, authorized agent leaves it."""
    folder.mkdir(exist_ok=True)
    write_private(folder / KEY_FILE, device_key().to_pem())
    harness = Harness(new_core(), storage=FileStorage(folder))  # type: ignore[arg-type]
    harness.script.entitled = {"network-advantage": 10}
    now = time.time()  # `status` measures validity from the real clock
    harness.start(now)
    harness.usage({"network-advantage": 2}, now)
    harness.register(now + 1)


def test_status_json_shows_what_the_issue_asks_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepared_state(tmp_path)
    assert 0 == cli.main(["status", "--json", "--state-dir", str(tmp_path)])
    status = json.loads(capsys.readouterr().out)
    assert STATUS_KEYS <= status.keys()
    assert ("AUTHORIZED", "Default", {"count": 2, "status": "in-compliance"}) == (
        status["state"],
        status["virtual_account"],
        {k: status["tags"]["network-advantage"][k] for k in ("count", "status")},
    )


def test_status_text_names_state_and_tags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepared_state(tmp_path)
    assert 0 == cli.main(["status", "--state-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "AUTHORIZED" in out
    assert "network-advantage: 2 in-compliance" in out


def test_status_without_state_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["status", "--state-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert (1, 1) == (code, err.count("\n"))
    assert err.startswith("smartlic-agent: no agent state in")


def test_a_corrupted_state_is_reported_in_one_line_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepared_state(tmp_path)
    for name in ("state.cbor", "state.cbor.prev"):
        (tmp_path / name).write_bytes(b"\x00" * 10)
    code = cli.main(["status", "--state-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert (1, 1, False) == (code, err.count("\n"), "Traceback" in err)


def test_register_with_a_malformed_token_explains_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        [
            "register",
            "--token",
            "slt1_tooshort",
            "--state-dir",
            str(tmp_path),
            "--udi",
            str(UDI),
            "--broker",
            "mqtt://127.0.0.1:9",
        ]
    )
    err = capsys.readouterr().err
    assert 1 == code
    assert "malformed registration token" in err


def test_register_with_a_malformed_token_leaves_the_state_as_it_was(tmp_path: Path) -> None:
    """The state of a stopped agent stays clean: the next run does not jump its numbers."""
    write_private(tmp_path / KEY_FILE, device_key().to_pem())
    harness = Harness(new_core(), storage=FileStorage(tmp_path))  # type: ignore[arg-type]
    harness.start()
    harness.run(harness.core.stop(T0), T0)
    before = FileStorage(tmp_path).load()
    assert before is not None
    code = cli.main(
        [
            "register",
            "--token",
            "slt1_garbage",
            "--state-dir",
            str(tmp_path),
            "--broker",
            "mqtt://127.0.0.1:9",
        ]
    )
    assert (1, before) == (code, FileStorage(tmp_path).load())


def test_register_with_an_unreadable_tls_file_is_a_config_error_before_any_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = Harness(new_core()).script.token()
    code = cli.main(
        [
            "register",
            "--token",
            token,
            "--state-dir",
            str(tmp_path / "state"),
            "--udi",
            str(UDI),
            "--broker",
            "mqtts://127.0.0.1:9",
            "--tls-ca",
            str(tmp_path / "missing.pem"),
        ]
    )
    err = capsys.readouterr().err
    assert (2, 1, False) == (code, err.count("\n"), (tmp_path / "state").exists())
    assert err.startswith("smartlic-agent: TLS settings cannot be used")


def test_register_without_a_broker_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = Harness(new_core()).script.token()
    code = cli.main(["register", "--token", token, "--state-dir", str(tmp_path), "--udi", str(UDI)])
    assert (2, "smartlic-agent: no broker: give --broker mqtt://HOST:PORT") == (
        code,
        capsys.readouterr().err.split(" (or")[0],
    )


@pytest.mark.parametrize("command", ["register", "run"])
def test_a_first_start_without_a_udi_makes_no_key(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 comes before the state is touched: a retry may still choose the key type."""
    token = ["--token", Harness(new_core()).script.token()] if command == "register" else []
    broker = ["--broker", "mqtt://127.0.0.1:9"] if command == "register" else []
    code = cli.main([command, *token, *broker, "--state-dir", str(tmp_path)])
    assert (2, False) == (code, (tmp_path / KEY_FILE).exists())
    assert capsys.readouterr().err.startswith("smartlic-agent: no UDI")


def test_status_of_an_unreadable_state_file_is_a_read_error_not_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No recovery from the good previous copy: one line naming the file and the OS error."""
    prepared_state(tmp_path)
    (tmp_path / "state.cbor").unlink()
    (tmp_path / "state.cbor").mkdir()  # EISDIR: unreadable even as root, as EACCES is not
    code = cli.main(["status", "--state-dir", str(tmp_path)])
    assert (1, f"smartlic-agent: cannot read {tmp_path / 'state.cbor'}: Is a directory") == (
        code,
        capsys.readouterr().err.split(". Fix the owner or permissions")[0],
    )


def test_status_in_a_file_instead_of_a_directory_does_not_say_move_both_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ENOTDIR is a read error: nothing says the registration must be forgotten."""
    folder = tmp_path / "state"
    folder.write_bytes(b"")
    code = cli.main(["status", "--state-dir", str(folder)])
    err = capsys.readouterr().err
    assert (1, 1, False) == (code, err.count("\n"), "Move both aside" in err)


def test_a_bad_flag_value_exits_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["status", "--key-type", "rsa"])
    assert 2 == exc.value.code
    assert "invalid choice" in capsys.readouterr().err


def test_deregister_force_forgets_the_registration_locally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepared_state(tmp_path)
    code = cli.main(["deregister", "--force", "--state-dir", str(tmp_path)])
    snapshot = FileStorage(tmp_path).load()
    assert snapshot is not None
    assert (0, "EVALUATION") == (code, snapshot.state.value)
    assert "forgot the registration" in capsys.readouterr().out


def test_status_of_a_stopped_agent_shows_an_authorization_that_ended_since(
    tmp_path: Path,
) -> None:
    prepared_state(tmp_path)
    snapshot = FileStorage(tmp_path).load()
    assert snapshot is not None
    assert snapshot.authorization is not None
    later = snapshot.authorization.wall + 1
    status = status_of(snapshot, now=later, evaluation_period=CoreSettings().evaluation_period)
    assert LicenseState.AUTHORIZATION_EXPIRED is status.state


@pytest.mark.parametrize("code", [c for c in ErrorCode if 300 <= c < 400], ids=lambda c: c.name)
def test_every_collector_refusal_code_has_an_explanation(code: ErrorCode) -> None:
    assert not explain(code).startswith("the collector refused the request")
