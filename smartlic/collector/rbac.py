"""Roles, permissions and scopes: who may do what, and where.

Theory of operation: a user holds *grants*; a grant is a role over a scope — the whole site
(the site operator), an account (a smart account or a partner holding account), or one virtual
account. Every operation names one :class:`Permission` and the :class:`Scope` it acts on; it
is allowed when some grant of the actor both carries the permission (the matrix below, the one
place that says what each role may do) and covers the scope (a site grant covers everything,
an account grant covers the account and its VAs, a VA grant covers that VA only). Listings
over an account show VA-scoped users only the VAs they are granted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final, NoReturn

from smartlic.collector.errors import InvalidRequest, NotFound, PermissionDenied

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


class Role(StrEnum):
    SITE_OPERATOR = "site-operator"
    SA_ADMIN = "sa-admin"
    SA_USER = "sa-user"
    VA_ADMIN = "va-admin"
    VA_USER = "va-user"
    VIEWER = "viewer"
    PARTNER_ADMIN = "partner-admin"


class Permission(StrEnum):
    SITE_MANAGE = "site.manage"
    """Create smart accounts and partner holding accounts, naming their first admins."""
    ORDER_DEPOSIT = "order.deposit"
    """Orders come from the vendor's order system, run by the site operator."""
    AUDIT_VERIFY = "audit.verify"
    KEY_READ = "key.read"
    ACCOUNT_READ = "account.read"
    VA_READ = "va.read"
    VA_MANAGE = "va.manage"
    ORDER_READ = "order.read"
    ORDER_TRANSFER = "order.transfer"
    LICENSE_READ = "license.read"
    LICENSE_TRANSFER = "license.transfer"
    TOKEN_READ = "token.read"
    TOKEN_MANAGE = "token.manage"
    DEVICE_READ = "device.read"
    DEVICE_MANAGE = "device.manage"
    USAGE_READ = "usage.read"
    USER_READ = "user.read"
    USER_MANAGE = "user.manage"
    AUDIT_READ = "audit.read"


ROLES: Final = tuple(Role)

X, _ = True, False
# fmt: off
PERMISSION_MATRIX: Final[Mapping[Permission, tuple[bool, ...]]] = {
    #                             site-op sa-adm sa-usr va-adm va-usr viewer partner
    Permission.SITE_MANAGE:      (X,      _,     _,     _,     _,     _,     _),
    Permission.ORDER_DEPOSIT:    (X,      _,     _,     _,     _,     _,     _),
    Permission.AUDIT_VERIFY:     (X,      _,     _,     _,     _,     _,     _),
    Permission.KEY_READ:         (X,      X,     X,     X,     X,     X,     X),
    Permission.ACCOUNT_READ:     (X,      X,     X,     X,     X,     X,     X),
    Permission.VA_READ:          (X,      X,     X,     X,     X,     X,     _),
    Permission.VA_MANAGE:        (X,      X,     X,     _,     _,     _,     _),
    Permission.ORDER_READ:       (X,      X,     X,     X,     X,     X,     X),
    Permission.ORDER_TRANSFER:   (X,      _,     _,     _,     _,     _,     X),
    Permission.LICENSE_READ:     (X,      X,     X,     X,     X,     X,     _),
    Permission.LICENSE_TRANSFER: (X,      X,     X,     X,     X,     _,     _),
    Permission.TOKEN_READ:       (X,      X,     X,     X,     X,     X,     _),
    Permission.TOKEN_MANAGE:     (X,      X,     X,     X,     X,     _,     _),
    Permission.DEVICE_READ:      (X,      X,     X,     X,     X,     X,     _),
    Permission.DEVICE_MANAGE:    (X,      X,     X,     X,     X,     _,     _),
    Permission.USAGE_READ:       (X,      X,     X,     X,     X,     X,     _),
    Permission.USER_READ:        (X,      X,     X,     X,     X,     X,     X),
    Permission.USER_MANAGE:      (X,      X,     _,     X,     _,     _,     X),
    Permission.AUDIT_READ:       (X,      X,     X,     X,     X,     X,     X),
}
# fmt: on
"""What each role may do, in the order of :data:`ROLES`; the scope a grant covers limits where."""

ROLE_PERMISSIONS: Final[Mapping[Role, frozenset[Permission]]] = {
    role: frozenset(p for p, allowed in PERMISSION_MATRIX.items() if allowed[column])
    for column, role in enumerate(ROLES)
}


@dataclass(frozen=True, slots=True)
class Scope:
    """What an operation acts on: the site, one account, or one VA of an account."""

    label: str
    account_id: int | None = None
    va_id: int | None = None


