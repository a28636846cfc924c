"""``smartlic-collector`` end to end: one story through the console script, and error paths."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from smartlic.collector.cli import main
from smartlic.protocol import format_fingerprint, parse_token

SCRIPT = Path(sys.executable).with_name("smartlic-collector")
OPS = "ops@example.com"


def _story_env(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTLIC_")}
    return {**env, "SMARTLIC_DB": str(db), "SMARTLIC_USER": OPS, **extra}


def _cli(env: dict[str, str], *args: str, user: str | None = None) -> str:
    argv = [str(SCRIPT), *args] + (["--as", user] if user else [])
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=30)
    assert (0, "") == (done.returncode, done.stderr), args
    return done.stdout


def test_an_operator_partner_and_customer_story(tmp_path: Path) -> None:
    """Operator sets up ACME and a partner; the partner delivers an order; ACME makes a token
    and sees its usage — through the installed console script, as an administrator would."""
    env = _story_env(tmp_path / "c.db", SMARTLIC_NOW="2026-06-01")
    _cli(env, "init", "--admin", OPS)
    fingerprint = _cli(env, "key", "show").strip()
    _cli(env, "account", "create", "ACME", "--admin", "alice@acme.example")
    _cli(env, "va", "create", "ACME", "Engineering", user="alice@acme.example")
    _cli(env, "holding", "create", "PartnerCo", "--admin", "pat@partner.example")
    _cli(
        env,
        "order",
        "deposit",
        "PO-1001",
        "--account",
        "ACME",
        "--va",
        "Engineering",
        "--line",
        "network-advantage=10",
        "--line",
        "dna-essentials=5@2026-01-01..2027-01-01",
    )
    _cli(
        env,
        "order",
        "deposit",
        "PO-2002",
        "--holding",
        "PartnerCo",
        "--line",
        "network-advantage=20",
    )
    _cli(
        env,
        "order",
        "transfer",
        "PO-2002",
        "--to",
        "ACME",
        "--va",
        "Engineering",
        user="pat@partner.example",
    )
    _cli(
        env,
        "license",
        "transfer",
        "ACME",
        "--tag",
        "network-advantage",
        "--count",
        "5",
        "--from",
        "Engineering",
        "--to",
        "DEFAULT",
        user="alice@acme.example",
    )
    token = json.loads(
        _cli(
            env,
            "token",
            "create",
            "ACME",
            "--va",
            "Engineering",
            "--max-uses",
            "100",
            "--format",
            "json",
            user="alice@acme.example",
        )
    )
    orders = json.loads(_cli(env, "order", "list", "ACME", "--format", "json"))
    usage = list(csv.DictReader(io.StringIO(_cli(env, "usage", "ACME", "--format", "csv"))))
    next_year = {**env, "SMARTLIC_NOW": "2027-01-01"}
    expired = json.loads(
        _cli(next_year, "usage", "ACME", "--va", "Engineering", "--format", "json")
    )
    assert format_fingerprint(parse_token(token["token"]).collector_fingerprint) == fingerprint
    assert [("PO-1001", "ACME/Engineering"), ("PO-2002", "ACME/Engineering")] == [
        (o["order"], o["holder"]) for o in orders
    ]
    assert [
        ("DEFAULT", "network-advantage", "5", "0", "IN_COMPLIANCE"),
        ("Engineering", "dna-essentials", "5", "0", "IN_COMPLIANCE"),
        ("Engineering", "network-advantage", "25", "0", "IN_COMPLIANCE"),
    ] == [(u["va"], u["tag"], u["purchased"], u["in_use"], u["status"]) for u in usage]
    assert 0o600 == (tmp_path / "c.db.key").stat().st_mode & 0o777
    assert [("network-advantage", 25)] == [(u["tag"], u["purchased"]) for u in expired], (
        "the dna-essentials term ended on 2027-01-01; a pool with nothing left is not shown"
    )
    assert _cli(env, "audit", "verify").startswith("audit log intact: 9 entries")


@pytest.fixture
def initialised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A database made by `init`, with SMARTLIC_DB pointing at it (in-process, for speed)."""
    for name in [k for k in os.environ if k.startswith("SMARTLIC_")]:
        monkeypatch.delenv(name)
    db = tmp_path / "c.db"
    monkeypatch.setenv("SMARTLIC_DB", str(db))
    monkeypatch.setenv("SMARTLIC_NOW", "2026-06-01")
    assert 0 == main(["init", "--admin", OPS])
    assert 0 == main(["--as", OPS, "account", "create", "ACME", "--admin", "alice@acme.example"])
    return db


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.usefixtures("initialised")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["va", "list", "ACME"], "who is acting? pass --as EMAIL or set SMARTLIC_USER"),
        (["--as", OPS, "frobnicate"], "invalid choice: 'frobnicate'"),
        (["--as", OPS, "va", "create", "ACME"], "the following arguments are required: name"),
        (
            ["--as", OPS, "order", "deposit", "PO-1", "--account", "ACME", "--line", "x=y"],
            "'x=y' is not an order line",
        ),
        (
            ["--as", OPS, "va", "policy", "ACME", "DEFAULT", "--report-interval", "soon"],
            "'soon' is not a duration",
        ),
        (["--as", OPS, "va", "list", "ACME", "--format", "xml"], "invalid choice: 'xml'"),
    ],
)
def test_bad_usage_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = _run(capsys, *argv)
    assert (2, "", 1) == (status, out, len(err.splitlines()))
    assert message in err


