"""User commands: user add, list, remove."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartlic.collector import users
from smartlic.collector.cli.framework import Command, Invocation
from smartlic.collector.cli.output import Listing, Report
from smartlic.collector.cli.values import format_time
from smartlic.collector.rbac import Role

if TYPE_CHECKING:
    import argparse


def _account(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("account", help="smart or holding account")


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    parser.add_argument("email", help="the user")
    parser.add_argument(
        "--role",
        required=True,
        choices=[str(r) for r in Role if r is not Role.SITE_OPERATOR],
        help="what they may do",
    )
    parser.add_argument("--va", help="the VA a va-admin, va-user or viewer is limited to")


def _remove_arguments(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    parser.add_argument("email", help="the user")


async def _add(run: Invocation) -> Report:
    member = await users.add_user(
        run.tx,
        run.actor,
        account_name=run.args.account,
        email=run.args.email,
        role=Role(run.args.role),
        va_name=run.args.va,
        now=run.now,
    )
    where = f"{run.args.account}/{member.va}" if member.va else run.args.account
    return Report(
        f"{member.email} is now {member.role} on {where}",
        {
            "email": member.email,
            "role": str(member.role),
            "account": run.args.account,
            "va": member.va,
        },
    )


async def _list(run: Invocation) -> Listing:
    members = await users.list_users(run.tx, run.actor, run.args.account)
    return Listing(
        ("email", "role", "va", "granted", "granted_by"),
        [
            {
                "email": m.email,
                "role": str(m.role),
                "va": m.va,
                "granted": format_time(m.granted_at),
                "granted_by": m.granted_by,
            }
            for m in members
        ],
    )


async def _remove(run: Invocation) -> Report:
    removed = await users.remove_user(
        run.tx, run.actor, account_name=run.args.account, email=run.args.email, now=run.now
    )
    roles = [f"{m.role}@{m.va}" if m.va else str(m.role) for m in removed]
    return Report(
        f"removed {run.args.email} from {run.args.account} ({', '.join(roles)})",
        {"email": run.args.email, "account": run.args.account, "roles": roles},
    )


COMMANDS = (
    Command(("user", "add"), "grant a user a role in an account", _add, _add_arguments),
    Command(("user", "list"), "list an account's users and roles", _list, _account, store="read"),
    Command(
        ("user", "remove"), "take a user's roles in an account away", _remove, _remove_arguments
    ),
)
