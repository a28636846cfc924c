"""Users and their grants: who someone is, what they were given, and managing an account's users.

A user is an email address; what they may do comes only from grants (``rbac.py``). Users are
created the first time something is granted to them and never deleted, so the audit log's
"who" always names someone who existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from smartlic.collector import audit
from smartlic.collector.accounts import (
    Account,
    AccountKind,
    check_email,
    find_account,
    find_virtual_account,
    virtual_accounts_by_id,
)
from smartlic.collector.audit import AuditEntry
from smartlic.collector.errors import NotFound, Refused
from smartlic.collector.rbac import (
    Actor,
    Grant,
    Permission,
    Role,
    Scope,
    authorize,
    check_grant_shape,
    refuse_missing,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from smartlic.collector.store import Transaction


async def ensure_user(tx: Transaction, email: str, *, now: int) -> int:
    """The id of the user with ``email``, created if new."""
    email = check_email(email)
    row = await tx.fetch_one("SELECT id FROM users WHERE email = ?", (email,))
    if row is None:
        row = await tx.fetch_one(
            "INSERT INTO users (email, created_at) VALUES (?, ?) RETURNING id", (email, now)
        )
    if row is None:
        message = "INSERT ... RETURNING gave no row"
        raise RuntimeError(message)
    return int(row["id"])


async def grant_role(tx: Transaction, user_id: int, grant: Grant, *, by: str, now: int) -> None:
    existing = await tx.fetch_one(
        "SELECT id FROM grants WHERE user_id = ? AND role = ?"
        " AND COALESCE(account_id, 0) = ? AND COALESCE(va_id, 0) = ?",
        (user_id, str(grant.role), grant.account_id or 0, grant.va_id or 0),
    )
    if existing:
        raise Refused(f"the user already has {grant.role} there")
    await tx.execute(
        "INSERT INTO grants (user_id, role, account_id, va_id, granted_at, granted_by)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (user_id, str(grant.role), grant.account_id, grant.va_id, now, by),
    )


async def load_actor(tx: Transaction, email: str) -> Actor:
    """The acting user with their grants; an unknown user is refused."""
    email = check_email(email)
    rows = await tx.fetch_all(
        "SELECT u.id, g.role, g.account_id, g.va_id FROM users u"
        " LEFT JOIN grants g ON g.user_id = u.id WHERE u.email = ?",
        (email,),
    )
    if not rows:
        raise NotFound(f"unknown user {email}: nobody granted them a role")
    grants = tuple(
        Grant(
            Role(str(row["role"])),
            None if row["account_id"] is None else int(row["account_id"]),
            None if row["va_id"] is None else int(row["va_id"]),
        )
        for row in rows
        if row["role"] is not None
    )
    return Actor(email, grants)


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """One grant of one user in an account."""

    email: str
    role: Role
    va: str | None
    granted_at: int
    granted_by: str


async def _members(tx: Transaction, account: Account) -> list[tuple[Member, int | None]]:
    rows = await tx.fetch_all(
        "SELECT u.email, g.role, g.va_id, g.granted_at, g.granted_by FROM grants g"
        " JOIN users u ON u.id = g.user_id WHERE g.account_id = ? ORDER BY u.email, g.role",
        (account.id,),
    )
    vas = await virtual_accounts_by_id(
        tx, sorted({int(r["va_id"]) for r in rows if r["va_id"] is not None})
    )
    return [
        (
            Member(
                email=str(row["email"]),
                role=Role(str(row["role"])),
                va=None if row["va_id"] is None else vas[int(row["va_id"])].name,
                granted_at=int(row["granted_at"]),
                granted_by=str(row["granted_by"]),
            ),
            None if row["va_id"] is None else int(row["va_id"]),
        )
        for row in rows
    ]


def _grant_scope(account: Account, member: Member, va_id: int | None) -> Scope:
    if va_id is None:
        return account.scope
    return Scope(f"{account.name}/{member.va}", account.id, va_id)


async def list_users(tx: Transaction, actor: Actor, account_name: str) -> list[Member]:
    """The account's users and roles; a VA-scoped reader sees the grants of their VAs."""
    account = await find_account(tx, account_name, seen_by=actor)
    members = await _members(tx, account)
    if not actor.reaches(Permission.USER_READ, account.id):
        authorize(actor, Permission.USER_READ, account.scope)
    return [
        member
        for member, va_id in members
        if actor.may(Permission.USER_READ, _grant_scope(account, member, va_id))
    ]