@pytest.mark.usefixtures("initialised")
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["account", "create", "ACME", "--admin", "x@y.z"],
            "an account named 'ACME' already exists",
        ),
        (["va", "delete", "ACME", "DEFAULT"], "DEFAULT is the default virtual account"),
        (["token", "create", "ACME", "--expires-days", "400"], "1..365 days"),
        (["init", "--admin", OPS], "already initialised"),
    ],
)
def test_a_refused_operation_exits_1_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = _run(capsys, "--as", OPS, *argv)
    assert (1, "", 1) == (status, out, len(err.splitlines()))
    assert "smartlic-collector: error: " in err
    assert message in err


@pytest.mark.usefixtures("initialised")
def test_a_refusal_for_lack_of_permission_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = _run(
        capsys, "--as", "alice@acme.example", "holding", "create", "P", "--admin", "p@p.example"
    )
    assert (
        1,
        (
            "smartlic-collector: error: permission denied: alice@acme.example lacks"
            " site.manage on the site\n"
        ),
    ) == (status, err)


def test_a_missing_database_is_refused_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = _run(capsys, "--db", str(tmp_path / "nope.db"), "--as", OPS, "account", "list")
    assert (1, False) == (status, (tmp_path / "nope.db").exists())
    assert "no collector database at" in err


