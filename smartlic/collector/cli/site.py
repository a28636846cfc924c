"""Commands of the installation: init, key show, smart and holding accounts, the audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartlic.collector import audit, site
from smartlic.collector.accounts import list_accounts
from smartlic.collector.cli.framework import Command, Invocation
from smartlic.collector.cli.output import Listing, Report
from smartlic.collector.cli.values import format_time, parse_time
from smartlic.collector.errors import Refused
from smartlic.collector.signing_key import (
    SEED_BYTES,
    check_site_key,
    generate_key,
    read_key_file,
    write_key_file,
)
from smartlic.protocol import KeyType, format_fingerprint

if TYPE_CHECKING:
    import argparse

_KEY_TYPES = {"ed25519": KeyType.ED25519, "p256": KeyType.P256}


def _init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin", required=True, metavar="EMAIL", help="the site operator")
    parser.add_argument(
        "--key-type", choices=sorted(_KEY_TYPES), default="ed25519", help="collector key type"
    )


async def _init(run: Invocation) -> Report:
    key_path = run.key_path
    adopted = key_path.exists()
    if adopted:
        # A key made beforehand (or left by an interrupted init) is kept, never overwritten.
        key = read_key_file(key_path)
    else:
        key_type = _KEY_TYPES[run.args.key_type]
        key = generate_key(key_type, run.entropy(SEED_BYTES[key_type]))
    await site.init_site(
        run.tx, operator_email=run.args.admin, collector_key=key.public, now=run.now
    )
    if not adopted:
        # Written last, inside the transaction: if it fails, the database is not initialised.
        write_key_file(key_path, key)
    fingerprint = format_fingerprint(key.public.fingerprint)
    return Report(
        f"initialised {run.db}\nsite operator: {run.args.admin}\n"
        f"collector key ({key.key_type.value}, {'existing' if adopted else 'new'}):"
        f" {key_path}\nfingerprint: {fingerprint}",
        {
            "db": str(run.db),
            "site_operator": run.args.admin,
            "key_path": str(key_path),
            "key_type": key.key_type.value,
            "fingerprint": fingerprint,
        },
    )


async def _key_show(run: Invocation) -> Report:
    info = await site.collector_key_info(run.tx, run.actor)
    key = read_key_file(run.key_path)
    check_site_key(run.key_path, key, info.key_fingerprint)
    fingerprint = format_fingerprint(key.public.fingerprint)
    return Report(
        fingerprint,
        {"fingerprint": fingerprint, "key_type": key.key_type.value, "path": str(run.key_path)},
    )


def _account_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="the account's name")
    parser.add_argument("--admin", required=True, metavar="EMAIL", help="its first admin")


async def _account_create(run: Invocation) -> Report:
    account, va = await site.create_smart_account(
        run.tx, run.actor, name=run.args.name, admin_email=run.args.admin, now=run.now
    )
    return Report(
        f"created smart account {account.name} with virtual account {va.name};"
        f" {run.args.admin} is its sa-admin",
        {"account": account.name, "default_va": va.name, "admin": run.args.admin},
    )


async def _holding_create(run: Invocation) -> Report:
    account = await site.create_holding_account(
        run.tx, run.actor, name=run.args.name, admin_email=run.args.admin, now=run.now
    )
    return Report(
        f"created partner holding account {account.name}; {run.args.admin} is its partner-admin",
        {"account": account.name, "admin": run.args.admin},
    )


async def _account_list(run: Invocation) -> Listing:
    summaries = await list_accounts(run.tx, run.actor)
    return Listing(
        ("name", "kind", "vas", "default_va", "created"),
        [
            {
                "name": s.account.name,
                "kind": str(s.account.kind),
                "vas": s.virtual_accounts,
                "default_va": s.default_va,
                "created": format_time(s.account.created_at),
            }
            for s in summaries
        ],
    )


def _audit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target",
        nargs="?",
        metavar="ACCOUNT|verify",
        help="an account's entries, or `verify` to check the whole chain (none: every entry)",
    )
    parser.add_argument("--account", help="an account's entries (one named 'verify', say)")
    parser.add_argument("--since", type=parse_time, metavar="DATE", help="entries from DATE on")


async def _audit(run: Invocation) -> Listing | Report:
    if run.args.target == "verify" and run.args.account is None:
        return await _audit_verify(run)
    records = await audit.trail(
        run.tx, run.actor, account_name=run.args.account or run.args.target, since=run.args.since
    )
    return Listing(
        ("seq", "at", "actor", "action", "subject", "before", "after"),
        [
            {
                "seq": r.seq,
                "at": format_time(r.at),
                "actor": r.actor,
                "action": r.action,
                "subject": r.subject,
                "before": r.before,
                "after": r.after,
            }
            for r in records
        ],
    )


async def _audit_verify(run: Invocation) -> Report:
    verdict = await audit.verify_chain(run.tx, run.actor)
    if not verdict.intact:
        raise Refused("audit log TAMPERED: " + "; ".join(verdict.problems))
    return Report(
        f"audit log intact: {verdict.entries} entries, head {verdict.head_hash}",
        {
            "intact": verdict.intact,
            "entries": verdict.entries,
            "head_seq": verdict.head_seq,
            "head_hash": verdict.head_hash,
        },
    )


COMMANDS = (
    Command(
        ("init",),
        "create the database, the collector key and the site operator",
        _init,
        _init_arguments,
        acting_user=False,
        store="create",
    ),
    Command(("key", "show"), "print the collector key's fingerprint", _key_show, store="read"),
    Command(
        ("account", "create"),
        "create a smart account (with its DEFAULT VA)",
        _account_create,
        _account_arguments,
    ),
    Command(("account", "list"), "list the accounts you can see", _account_list, store="read"),
    Command(
        ("holding", "create"),
        "create a partner holding account",
        _holding_create,
        _account_arguments,
    ),
    Command(
        ("audit",),
        "show an account's audit entries, or `audit verify` the chain",
        _audit,
        _audit_arguments,
        store="read",
    ),
)
