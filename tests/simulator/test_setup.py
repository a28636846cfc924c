"""The simulator's set-up of the collector database: names, tokens and refusals."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smartlic.collector.accounts import check_email
from smartlic.collector.service.config import load_config
from smartlic.simulator.clock import VirtualClock
from smartlic.simulator.infra import CollectorProcess
from smartlic.simulator.scenarios import ScenarioError
from smartlic.simulator.setup import OPERATOR, AccountPlan, Admin, admin_of, create_site
from smartlic.simulator.stories.base import token_for

if TYPE_CHECKING:
    from pathlib import Path


def test_an_account_name_with_spaces_makes_a_plain_admin_address() -> None:
    assert "admin@acme-corp.example" == admin_of("ACME Corp")


@given(st.text(min_size=1, max_size=60))
def test_every_account_name_makes_an_address_the_collector_accepts(name: str) -> None:
    check_email(admin_of(name))


def test_a_va_without_a_token_of_its_own_registers_with_another_one() -> None:
    """Tokens from the command line need not cover every VA a story uses (churn's joiners)."""
    tokens = {"DEFAULT": "slt1_a", "Engineering": "slt1_b"}

    assert ("slt1_b", "slt1_a", None) == (
        token_for(tokens, "Engineering"),
        token_for(tokens, "Operations"),
        token_for({}, "Operations"),
    )


async def test_an_account_already_in_the_database_is_a_scenario_error(tmp_path: Path) -> None:
    """The run's options are at fault, not the simulator: exit 2 with one line, no traceback."""
    db = tmp_path / "collector.db"
    await create_site(db, tmp_path / "collector.key", operator=OPERATOR, now=1_800_000_000)
    plan = AccountPlan(account="ACME Corp")
    async with await Admin.open(db, clock=VirtualClock()) as admin:
        await admin.setup(plan, token_vas=["DEFAULT"])
        with pytest.raises(ScenarioError, match=r"refused the run's set-up: .*ACME Corp"):
            await admin.setup(plan, token_vas=["DEFAULT"])


def test_the_collector_of_an_accelerated_run_keeps_every_answer_for_the_checks(
    tmp_path: Path,
) -> None:
    """At 3,600 times real time the default 30 days of answers would last 12 minutes."""
    process = CollectorProcess.command(
        db=tmp_path / "c.db",
        key=tmp_path / "c.key",
        broker="mqtt://127.0.0.1:1",
        protocol="5",
        share_group=None,
        time_scale=3600.0,
        time_origin=None,
        clock_skew=300,
        client_id="sim",
        log_path=tmp_path / "c.log",
    )
    config = load_config(None, env={}, overrides=_flags(process.arguments[1:]))

    assert 36_600 == config.receipt_retention_days


def _flags(arguments: list[str]) -> dict[str, str]:
    """``--name value`` pairs as the settings they set."""
    return {
        flag.removeprefix("--").replace("-", "_"): value
        for flag, value in zip(arguments[::2], arguments[1::2], strict=True)
    }
