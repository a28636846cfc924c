"""Each administration command through ``smartlic-collector``'s ``main``, on a real store.

The domain rules behind them are tested in their own modules; these check what the command
line adds: that each command's arguments reach the operation, and what it prints. The site is
the shared test site (``collector_support``): ACME with DEFAULT and Engineering, PartnerCo.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from smartlic.collector.cli import main
from smartlic.collector.store import open_store

from .collector_support import ALICE, NOW, OPERATOR, PAT, Site

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

T = TypeVar("T")

BOB = "bob@acme.example"


@pytest.fixture
def cli(site_db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    monkeypatch.setenv("SMARTLIC_DB", str(site_db))
    monkeypatch.setenv("SMARTLIC_NOW", str(NOW))
    monkeypatch.delenv("SMARTLIC_USER", raising=False)
    return Cli(site_db, capsys)


class Cli:
    def __init__(self, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.db = db
        self._capsys = capsys

    def text(self, *argv: str, as_: str = OPERATOR) -> str:
        """What the command prints; it must succeed and print nothing on stderr."""
        self._capsys.readouterr()
        status = main(["--as", as_, *argv])
        out, err = self._capsys.readouterr()
        assert (0, "") == (status, err), argv
        return out

    def json(self, *argv: str, as_: str = OPERATOR) -> Any:
        return json.loads(self.text(*argv, "--format", "json", as_=as_))

    def on_site(self, step: Callable[[Site], Awaitable[T]]) -> T:
        """``step`` on the store the commands use, as the service would act on it."""

        async def go() -> T:
            store = await open_store(self.db)
            try:
                return await step(Site(store))
            finally:
                await store.close()

        return asyncio.run(go())

    def register(self, va: str, *serials: str) -> list[str]:
        """Devices registered straight into ACME's ``va``."""
        return self.on_site(lambda site: site.register("ACME", va, *serials))


def test_va_rename_changes_the_name_listed(cli: Cli) -> None:
    cli.text("va", "rename", "ACME", "Engineering", "Research")

    assert ["DEFAULT", "Research"] == sorted(v["name"] for v in cli.json("va", "list", "ACME"))


def test_va_delete_says_how_many_tokens_it_revoked(cli: Cli) -> None:
    cli.text("token", "create", "ACME", "--va", "Engineering")

    out = cli.text("va", "delete", "ACME", "Engineering")

    assert "deleted virtual account ACME/Engineering (1 token(s) revoked)\n" == out


def test_va_set_default_moves_the_default_flag(cli: Cli) -> None:
    cli.text("va", "set-default", "ACME", "Engineering")

    assert {"DEFAULT": False, "Engineering": True} == {
        v["name"]: v["default"] for v in cli.json("va", "list", "ACME")
    }


def test_va_policy_sets_and_shows_both_durations(cli: Cli) -> None:
    data = cli.json(
        "va", "policy", "ACME", "Engineering", "--report-interval", "12h", "--auth-validity", "2w"
    )

    assert {
        "account": "ACME",
        "va": "Engineering",
        "report_interval": "12h",
        "auth_validity": "2w",
    } == data


def test_a_duration_that_is_no_whole_minute_is_shown_in_seconds(cli: Cli) -> None:
    data = cli.json("va", "policy", "ACME", "DEFAULT", "--report-interval", "90s")

    assert "90s" == data["report_interval"]


def test_user_add_scopes_a_role_to_a_va(cli: Cli) -> None:
    out = cli.text("user", "add", "ACME", BOB, "--role", "va-user", "--va", "Engineering")

    assert f"{BOB} is now va-user on ACME/Engineering\n" == out


def test_user_list_shows_who_granted_each_role(cli: Cli) -> None:
    cli.text("user", "add", "ACME", BOB, "--role", "viewer", as_=ALICE)

    users = cli.json("user", "list", "ACME")

    assert {"email": BOB, "role": "viewer", "va": None, "granted_by": ALICE} == {
        key: value
        for key, value in next(u for u in users if u["email"] == BOB).items()
        if key != "granted"
    }


def test_user_remove_names_the_roles_taken_away(cli: Cli) -> None:
    cli.text("user", "add", "ACME", BOB, "--role", "va-admin", "--va", "Engineering")

    data = cli.json("user", "remove", "ACME", BOB)

    assert {"email": BOB, "account": "ACME", "roles": ["va-admin@Engineering"]} == data


def test_token_revoke_shows_in_the_token_list(cli: Cli) -> None:
    token_id = cli.json("token", "create", "ACME", "--description", "lab")["token_id"]

    cli.text("token", "revoke", "ACME", token_id)

    assert [(token_id, "revoked", "lab")] == [
        (t["token_id"], t["status"], t["description"]) for t in cli.json("token", "list", "ACME")
    ]


