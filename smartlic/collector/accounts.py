"""Smart accounts, partner holding accounts and their virtual accounts: what they are, and how
to find them.

A smart account (SA) is a customer's; it always has virtual accounts (VAs), one of them the
default, and licenses pool per VA. A partner holding account (PHA) holds orders for a customer
not known yet; it has no VAs, so nothing in it can ever be consumed. The operations that change
VAs are in ``virtual_accounts.py``; creating accounts is the site operator's (``site.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from smartlic.collector.errors import InvalidRequest, NotFound, Refused
from smartlic.collector.rbac import Actor, Permission, Scope, authorize_somewhere
from smartlic.protocol import ErrorCode, LocalProtocolError
from smartlic.protocol import fields as protocol_fields

if TYPE_CHECKING:
    from smartlic.collector.store import Row, Transaction

DEFAULT_VA_NAME: Final = "DEFAULT"
MIN_REPORT_INTERVAL: Final = 60
_EMAIL_RE: Final = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}")


class AccountKind(StrEnum):
    SMART = "smart"
    HOLDING = "holding"


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    id: int
    name: str
    kind: AccountKind
    created_at: int

    @property
    def scope(self) -> Scope:
        return Scope(self.name, self.id)

    @classmethod
    def from_row(cls, row: Row) -> Account:
        return cls(
            id=int(row["id"]),
            name=str(row["name"]),
            kind=AccountKind(str(row["kind"])),
            created_at=int(row["created_at"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """How often a VA's devices report and how long an authorization lasts (SPEC §3)."""

    report_interval: int = 86_400
    authorization_validity: int = 90 * 86_400


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualAccount:
    id: int
    account_id: int
    account_name: str
    name: str
    is_default: bool
    policy: Policy
    created_at: int

    @property
    def scope(self) -> Scope:
        return Scope(f"{self.account_name}/{self.name}", self.account_id, self.id)

    @classmethod
    def from_row(cls, row: Row) -> VirtualAccount:
        return cls(
            id=int(row["id"]),
            account_id=int(row["account_id"]),
            account_name=str(row["account_name"]),
            name=str(row["name"]),
            is_default=bool(row["is_default"]),
            policy=Policy(
                report_interval=int(row["report_interval"]),
                authorization_validity=int(row["auth_validity"]),
            ),
            created_at=int(row["created_at"]),
        )


VA_COLUMNS: Final = (
    "va.id, va.account_id, a.name AS account_name, va.name, va.is_default,"
    " va.report_interval, va.auth_validity, va.created_at"
)
VA_FROM: Final = "virtual_accounts va JOIN accounts a ON a.id = va.account_id"


def check_name(what: str, name: str) -> str:
    """A name people type and devices are told: 1-128 printable characters, no edge spaces."""
    try:
        protocol_fields.name(what, name)
    except LocalProtocolError as exc:
        raise InvalidRequest(f"{what} {name!r}: {exc.message}") from None
    if name != name.strip():
        raise InvalidRequest(f"{what} {name!r} must not start or end with a space")
    return name


def check_email(email: str) -> str:
    """A user's email, lower-cased: how users are named everywhere."""
    normalized = email.strip().lower()
    if not _EMAIL_RE.fullmatch(normalized):
        raise InvalidRequest(f"{email!r} is not an email address")
    return normalized


def check_policy(policy: Policy) -> None:
    """A VA policy devices can live by: reports often enough to renew an authorization."""
    if policy.report_interval < MIN_REPORT_INTERVAL:
        raise InvalidRequest(f"the report interval must be at least {MIN_REPORT_INTERVAL} s")
    if policy.report_interval > protocol_fields.PERIOD_MAX:
        raise InvalidRequest("the report interval must be at most 10 years")
    if policy.authorization_validity > protocol_fields.PERIOD_MAX:
        # An authorization's end must stay a protocol timestamp (< 2**40 s) for any issue time.
        raise InvalidRequest("the authorization validity must be at most 10 years")
    if policy.authorization_validity <= policy.report_interval:
        raise InvalidRequest(
            f"the authorization validity ({policy.authorization_validity} s) must be longer"
            f" than the report interval ({policy.report_interval} s), or authorizations lapse"
            " between reports"
        )


def require_smart_account(account: Account, doing: str) -> None:
    """Refuse what only makes sense in a smart account (VAs, transfers between VAs)."""
    if account.kind is AccountKind.HOLDING:
        raise Refused(f"{account.name} is a partner holding account: it has no {doing}")


def refuse_consumption_in_holding_account(account: Account, doing: str) -> None:
    """SPEC §2: licenses in a holding account are never consumed — no token, no device there."""
    if account.kind is AccountKind.HOLDING:
        raise Refused(
            f"{account.name} is a partner holding account: its licenses can never be consumed,"
            f" so it has no {doing}",
            code=ErrorCode.TOKEN_HOLDING_ACCOUNT,
        )


async def find_account(tx: Transaction, name: str, *, seen_by: Actor | None) -> Account:
    """The account named ``name``, as ``seen_by`` may know of it.

    One who holds no role in an account cannot list it, so for them it is not there, just as
    an account that does not exist: a refusal never tells anyone of what they could not list
    (docs/collector.md, *Roles*). ``seen_by`` is None where an account is named as a
    destination, which takes no role in it (a partner delivering an order to a customer).
    """
    row = await tx.fetch_one("SELECT * FROM accounts WHERE name = ?", (name,))
    if row is None or (
        seen_by is not None and not seen_by.reaches(Permission.ACCOUNT_READ, int(row["id"]))
    ):
        raise NotFound(f"no account named {name!r}")
    return Account.from_row(row)


