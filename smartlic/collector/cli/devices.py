"""Token, device and usage commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartlic.collector import compliance, device_admin, tokens
from smartlic.collector.cli.framework import Command, Invocation
from smartlic.collector.cli.output import Listing, Report
from smartlic.collector.cli.values import format_time
from smartlic.protocol import format_fingerprint

if TYPE_CHECKING:
    import argparse


def _token_create_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("account", help="smart account")
    parser.add_argument("--va", help="the VA devices register into (default: the default VA)")
    parser.add_argument(
        "--expires-days", type=int, default=tokens.DEFAULT_EXPIRY_DAYS, help="1..365 (30)"
    )
    parser.add_argument("--max-uses", type=int, default=1, help="registrations it serves (1)")
    parser.add_argument("--description", default="", help="what it is for")


async def _token_create(run: Invocation) -> Report:
    stored, token = await tokens.create_token(
        run.tx,
        run.actor,
        account_name=run.args.account,
        va_name=run.args.va,
        expires_days=run.args.expires_days,
        max_uses=run.args.max_uses,
        description=run.args.description,
        now=run.now,
        entropy=run.entropy,
    )
    return Report(
        f"{token}\n"
        f"token {stored.token_id} for {stored.account_name}/{stored.va_name}, expires"
        f" {format_time(stored.expires_at)}, {stored.max_uses} use(s)."
        " Copy it now: it is not shown again.",
        {
            "token": str(token),
            "token_id": stored.token_id,
            "account": stored.account_name,
            "va": stored.va_name,
            "expires": format_time(stored.expires_at),
            "max_uses": stored.max_uses,
        },
    )


def _account(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("account", help="smart account")


async def _token_list(run: Invocation) -> Listing:
    found = await tokens.list_tokens(run.tx, run.actor, run.args.account)
    return Listing(
        ("token_id", "va", "status", "uses", "max_uses", "expires", "created", "description"),
        [
            {
                "token_id": t.token_id,
                "va": t.va_name,
                "status": str(tokens.token_status(t, run.now)),
                "uses": t.uses,
                "max_uses": t.max_uses,
                "expires": format_time(t.expires_at),
                "created": format_time(t.created_at),
                "description": t.description,
            }
            for t in found
        ],
    )


def _token_revoke_arguments(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    parser.add_argument("token_id", metavar="TOKEN_ID", help="as shown by `token list`")


async def _token_revoke(run: Invocation) -> Report:
    token = await tokens.revoke_token(
        run.tx, run.actor, account_name=run.args.account, token_id=run.args.token_id, now=run.now
    )
    return Report(f"revoked token {token.token_id}", {"token_id": token.token_id, "revoked": True})


def _device_list_arguments(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    parser.add_argument("--va", help="only this VA")


async def _device_list(run: Invocation) -> Listing:
    views = await device_admin.list_devices(
        run.tx, run.actor, account_name=run.args.account, va_name=run.args.va, now=run.now
    )
    return Listing(
        ("udi", "va", "state", "status", "usage", "last_seq", "last_report", "registered", "key"),
        [
            {
                "udi": str(v.device.udi),
                "va": v.device.va_name,
                "state": str(v.device.state),
                "status": None if v.status is None else v.status.name,
                "usage": [f"{tag}={n}" for tag, n in sorted(v.device.counts.items())],
                "last_seq": v.device.last_seq,
                "last_report": format_time(v.device.last_report_at),
                "registered": format_time(v.device.registered_at),
                "key": format_fingerprint(v.device.verifying_key().fingerprint)[:26],
            }
            for v in views
        ],
    )


def _device_arguments(parser: argparse.ArgumentParser) -> None:
    _account(parser)
    parser.add_argument("udi", metavar="UDI", help="PRODUCT_ID:SERIAL")


def _move_arguments(parser: argparse.ArgumentParser) -> None:
    _device_arguments(parser)
    parser.add_argument("--to", required=True, metavar="VA", help="target VA")


def _flip_note(flips: int) -> str:
    return f"; {flips} pool(s) changed compliance status" if flips else ""


async def _device_move(run: Invocation) -> Report:
    change = await device_admin.move_device(
        run.tx,
        run.actor,
        account_name=run.args.account,
        udi=run.args.udi,
        to_va=run.args.to,
        now=run.now,
    )
    return Report(
        f"moved {change.device.udi} to {change.device.va_name}{_flip_note(len(change.flips))}",
        {"udi": str(change.device.udi), "va": change.device.va_name, "flips": len(change.flips)},
    )


async def _device_deregister(run: Invocation) -> Report:
    change = await device_admin.deregister_device(
        run.tx, run.actor, account_name=run.args.account, udi=run.args.udi, now=run.now
    )
    return Report(
        f"deregistered {change.device.udi}{_flip_note(len(change.flips))}",
        {"udi": str(change.device.udi), "state": "deregistered", "flips": len(change.flips)},
    )


async def _usage(run: Invocation) -> Listing:
    pools = await compliance.usage(
        run.tx, run.actor, account_name=run.args.account, va_name=run.args.va, now=run.now
    )
    return Listing(
        ("va", "tag", "purchased", "in_use", "balance", "status"),
        [
            {
                "va": p.va,
                "tag": p.tag,
                "purchased": p.purchased,
                "in_use": p.in_use,
                "balance": p.balance,
                "status": p.compliance.status.name,
            }
            for p in pools
        ],
    )


COMMANDS = (
    Command(
        ("token", "create"), "create a registration token", _token_create, _token_create_arguments
    ),
    Command(("token", "list"), "list registration tokens", _token_list, _account, store="read"),
    Command(
        ("token", "revoke"), "revoke a registration token", _token_revoke, _token_revoke_arguments
    ),
    Command(("device", "list"), "list devices", _device_list, _device_list_arguments, store="read"),
    Command(("device", "move"), "move a device to another VA", _device_move, _move_arguments),
    Command(("device", "deregister"), "deregister a device", _device_deregister, _device_arguments),
    Command(
        ("usage",),
        "per VA and tag: purchased, in use, balance, status",
        _usage,
        _device_list_arguments,
        store="read",
    ),
)
