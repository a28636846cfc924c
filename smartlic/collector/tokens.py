"""Registration tokens: made in a VA by an administrator, redeemed by a registering device.

A token lives for 1-365 days (30 by default) and serves ``max_uses`` registrations (1 by
default); it can be revoked. Only the SHA-256 of its secret is stored: the token string, which
also carries the collector key's fingerprint so a new device can trust its first reply, is shown
once, when it is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from smartlic.collector import audit
from smartlic.collector.accounts import (
    VirtualAccount,
    find_account,
    find_virtual_account,
    refuse_consumption_in_holding_account,
    virtual_account_or_default,
    virtual_accounts_of,
)
from smartlic.collector.audit import AuditEntry
from smartlic.collector.errors import InvalidRequest, NotFound, Refused
from smartlic.collector.rbac import (
    Actor,
    Permission,
    authorize,
    authorized_vas,
    refuse_missing,
    refuse_unseen,
)
from smartlic.collector.site import site_info
from smartlic.protocol import ErrorCode, RegistrationToken
from smartlic.protocol.tokens import SECRET_BYTES, TOKEN_ID_BYTES

if TYPE_CHECKING:
    from collections.abc import Callable

    from smartlic.collector.store import Row, Transaction

DAY: Final = 86_400
DEFAULT_EXPIRY_DAYS: Final = 30
MAX_EXPIRY_DAYS: Final = 365
MAX_DESCRIPTION: Final = 200
MAX_USES: Final = 1_000_000_000


class TokenStatus(StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"
    USED_UP = "used up"


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredToken:
    id: int
    token_id: str
    """16 hex digits: how administrators name the token."""
    secret_digest: bytes
    va_id: int
    va_name: str
    account_name: str
    description: str
    created_at: int
    created_by: str
    expires_at: int
    max_uses: int
    uses: int
    revoked_at: int | None

    @classmethod
    def from_row(cls, row: Row) -> StoredToken:
        return cls(
            id=int(row["id"]),
            token_id=str(row["token_id"]),
            secret_digest=bytes(row["secret_digest"]),
            va_id=int(row["va_id"]),
            va_name=str(row["va_name"]),
            account_name=str(row["account_name"]),
            description=str(row["description"]),
            created_at=int(row["created_at"]),
            created_by=str(row["created_by"]),
            expires_at=int(row["expires_at"]),
            max_uses=int(row["max_uses"]),
            uses=int(row["uses"]),
            revoked_at=None if row["revoked_at"] is None else int(row["revoked_at"]),
        )


_SELECT: Final = (
    "SELECT t.*, va.name AS va_name, a.name AS account_name FROM tokens t"
    " JOIN virtual_accounts va ON va.id = t.va_id JOIN accounts a ON a.id = va.account_id"
)


def check_token_terms(expires_days: int, max_uses: int, description: str) -> None:
    if not 1 <= expires_days <= MAX_EXPIRY_DAYS:
        raise InvalidRequest(f"a token expires after 1..{MAX_EXPIRY_DAYS} days, not {expires_days}")
    if not 1 <= max_uses <= MAX_USES:
        raise InvalidRequest(f"a token serves 1..{MAX_USES:,} registrations, not {max_uses}")
    if len(description) > MAX_DESCRIPTION or not description.isprintable():
        raise InvalidRequest(f"a description is at most {MAX_DESCRIPTION} printable characters")


def token_status(token: StoredToken, now: int) -> TokenStatus:
    """Revoked beats expired beats used up: the first reason a token stopped working."""
    if token.revoked_at is not None:
        return TokenStatus.REVOKED
    if now >= token.expires_at:
        return TokenStatus.EXPIRED
    if token.uses >= token.max_uses:
        return TokenStatus.USED_UP
    return TokenStatus.ACTIVE


_REFUSALS: Final = {
    TokenStatus.REVOKED: ErrorCode.TOKEN_REVOKED,
    TokenStatus.EXPIRED: ErrorCode.TOKEN_EXPIRED,
    TokenStatus.USED_UP: ErrorCode.TOKEN_USED_UP,
}


def check_token_usable(token: StoredToken, now: int) -> None:
    """Refuse a registration with a token that no longer works, with the wire code why."""
    status = token_status(token, now)
    if status is not TokenStatus.ACTIVE:
        raise Refused(f"registration token {token.token_id} is {status}", code=_REFUSALS[status])


async def create_token(  # noqa: PLR0913 -- keyword-only fields of one request
    tx: Transaction,
    actor: Actor,
    *,
    account_name: str,
    va_name: str | None,
    expires_days: int = DEFAULT_EXPIRY_DAYS,
    max_uses: int = 1,
    description: str = "",
    now: int,
    entropy: Callable[[int], bytes],
) -> tuple[StoredToken, RegistrationToken]:
    """A token for the VA (default VA if none); the token itself is only returned here."""
    account = await find_account(tx, account_name, seen_by=actor)
    refuse_consumption_in_holding_account(account, "registration tokens")
    va = await virtual_account_or_default(tx, account, va_name)
    authorize(actor, Permission.TOKEN_MANAGE, va.scope)
    check_token_terms(expires_days, max_uses, description)
    site = await site_info(tx)
    token = RegistrationToken(
        token_id=entropy(TOKEN_ID_BYTES),
        secret=entropy(SECRET_BYTES),
        collector_fingerprint=site.key_fingerprint,
    )
    await tx.execute(
        "INSERT INTO tokens (token_id, secret_digest, va_id, description, created_at,"
        " created_by, expires_at, max_uses) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            token.token_id_text,
            token.secret_digest,
            va.id,
            description,
            now,
            actor.email,
            now + expires_days * DAY,
            max_uses,
        ),
    )
    await audit.append(
        tx,
        [
            AuditEntry(
                actor=actor.email,
                action="token.create",
                subject=f"token {token.token_id_text} in {va.scope.label}",
                account_id=account.id,
                after={
                    "expires_days": expires_days,
                    "max_uses": max_uses,
                    "description": description,
                },
            )
        ],
        now=now,
    )
    return await _find(tx, token.token_id_text), token


async def _find(tx: Transaction, token_id: str) -> StoredToken:
    token = await _find_or_none(tx, token_id)
    if token is None:
        raise NotFound(f"no token {token_id}")
    return token


async def _find_or_none(tx: Transaction, token_id: str) -> StoredToken | None:
    row = await tx.fetch_one(f"{_SELECT} WHERE t.token_id = ?", (token_id,))
    return None if row is None else StoredToken.from_row(row)


async def list_tokens(tx: Transaction, actor: Actor, account_name: str) -> list[StoredToken]:
    """The account's tokens (in the VAs the actor may see), newest first."""
    account = await find_account(tx, account_name, seen_by=actor)
    refuse_consumption_in_holding_account(account, "registration tokens")
    vas = await virtual_accounts_of(tx, account)
    visible = authorized_vas(actor, Permission.TOKEN_READ, account.scope, _pairs(vas))
    rows = await tx.fetch_all(
        f"{_SELECT} WHERE va.account_id = ? ORDER BY t.created_at DESC, t.id DESC",
        (account.id,),
    )
    return [StoredToken.from_row(r) for r in rows if int(r["va_id"]) in visible]


