"""Virtual account commands: va create, list, rename, delete, set-default, policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartlic.collector import virtual_accounts
from smartlic.collector.cli.framework import Command, Invocation
from smartlic.collector.cli.output import Listing, Report
from smartlic.collector.cli.values import format_duration, format_time, parse_duration

if TYPE_CHECKING:
    import argparse

    from smartlic.collector.accounts import VirtualAccount


def _account(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("account", help="smart account")


def _account_va(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    parser.add_argument("name", help="virtual account")


def _rename_arguments(parser: argparse.ArgumentParser) -> None:
    _account_va(parser)
    parser.add_argument("new_name", help="its new name")


def _policy_arguments(parser: argparse.ArgumentParser) -> None:
    _account_va(parser)
    parser.add_argument(
        "--report-interval", type=parse_duration, metavar="DURATION", help="e.g. 12h (24h)"
    )
    parser.add_argument(
        "--auth-validity", type=parse_duration, metavar="DURATION", help="e.g. 30d (90d)"
    )


def _policy_data(va: VirtualAccount) -> dict[str, str | int | bool | list[str] | None]:
    return {
        "account": va.account_name,
        "va": va.name,
        "report_interval": format_duration(va.policy.report_interval),
        "auth_validity": format_duration(va.policy.authorization_validity),
    }


async def _create(run: Invocation) -> Report:
    va = await virtual_accounts.create_virtual_account(
        run.tx, run.actor, account_name=run.args.account, name=run.args.name, now=run.now
    )
    return Report(
        f"created virtual account {va.scope.label}", {"account": va.account_name, "va": va.name}
    )


async def _list(run: Invocation) -> Listing:
    summaries = await virtual_accounts.list_virtual_accounts(run.tx, run.actor, run.args.account)
    return Listing(
        ("name", "default", "devices", "report_interval", "auth_validity", "created"),
        [
            {
                "name": s.va.name,
                "default": s.va.is_default,
                "devices": s.devices,
                "report_interval": format_duration(s.va.policy.report_interval),
                "auth_validity": format_duration(s.va.policy.authorization_validity),
                "created": format_time(s.va.created_at),
            }
            for s in summaries
        ],
    )


async def _rename(run: Invocation) -> Report:
    va = await virtual_accounts.rename_virtual_account(
        run.tx,
        run.actor,
        account_name=run.args.account,
        name=run.args.name,
        new_name=run.args.new_name,
        now=run.now,
    )
    return Report(
        f"renamed {va.account_name}/{run.args.name} to {va.name}",
        {"account": va.account_name, "old_name": run.args.name, "va": va.name},
    )


async def _delete(run: Invocation) -> Report:
    deletion = await virtual_accounts.delete_virtual_account(
        run.tx, run.actor, account_name=run.args.account, name=run.args.name, now=run.now
    )
    notes = []
    if deletion.tokens_revoked:
        notes.append(f"{deletion.tokens_revoked} token(s) revoked")
    if deletion.grants_removed:
        notes.append(f"{deletion.grants_removed} role grant(s) removed")
    return Report(
        f"deleted virtual account {deletion.va.scope.label}"
        + (f" ({', '.join(notes)})" if notes else ""),
        {
            "account": deletion.va.account_name,
            "va": deletion.va.name,
            "tokens_revoked": deletion.tokens_revoked,
            "grants_removed": deletion.grants_removed,
        },
    )


async def _set_default(run: Invocation) -> Report:
    va = await virtual_accounts.set_default_virtual_account(
        run.tx, run.actor, account_name=run.args.account, name=run.args.name, now=run.now
    )
    return Report(
        f"{va.name} is now the default virtual account of {va.account_name}",
        {"account": va.account_name, "default_va": va.name},
    )


async def _policy(run: Invocation) -> Report:
    va = await virtual_accounts.set_policy(
        run.tx,
        run.actor,
        account_name=run.args.account,
        name=run.args.name,
        report_interval=run.args.report_interval,
        authorization_validity=run.args.auth_validity,
        now=run.now,
    )
    data = _policy_data(va)
    return Report(
        f"{va.scope.label}: report every {data['report_interval']},"
        f" authorizations valid {data['auth_validity']}",
        data,
    )


COMMANDS = (
    Command(("va", "create"), "create a virtual account", _create, _account_va),
    Command(("va", "list"), "list an account's virtual accounts", _list, _account, store="read"),
    Command(("va", "rename"), "rename a virtual account", _rename, _rename_arguments),
    Command(("va", "delete"), "delete an empty virtual account", _delete, _account_va),
    Command(("va", "set-default"), "make a VA the account's default", _set_default, _account_va),
    Command(
        ("va", "policy"),
        "show or set a VA's report interval and authorization validity",
        _policy,
        _policy_arguments,
    ),
)
