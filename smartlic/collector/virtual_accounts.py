"""Virtual accounts: create, rename, delete when empty, choose the default, set the policy."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smartlic.collector import audit
from smartlic.collector.accounts import (
    Policy,
    VirtualAccount,
    check_name,
    check_policy,
    default_virtual_account,
    find_smart_account,
    find_virtual_account,
    insert_virtual_account,
    refuse_taken_va_name,
    virtual_accounts_of,
)
from smartlic.collector.audit import AuditEntry
from smartlic.collector.changes import ChangeKind, append_change
from smartlic.collector.errors import Refused
from smartlic.collector.rbac import Actor, Permission, authorize, authorized_vas

if TYPE_CHECKING:
    from collections.abc import Mapping

    from smartlic.collector.store import Transaction

_NO_VAS = "virtual accounts"


def _entry(
    actor: Actor,
    va: VirtualAccount,
    action: str,
    *,
    before: Mapping[str, object] | None = None,
    after: Mapping[str, object] | None = None,
) -> AuditEntry:
    return AuditEntry(
        actor=actor.email,
        action=action,
        subject=f"virtual account {va.scope.label}",
        account_id=va.account_id,
        before=before,
        after=after,
    )


async def create_virtual_account(
    tx: Transaction, actor: Actor, *, account_name: str, name: str, now: int
) -> VirtualAccount:
    account = await find_smart_account(tx, account_name, _NO_VAS, seen_by=actor)
    authorize(actor, Permission.VA_MANAGE, account.scope)
    va = await insert_virtual_account(tx, account, name, is_default=False, now=now)
    await audit.append(tx, [_entry(actor, va, "va.create", after={"name": va.name})], now=now)
    return va


async def rename_virtual_account(
    tx: Transaction, actor: Actor, *, account_name: str, name: str, new_name: str, now: int
) -> VirtualAccount:
    account = await find_smart_account(tx, account_name, _NO_VAS, seen_by=actor)
    va = await find_virtual_account(tx, account, name)
    authorize(actor, Permission.VA_MANAGE, va.scope)
    new_name = check_name("virtual account name", new_name)
    await refuse_taken_va_name(tx, account, new_name)
    await tx.execute("UPDATE virtual_accounts SET name = ? WHERE id = ?", (new_name, va.id))
    renamed = dataclasses.replace(va, name=new_name)
    await audit.append(
        tx,
        [_entry(actor, renamed, "va.rename", before={"name": name}, after={"name": new_name})],
        now=now,
    )
    return renamed


@dataclass(frozen=True, slots=True, kw_only=True)
class Contents:
    """What a VA still holds: licenses not yet ended (by tag) and registered devices."""

    licenses: Mapping[str, int]
    devices: int


def can_delete_virtual_account(va: VirtualAccount, contents: Contents) -> str | None:
    """Why ``va`` cannot be deleted (the default VA, or one not empty), or ``None``."""
    if va.is_default:
        return f"{va.name} is the default virtual account; make another one the default first"
    left = [
        f"{count} {tag} license{'s' * (count != 1)}"
        for tag, count in sorted(contents.licenses.items())
    ]
    if contents.devices:
        left.append(f"{contents.devices} registered device{'s' * (contents.devices != 1)}")
    if left:
        return f"{va.name} still holds {', '.join(left)}; transfer or remove them first"
    return None


async def contents(tx: Transaction, va: VirtualAccount, now: int) -> Contents:
    held: Counter[str] = Counter()
    for row in await tx.fetch_all(
        "SELECT tag, quantity, ends_at FROM licenses WHERE va_id = ? AND quantity > 0", (va.id,)
    ):
        # Licenses whose term is over are history, not holdings: they do not keep a VA alive.
        if row["ends_at"] is None or now < int(row["ends_at"]):
            held[str(row["tag"])] += int(row["quantity"])
    devices = await tx.fetch_one(
        "SELECT COUNT(*) AS n FROM devices WHERE va_id = ? AND state = 'registered'", (va.id,)
    )
    return Contents(licenses=dict(held), devices=int(devices["n"]) if devices else 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Deletion:
    va: VirtualAccount
    tokens_revoked: int
    grants_removed: int


async def delete_virtual_account(
    tx: Transaction, actor: Actor, *, account_name: str, name: str, now: int
) -> Deletion:
    """Delete an empty, non-default VA; its unused tokens are revoked and its grants removed."""
    account = await find_smart_account(tx, account_name, _NO_VAS, seen_by=actor)
    va = await find_virtual_account(tx, account, name)
    authorize(actor, Permission.VA_MANAGE, va.scope)
    reason = can_delete_virtual_account(va, await contents(tx, va, now))
    if reason is not None:
        raise Refused(f"cannot delete {va.scope.label}: {reason}")
    tokens = await tx.execute(
        "UPDATE tokens SET revoked_at = ?, revoked_by = ? WHERE va_id = ? AND revoked_at IS NULL",
        (now, actor.email, va.id),
    )
    granted = await tx.fetch_all(
        "SELECT users.email AS email, grants.role AS role FROM grants"
        " JOIN users ON users.id = grants.user_id WHERE grants.va_id = ? ORDER BY users.email",
        (va.id,),
    )
    if granted:
        # Deleting the VA takes its users' roles away, which is user management (SPEC §2: an
        # SA user may do everything but that), not a way around it.
        authorize(actor, Permission.USER_MANAGE, va.scope)
    grants = await tx.execute("DELETE FROM grants WHERE va_id = ?", (va.id,))
    await tx.execute("UPDATE virtual_accounts SET deleted_at = ? WHERE id = ?", (now, va.id))
    await audit.append(
        tx,
        [
            _entry(
                actor,
                va,
                "va.delete",
                before={"name": va.name},
                after={"tokens_revoked": tokens, "grants_removed": grants},
            ),
            *(
                AuditEntry(
                    actor=actor.email,
                    action="user.remove",
                    subject=f"user {row['email']}",
                    account_id=va.account_id,
                    before={"roles": [f"{row['role']}@{va.name}"]},
                )
                for row in granted
            ),
        ],
        now=now,
    )
    return Deletion(va=va, tokens_revoked=tokens, grants_removed=grants)


async def set_default_virtual_account(
    tx: Transaction, actor: Actor, *, account_name: str, name: str, now: int
) -> VirtualAccount:
    account = await find_smart_account(tx, account_name, _NO_VAS, seen_by=actor)
    va = await find_virtual_account(tx, account, name)
    authorize(actor, Permission.VA_MANAGE, account.scope)
    if va.is_default:
        raise Refused(f"{va.name} is already the default virtual account of {account.name}")
    previous = await default_virtual_account(tx, account)
    # Clear first: the schema allows one default per account at every statement.
    await tx.execute("UPDATE virtual_accounts SET is_default = 0 WHERE id = ?", (previous.id,))
    await tx.execute("UPDATE virtual_accounts SET is_default = 1 WHERE id = ?", (va.id,))
    await audit.append(
        tx,
        [
            _entry(
                actor,
                va,
                "va.set-default",
                before={"default": previous.name},
                after={"default": va.name},
            )
        ],
        now=now,
    )
    return dataclasses.replace(va, is_default=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualAccountSummary:
    va: VirtualAccount
    devices: int


async def list_virtual_accounts(
    tx: Transaction, actor: Actor, account_name: str
) -> list[VirtualAccountSummary]:
    account = await find_smart_account(tx, account_name, _NO_VAS, seen_by=actor)
    vas = await virtual_accounts_of(tx, account)
    visible = authorized_vas(
        actor, Permission.VA_READ, account.scope, [(v.id, v.name) for v in vas]
    )
    counts = {
        int(row["va_id"]): int(row["n"])
        for row in await tx.fetch_all(
            "SELECT d.va_id, COUNT(*) AS n FROM devices d JOIN virtual_accounts v"
            " ON v.id = d.va_id WHERE v.account_id = ? AND d.state = 'registered'"
            " GROUP BY d.va_id",
            (account.id,),
        )
    }
    return [
        VirtualAccountSummary(va=va, devices=counts.get(va.id, 0)) for va in vas if va.id in visible
    ]


async def set_policy(
    tx: Transaction,
    actor: Actor,
    *,
    account_name: str,
    name: str,
    report_interval: int | None,
    authorization_validity: int | None,
    now: int,
) -> VirtualAccount:
    """Change how often the VA's devices report and how long their authorizations last."""
    account = await find_smart_account(tx, account_name, _NO_VAS, seen_by=actor)
    va = await find_virtual_account(tx, account, name)
    if report_interval is None and authorization_validity is None:
        authorize(actor, Permission.VA_READ, va.scope)
        return va
    authorize(actor, Permission.VA_MANAGE, va.scope)
    policy = Policy(
        report_interval=va.policy.report_interval if report_interval is None else report_interval,
        authorization_validity=(
            va.policy.authorization_validity
            if authorization_validity is None
            else authorization_validity
        ),
    )
    check_policy(policy)
    await tx.execute(
        "UPDATE virtual_accounts SET report_interval = ?, auth_validity = ? WHERE id = ?",
        (policy.report_interval, policy.authorization_validity, va.id),
    )
    await audit.append(
        tx,
        [
            _entry(
                actor,
                va,
                "va.policy",
                before=dataclasses.asdict(va.policy),
                after=dataclasses.asdict(policy),
            )
        ],
        now=now,
    )
    await append_change(tx, ChangeKind.VA_POLICY, now=now, account_id=account.id, va_ids=[va.id])
    return dataclasses.replace(va, policy=policy)