@pytest.mark.usefixtures("initialised")
def test_global_options_work_after_the_command_words(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = _run(capsys, "va", "list", "ACME", "--as", OPS, "--format", "json")
    assert (0, ["DEFAULT"]) == (status, [va["name"] for va in json.loads(out)])


@pytest.mark.usefixtures("initialised")
def test_a_table_is_aligned_with_a_header(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--as", OPS, "va", "create", "ACME", "Engineering"])
    _, out, _ = _run(capsys, "--as", OPS, "va", "list", "ACME")
    header, *rows = out.splitlines()
    assert header.startswith("NAME         DEFAULT  DEVICES")
    column = header.index("DEFAULT")
    assert ["yes", "no"] == [row[column:].split()[0] for row in rows]


@pytest.mark.usefixtures("initialised")
def test_csv_output_has_a_header_row(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = _run(capsys, "--as", OPS, "account", "list", "--format", "csv")
    assert [
        ["name", "kind", "vas", "default_va", "created"],
        ["ACME", "smart", "1", "DEFAULT", "2026-06-01T00:00:00Z"],
    ] == list(csv.reader(io.StringIO(out)))


def _verify_after(db: Path, capsys: pytest.CaptureFixture[str], tampering: str) -> tuple[int, str]:
    """``audit verify``'s status and stderr once ``tampering`` (SQL) has edited the log."""
    with sqlite3.connect(db) as conn:
        conn.execute(tampering)
    status, _, err = _run(capsys, "--as", OPS, "audit", "verify")
    return status, err


def test_a_tampered_audit_log_fails_verification_naming_the_entry(
    initialised: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = _verify_after(
        initialised, capsys, "UPDATE audit_log SET actor = 'mallory@example.com' WHERE seq = 2"
    )
    assert (
        1,
        (
            "smartlic-collector: error: audit log TAMPERED: entry 2 was edited"
            " (its hash does not match its content)\n"
        ),
    ) == (status, err)


@pytest.mark.usefixtures("initialised")
def test_an_unreadable_fixed_clock_is_bad_usage(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMARTLIC_NOW", "yesterday")
    status, _, err = _run(capsys, "--as", OPS, "account", "list")
    assert (2, True) == (status, err.startswith("smartlic-collector: SMARTLIC_NOW:"))


def test_a_head_edited_to_no_number_fails_verification_as_tampering(
    initialised: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, err = _verify_after(initialised, capsys, "UPDATE audit_head SET seq = 'abc'")
    assert (
        1,
        (
            "smartlic-collector: error: audit log TAMPERED: the chain's head was edited"
            " (its sequence number reads 'abc')\n"
        ),
    ) == (status, err)


@pytest.mark.parametrize("command", [["account", "list"], ["audit", "verify"], ["key", "show"]])
def test_a_read_only_command_does_not_wait_for_another_process_writer(
    initialised: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """WAL readers never block: opening the store takes no write lock with nothing to migrate."""
    writer = sqlite3.connect(initialised, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO service_state VALUES ('x', 1)")
        started = time.monotonic()
        status, _, err = _run(capsys, "--as", OPS, *command)
        took = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert (0, "") == (status, err)
    assert took < 2.0


@pytest.mark.parametrize(
    ("db", "error"),
    [
        (
            "no-folder/sub/c.db",
            "cannot create no-folder/sub/c.db: there is no folder no-folder/sub",
        ),
        ("a-folder", "a-folder: unable to open database file"),
    ],
)
def test_a_database_that_cannot_be_opened_is_one_line_without_a_traceback(
    tmp_path: Path, db: str, error: str
) -> None:
    """A missing folder, or a folder given as the database: aiosqlite's thread, left to
    answer after the event loop closed, printed two tracebacks; a missing folder is named."""
    (tmp_path / "a-folder").mkdir()
    done = subprocess.run(
        [str(SCRIPT), "--db", db, "init", "--admin", OPS],
        cwd=tmp_path,
        env=_story_env(tmp_path / "unused.db"),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert (1, [f"smartlic-collector: error: {error}"]) == (
        done.returncode,
        done.stderr.splitlines(),
    )


@pytest.mark.usefixtures("initialised")
def test_init_and_key_show_use_the_key_named_by_smartlic_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SMARTLIC_KEY names the key for every command, as it does for `run`."""
    monkeypatch.setenv("SMARTLIC_DB", str(tmp_path / "k.db"))
    monkeypatch.setenv("SMARTLIC_KEY", str(tmp_path / "custom.key"))
    assert 0 == main(["init", "--admin", OPS])
    assert (True, False) == ((tmp_path / "custom.key").exists(), (tmp_path / "k.db.key").exists())
    assert 0 == main(["--as", OPS, "key", "show"])


def test_key_flag_beats_smartlic_key(
    initialised: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMARTLIC_KEY", str(initialised.parent / "elsewhere.key"))
    status, out, _ = _run(capsys, "--as", OPS, "--key", f"{initialised}.key", "key", "show")
    assert (0, True) == (status, out.startswith("SHA256:"))


@pytest.mark.parametrize("db", [".", ""])
def test_a_database_path_that_names_no_file_is_bad_usage(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was an internal error: there is no name to put the key file beside."""
    status, _, err = _run(capsys, "--db", db, "--as", OPS, "account", "list")

    assert (2, "smartlic-collector: --db must name a database file, not '.'\n") == (status, err)