async def add_user(
    tx: Transaction,
    actor: Actor,
    *,
    account_name: str,
    email: str,
    role: Role,
    va_name: str | None,
    now: int,
) -> Member:
    """Grant ``role`` in the account (or one of its VAs) to ``email``, creating the user."""
    account = await find_account(tx, account_name, seen_by=actor)
    check_grant_shape(role, account_kind=str(account.kind), has_va=va_name is not None)
    if va_name is not None:
        va = await find_virtual_account(tx, account, va_name)
        grant, scope = Grant(role, account.id, va.id), va.scope
    else:
        grant, scope = Grant(role, account.id), account.scope
    authorize(actor, Permission.USER_MANAGE, scope)
    email = check_email(email)
    user_id = await ensure_user(tx, email, now=now)
    try:
        await grant_role(tx, user_id, grant, by=actor.email, now=now)
    except Refused:
        raise Refused(f"{email} already has {role} on {scope.label}") from None
    after: dict[str, object] = {"role": str(role), "va": va_name}
    await audit.append(
        tx,
        [
            AuditEntry(
                actor=actor.email,
                action="user.add",
                subject=f"user {email}",
                account_id=account.id,
                after=after,
            )
        ],
        now=now,
    )
    return Member(email=email, role=role, va=va_name, granted_at=now, granted_by=actor.email)


def refuse_removing_last_admin(
    account: Account, removed: Sequence[Member], remaining: Sequence[Member]
) -> None:
    """An account keeps at least one admin, or nobody but the site operator could manage it."""
    admin = Role.PARTNER_ADMIN if account.kind is AccountKind.HOLDING else Role.SA_ADMIN
    if any(m.role is admin for m in removed) and not any(m.role is admin for m in remaining):
        raise Refused(
            f"{removed[0].email} is the last {admin} of {account.name}; grant {admin} to someone"
            " else first"
        )


def refuse_unless_may_remove(
    actor: Actor, account: Account, email: str, removed: Sequence[tuple[Member, int | None]]
) -> None:
    """Refuse unless ``actor`` may take ``email``'s grants ``removed`` away, telling no one more
    than ``list_users`` would: that the address has a role in the account, or on which VA.

    Someone who cannot read a grant is answered as if it did not exist (nothing to remove,
    or no ``user.read`` at all); a grant they can read but not manage is refused naming its
    scope; one they cannot read, naming only the account.
    """
    scopes = [_grant_scope(account, member, va_id) for member, va_id in removed]
    readable = [actor.may(Permission.USER_READ, scope) for scope in scopes]
    if not any(readable):
        refuse_missing(
            actor, Permission.USER_READ, account.scope, f"{email} has no role in {account.name}"
        )
    for scope, seen in zip(scopes, readable, strict=True):
        if not actor.may(Permission.USER_MANAGE, scope):
            authorize(actor, Permission.USER_MANAGE, scope if seen else account.scope)


async def remove_user(
    tx: Transaction, actor: Actor, *, account_name: str, email: str, now: int
) -> list[Member]:
    """Take every role ``email`` has in the account away; what was removed."""
    account = await find_account(tx, account_name, seen_by=actor)
    email = check_email(email)
    members = await _members(tx, account)
    removed = [(m, va_id) for m, va_id in members if m.email == email]
    refuse_unless_may_remove(actor, account, email, removed)
    refuse_removing_last_admin(
        account, [m for m, _ in removed], [m for m, _ in members if m.email != email]
    )
    await tx.execute(
        "DELETE FROM grants WHERE account_id = ?"
        " AND user_id = (SELECT id FROM users WHERE email = ?)",
        (account.id, email),
    )
    before: dict[str, object] = {
        "roles": [f"{m.role}@{m.va}" if m.va else str(m.role) for m, _ in removed]
    }
    await audit.append(
        tx,
        [
            AuditEntry(
                actor=actor.email,
                action="user.remove",
                subject=f"user {email}",
                account_id=account.id,
                before=before,
            )
        ],
        now=now,
    )
    return [m for m, _ in removed]