def test_device_list_filters_by_va(cli: Cli) -> None:
    cli.register("DEFAULT", "D1")
    cli.register("Engineering", "E1", "E2")

    listed = cli.json("device", "list", "ACME", "--va", "Engineering")

    assert [("C9300/24T:E1", "Engineering"), ("C9300/24T:E2", "Engineering")] == sorted(
        (d["udi"], d["va"]) for d in listed
    )


def test_device_move_lands_the_device_in_the_target_va(cli: Cli) -> None:
    cli.register("DEFAULT", "D1")

    data = cli.json("device", "move", "ACME", "C9300/24T:D1", "--to", "Engineering")

    assert {"udi": "C9300/24T:D1", "va": "Engineering", "flips": 0} == data


def test_device_deregister_marks_the_device_deregistered(cli: Cli) -> None:
    cli.register("DEFAULT", "D1")

    cli.text("device", "deregister", "ACME", "C9300/24T:D1")

    assert ["deregistered"] == [d["state"] for d in cli.json("device", "list", "ACME")]


def test_order_date_as_a_time_without_zone_is_utc(cli: Cli) -> None:
    data = cli.json(
        "order",
        "deposit",
        "PO-7",
        "--account",
        "ACME",
        "--line",
        "network-advantage=3",
        "--date",
        "2026-05-01T12:30:00",
    )

    assert "2026-05-01" == data["date"]


@pytest.mark.usefixtures("cli")
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--date", "99999999999999999999"),
        ("--date", "1969-12-31"),
        ("--line", "network-advantage=3@2026-01-01..99999999999999999999"),
    ],
)
def test_a_time_beyond_what_the_store_holds_is_bad_usage_not_an_internal_error(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["order", "deposit", "PO-9", "--account", "ACME", "--line", "network-advantage=1"]

    status = main(["--as", OPERATOR, *argv, option, value])

    assert (2, True) == (status, "before 1970 or too far ahead" in capsys.readouterr().err)


@pytest.mark.usefixtures("cli")
def test_order_va_with_a_holding_account_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["order", "deposit", "PO-8", "--holding", "PartnerCo", "--va", "X", "--line", "t=1"]

    status = main(["--as", OPERATOR, *argv])

    assert (2, True) == (status, "--va goes with --account" in capsys.readouterr().err)


def test_license_list_shows_each_lot_with_its_term(cli: Cli) -> None:
    cli.text(
        "order",
        "deposit",
        "PO-9",
        "--account",
        "ACME",
        "--line",
        "network-advantage=4",
        "--line",
        "dna-essentials=2@2027-01-01..2028-01-01",
    )

    lots = cli.json("license", "list", "ACME", "--va", "DEFAULT")

    assert [
        ("dna-essentials", 2, "2027-01-01..2028-01-01", "PO-9"),
        ("network-advantage", 4, "perpetual", "PO-9"),
    ] == sorted((lot["tag"], lot["quantity"], lot["term"], lot["order"]) for lot in lots)


def test_license_transfer_warns_when_it_leaves_the_source_short(cli: Cli) -> None:
    cli.text("order", "deposit", "PO-10", "--account", "ACME", "--line", "network-advantage=1")
    (device,) = cli.register("DEFAULT", "D1")
    cli.on_site(lambda site: site.report(device, {"network-advantage": 1}))

    out = cli.text(
        "license",
        "transfer",
        "ACME",
        "--tag",
        "network-advantage",
        "--count",
        "1",
        "--from",
        "DEFAULT",
        "--to",
        "Engineering",
    )

    assert (
        "transferred 1 network-advantage from DEFAULT to Engineering;"
        " warning: DEFAULT is now 1 short (1 in use, 0 licensed)\n"
    ) == out


@pytest.mark.usefixtures("cli")
@pytest.mark.parametrize(
    ("option", "account", "message"),
    [
        ("--holding", "ACME", "ACME is a smart account, not a holding account"),
        ("--account", "PartnerCo", "PartnerCo is a holding account, not a smart account"),
    ],
)
def test_an_order_deposited_into_the_other_kind_of_account_is_refused(
    option: str, account: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped ``--holding ACME`` put the order in the customer's pool, for good."""
    argv = ["order", "deposit", "PO-8", option, account, "--line", "network-advantage=1"]

    status = main(["--as", OPERATOR, *argv])

    assert (1, True) == (status, message in capsys.readouterr().err)


def test_order_transfer_of_one_line_says_which_and_the_listing_shows_it(cli: Cli) -> None:
    lines = ["--line", "network-advantage=20", "--line", "dna-essentials=5"]
    cli.text("order", "deposit", "PO-3", "--holding", "PartnerCo", *lines)

    out = cli.text("order", "transfer", "PO-3", "--to", "ACME", "--line", "2", as_=PAT)

    (listed,) = cli.json("order", "list", "PartnerCo")
    assert "transferred line 2 of order PO-3 from PartnerCo to ACME\n" == out
    assert ("PartnerCo", "line 2") == (listed["holder"], listed["delivered"])