def _pairs(vas: list[VirtualAccount]) -> list[tuple[int, str]]:
    return [(va.id, va.name) for va in vas]


async def revoke_token(
    tx: Transaction, actor: Actor, *, account_name: str, token_id: str, now: int
) -> StoredToken:
    account = await find_account(tx, account_name, seen_by=actor)
    refuse_consumption_in_holding_account(account, "registration tokens")
    token = await _find_or_none(tx, token_id.strip().lower())
    missing = f"{account.name} has no token {token_id}"
    if token is None or token.account_name != account.name:
        refuse_missing(actor, Permission.TOKEN_READ, account.scope, missing)
    va = await find_virtual_account(tx, account, token.va_name)
    refuse_unseen(actor, Permission.TOKEN_READ, account.scope, va.scope, missing)
    authorize(actor, Permission.TOKEN_MANAGE, va.scope)
    if token.revoked_at is not None:
        raise Refused(f"token {token.token_id} is already revoked")
    await tx.execute(
        "UPDATE tokens SET revoked_at = ?, revoked_by = ? WHERE id = ?",
        (now, actor.email, token.id),
    )
    await audit.append(
        tx,
        [
            AuditEntry(
                actor=actor.email,
                action="token.revoke",
                subject=f"token {token.token_id} in {va.scope.label}",
                account_id=account.id,
                before={"status": str(token_status(token, now))},
                after={"status": str(TokenStatus.REVOKED)},
            )
        ],
        now=now,
    )
    return await _find(tx, token.token_id)


async def redeem_token(
    tx: Transaction, token: RegistrationToken, *, collector_fingerprint: bytes, now: int
) -> StoredToken:
    """Count one use of ``token`` for a registration, or refuse with the wire code why.

    Nothing is written unless the token is good, and the use is counted by one conditional
    update, so two registrations can never both take a token's last use.
    """
    unknown = Refused("unknown registration token", code=ErrorCode.TOKEN_UNKNOWN)
    if token.collector_fingerprint != collector_fingerprint:
        raise Refused(
            "the registration token was made for another collector", code=ErrorCode.TOKEN_UNKNOWN
        )
    row = await tx.fetch_one(f"{_SELECT} WHERE t.token_id = ?", (token.token_id_text,))
    if row is None:
        raise unknown
    stored = StoredToken.from_row(row)
    if not token.matches(stored.secret_digest):
        raise unknown
    check_token_usable(stored, now)
    counted = await tx.execute(
        "UPDATE tokens SET uses = uses + 1 WHERE id = ? AND uses < max_uses AND revoked_at IS NULL",
        (stored.id,),
    )
    if counted != 1:
        raise Refused(
            f"registration token {stored.token_id} is used up", code=ErrorCode.TOKEN_USED_UP
        )
    return await _find(tx, stored.token_id)