async def find_smart_account(
    tx: Transaction, name: str, doing: str, *, seen_by: Actor | None
) -> Account:
    account = await find_account(tx, name, seen_by=seen_by)
    require_smart_account(account, doing)
    return account


async def account_by_id(tx: Transaction, account_id: int) -> Account:
    row = await tx.fetch_one("SELECT * FROM accounts WHERE id = ?", (account_id,))
    if row is None:
        raise NotFound(f"no account with id {account_id}")
    return Account.from_row(row)


async def find_virtual_account(tx: Transaction, account: Account, name: str) -> VirtualAccount:
    """A live VA of ``account`` by name."""
    require_smart_account(account, "virtual accounts")
    row = await tx.fetch_one(
        f"SELECT {VA_COLUMNS} FROM {VA_FROM}"  # noqa: S608 -- fixed column and table lists
        " WHERE va.account_id = ? AND va.name = ? AND va.deleted_at IS NULL",
        (account.id, name),
    )
    if row is None:
        raise NotFound(f"{account.name} has no virtual account named {name!r}")
    return VirtualAccount.from_row(row)


async def default_virtual_account(tx: Transaction, account: Account) -> VirtualAccount:
    require_smart_account(account, "virtual accounts")
    row = await tx.fetch_one(
        f"SELECT {VA_COLUMNS} FROM {VA_FROM}"  # noqa: S608 -- fixed column and table lists
        " WHERE va.account_id = ? AND va.is_default = 1",
        (account.id,),
    )
    if row is None:
        message = f"{account.name} has no default virtual account"
        raise RuntimeError(message)
    return VirtualAccount.from_row(row)


async def virtual_account_or_default(
    tx: Transaction, account: Account, name: str | None
) -> VirtualAccount:
    if name is None:
        return await default_virtual_account(tx, account)
    return await find_virtual_account(tx, account, name)


async def virtual_accounts_of(tx: Transaction, account: Account) -> list[VirtualAccount]:
    """The live VAs of ``account``, by name."""
    rows = await tx.fetch_all(
        f"SELECT {VA_COLUMNS} FROM {VA_FROM}"  # noqa: S608 -- fixed column and table lists
        " WHERE va.account_id = ? AND va.deleted_at IS NULL ORDER BY va.name",
        (account.id,),
    )
    return [VirtualAccount.from_row(row) for row in rows]


async def virtual_accounts_by_id(tx: Transaction, va_ids: list[int]) -> dict[int, VirtualAccount]:
    """VAs by id, deleted ones included (history names them)."""
    rows = await tx.fetch_in(
        f"SELECT {VA_COLUMNS} FROM {VA_FROM} WHERE va.id IN ({{in}})",  # noqa: S608 -- fixed lists
        va_ids,
    )
    return {int(row["id"]): VirtualAccount.from_row(row) for row in rows}


async def insert_account(tx: Transaction, name: str, kind: AccountKind, *, now: int) -> Account:
    name = check_name("account name", name)
    if await tx.fetch_one("SELECT id FROM accounts WHERE name = ?", (name,)):
        raise Refused(f"an account named {name!r} already exists")
    row = await tx.fetch_one(
        "INSERT INTO accounts (name, kind, created_at) VALUES (?, ?, ?) RETURNING *",
        (name, str(kind), now),
    )
    if row is None:
        message = "INSERT ... RETURNING gave no row"
        raise RuntimeError(message)
    return Account.from_row(row)


async def insert_virtual_account(
    tx: Transaction, account: Account, name: str, *, is_default: bool, now: int
) -> VirtualAccount:
    name = check_name("virtual account name", name)
    await refuse_taken_va_name(tx, account, name)
    row = await tx.fetch_one(
        "INSERT INTO virtual_accounts (account_id, name, is_default, created_at)"
        " VALUES (?, ?, ?, ?) RETURNING id",
        (account.id, name, int(is_default), now),
    )
    if row is None:
        message = "INSERT ... RETURNING gave no row"
        raise RuntimeError(message)
    return await find_virtual_account(tx, account, name)


async def refuse_taken_va_name(tx: Transaction, account: Account, name: str) -> None:
    """VA names are unique among an account's live VAs."""
    taken = await tx.fetch_one(
        "SELECT id FROM virtual_accounts WHERE account_id = ? AND name = ? AND deleted_at IS NULL",
        (account.id, name),
    )
    if taken:
        raise Refused(f"{account.name} already has a virtual account named {name!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountSummary:
    account: Account
    virtual_accounts: int
    default_va: str | None


async def list_accounts(tx: Transaction, actor: Actor) -> list[AccountSummary]:
    """The accounts the actor can see (all of them for the site operator)."""
    rows = await tx.fetch_all(
        "SELECT a.*, (SELECT COUNT(*) FROM virtual_accounts v"
        "  WHERE v.account_id = a.id AND v.deleted_at IS NULL) AS va_count,"
        " (SELECT v.name FROM virtual_accounts v"
        "  WHERE v.account_id = a.id AND v.is_default = 1) AS default_va"
        " FROM accounts a ORDER BY a.name"
    )
    authorize_somewhere(actor, Permission.ACCOUNT_READ)
    visible = [row for row in rows if actor.reaches(Permission.ACCOUNT_READ, int(row["id"]))]
    return [
        AccountSummary(
            account=Account.from_row(row),
            virtual_accounts=int(row["va_count"]),
            default_va=None if row["default_va"] is None else str(row["default_va"]),
        )
        for row in visible
    ]