SITE: Final = Scope("the site")


@dataclass(frozen=True, slots=True)
class Grant:
    role: Role
    account_id: int | None = None
    va_id: int | None = None

    def covers(self, scope: Scope) -> bool:
        if self.account_id is None:
            return True
        if scope.account_id != self.account_id:
            return False
        return self.va_id is None or self.va_id == scope.va_id


@dataclass(frozen=True, slots=True)
class Actor:
    """The acting user and everything they were granted."""

    email: str
    grants: tuple[Grant, ...]

    def may(self, permission: Permission, scope: Scope) -> bool:
        return any(
            permission in ROLE_PERMISSIONS[grant.role] and grant.covers(scope)
            for grant in self.grants
        )

    def reaches(self, permission: Permission, account_id: int) -> bool:
        """Whether some grant with ``permission`` reaches into the account (or a VA of it)."""
        return any(
            permission in ROLE_PERMISSIONS[grant.role] and grant.account_id in (None, account_id)
            for grant in self.grants
        )


def authorize(actor: Actor, permission: Permission, scope: Scope) -> None:
    """Refuse, naming the missing permission, unless ``actor`` may do it on ``scope``."""
    if not actor.may(permission, scope):
        raise PermissionDenied(
            f"permission denied: {actor.email} lacks {permission} on {scope.label}",
            permission=permission,
        )


def authorize_somewhere(actor: Actor, permission: Permission) -> None:
    """For what belongs to no scope (the collector key's fingerprint, one's own accounts):
    any grant carrying ``permission`` will do."""
    if not any(permission in ROLE_PERMISSIONS[grant.role] for grant in actor.grants):
        raise PermissionDenied(
            f"permission denied: {actor.email} lacks {permission} (no role grants it)",
            permission=permission,
        )


def refuse_unseen(
    actor: Actor, permission: Permission, account: Scope | None, scope: Scope, missing: str
) -> None:
    """Unless ``actor`` may ``permission`` (a read) on ``scope``, where the object named was
    found, answer as if it had not been (:func:`refuse_missing`)."""
    if not actor.may(permission, scope):
        refuse_missing(actor, permission, account, missing)


def refuse_missing(
    actor: Actor, permission: Permission, account: Scope | None, missing: str
) -> NoReturn:
    """``NotFound(missing)``; or, for one who may read nothing of the kind in the ``account``
    they named, the refusal for that, as its listing would refuse them. ``account`` is
    ``None`` when the object was named without one (an order number): naming the account it
    is in would tell what the caller did not know.

    So a refusal never tells anyone of an object they could not list: whoever cannot read it
    cannot tell it from one that does not exist, found or not.
    """
    if account is not None and not actor.reaches(permission, account.account_id or 0):
        authorize(actor, permission, account)
    raise NotFound(missing)


def authorized_vas(
    actor: Actor, permission: Permission, account: Scope, vas: Iterable[tuple[int, str]]
) -> set[int]:
    """Which of the account's ``(id, name)`` VAs the actor may see; refused if none.

    An account-wide listing shows a VA-scoped user their VAs only, and refuses one who has
    nothing there at all (with the account as the scope the permission is missing on).
    """
    allowed = {
        va_id
        for va_id, name in vas
        if actor.may(permission, Scope(f"{account.label}/{name}", account.account_id, va_id))
    }
    if not allowed and not actor.may(permission, account):
        authorize(actor, permission, account)
    return allowed


def check_grant_shape(role: Role, *, account_kind: str | None, has_va: bool) -> None:
    """Where a role can be granted: each role has the kind of scope it makes sense on."""
    if role is Role.SITE_OPERATOR:
        if account_kind is not None:
            raise InvalidRequest("site-operator is granted on the site, not on an account")
        return
    if account_kind == "holding":
        if role not in (Role.PARTNER_ADMIN, Role.VIEWER):
            raise InvalidRequest(f"{role} cannot be granted on a holding account")
        if has_va:
            raise InvalidRequest("a holding account has no virtual accounts")
        return
    if role is Role.PARTNER_ADMIN:
        raise InvalidRequest("partner-admin is granted on a holding account")
    if role in (Role.VA_ADMIN, Role.VA_USER) and not has_va:
        raise InvalidRequest(f"{role} needs --va: it is scoped to one virtual account")
    if role in (Role.SA_ADMIN, Role.SA_USER) and has_va:
        raise InvalidRequest(f"{role} covers the whole smart account; use va-admin or va-user")
