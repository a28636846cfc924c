"""The installation itself and the site operator's work: initialising, and creating accounts.

``init`` records the collector key's fingerprint (what every registration token embeds) and
the first site operator. Only the site operator creates smart accounts and partner holding
accounts, naming their first admins; everything after that is the account's own business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from smartlic.collector import audit
from smartlic.collector.accounts import (
    DEFAULT_VA_NAME,
    Account,
    AccountKind,
    VirtualAccount,
    check_email,
    insert_account,
    insert_virtual_account,
)
from smartlic.collector.audit import AuditEntry
from smartlic.collector.errors import Refused
from smartlic.collector.rbac import (
    SITE,
    Actor,
    Grant,
    Permission,
    Role,
    authorize,
    authorize_somewhere,
)
from smartlic.collector.users import ensure_user, grant_role
from smartlic.protocol import KeyType, format_fingerprint

if TYPE_CHECKING:
    from smartlic.collector.store import Transaction
    from smartlic.protocol import VerifyingKey


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteInfo:
    created_at: int
    key_type: KeyType
    key_fingerprint: bytes


async def site_info(tx: Transaction) -> SiteInfo:
    row = await tx.fetch_one("SELECT * FROM site WHERE id = 1")
    if row is None:
        raise Refused("this collector is not initialised: run `smartlic-collector init` first")
    return SiteInfo(
        created_at=int(row["created_at"]),
        key_type=KeyType(str(row["key_type"])),
        key_fingerprint=bytes(row["key_fingerprint"]),
    )


async def collector_key_info(tx: Transaction, actor: Actor) -> SiteInfo:
    """What ``key show`` checks the key file against; any user may see it (tokens carry it)."""
    authorize_somewhere(actor, Permission.KEY_READ)
    return await site_info(tx)


async def init_site(
    tx: Transaction, *, operator_email: str, collector_key: VerifyingKey, now: int
) -> None:
    """Record the collector key and the first site operator; once per installation."""
    if await tx.fetch_one("SELECT id FROM site WHERE id = 1"):
        raise Refused("this collector is already initialised")
    operator_email = check_email(operator_email)
    await tx.execute(
        "INSERT INTO site (id, created_at, key_type, key_fingerprint) VALUES (1, ?, ?, ?)",
        (now, collector_key.key_type.value, collector_key.fingerprint),
    )
    user_id = await ensure_user(tx, operator_email, now=now)
    await grant_role(tx, user_id, Grant(Role.SITE_OPERATOR), by="init", now=now)
    after: dict[str, object] = {
        "site_operator": operator_email,
        "key_type": collector_key.key_type.value,
        "key_fingerprint": format_fingerprint(collector_key.fingerprint),
    }
    await audit.append(
        tx,
        [AuditEntry(actor=operator_email, action="site.init", subject="site", after=after)],
        now=now,
    )


async def create_smart_account(
    tx: Transaction, actor: Actor, *, name: str, admin_email: str, now: int
) -> tuple[Account, VirtualAccount]:
    """A customer SA, its default VA (named DEFAULT) and its first SA admin, together."""
    authorize(actor, Permission.SITE_MANAGE, SITE)
    admin_email = check_email(admin_email)
    account = await insert_account(tx, name, AccountKind.SMART, now=now)
    default_va = await insert_virtual_account(
        tx, account, DEFAULT_VA_NAME, is_default=True, now=now
    )
    admin_id = await ensure_user(tx, admin_email, now=now)
    await grant_role(tx, admin_id, Grant(Role.SA_ADMIN, account.id), by=actor.email, now=now)
    after: dict[str, object] = {
        "kind": "smart",
        "default_va": DEFAULT_VA_NAME,
        "admin": admin_email,
    }
    await audit.append(
        tx,
        [
            AuditEntry(
                actor=actor.email,
                action="account.create",
                subject=f"account {account.name}",
                account_id=account.id,
                after=after,
            )
        ],
        now=now,
    )
    return account, default_va


async def create_holding_account(
    tx: Transaction, actor: Actor, *, name: str, admin_email: str, now: int
) -> Account:
    """A partner holding account and its first partner admin."""
    authorize(actor, Permission.SITE_MANAGE, SITE)
    admin_email = check_email(admin_email)
    account = await insert_account(tx, name, AccountKind.HOLDING, now=now)
    admin_id = await ensure_user(tx, admin_email, now=now)
    await grant_role(tx, admin_id, Grant(Role.PARTNER_ADMIN, account.id), by=actor.email, now=now)
    after: dict[str, object] = {"kind": "holding", "admin": admin_email}
    await audit.append(
        tx,
        [
            AuditEntry(
                actor=actor.email,
                action="holding.create",
                subject=f"holding account {account.name}",
                account_id=account.id,
                after=after,
            )
        ],
        now=now,
    )
    return account
