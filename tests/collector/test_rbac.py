"""Every role and every operation: allowed, or refused naming the missing permission.

The expected table below is written by hand, independently of ``rbac.PERMISSION_MATRIX``: it
says what each role *should* be able to do in a typical site, scopes included (the VA-scoped
roles and the viewer of this site are granted on ACME/Engineering and ACME respectively).
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import pytest
from smartlic.collector import audit
from smartlic.collector import site as site_ops
from smartlic.collector.accounts import list_accounts
from smartlic.collector.compliance import usage
from smartlic.collector.device_admin import deregister_device, list_devices, move_device
from smartlic.collector.errors import InvalidRequest, NotFound, PermissionDenied
from smartlic.collector.licenses import provenance, transfer_licenses
from smartlic.collector.orders import OrderLine, deposit_order, list_orders, transfer_order
from smartlic.collector.rbac import ROLES, Permission, Role
from smartlic.collector.store import open_store
from smartlic.collector.tokens import create_token, list_tokens, revoke_token
from smartlic.collector.users import add_user, list_users, remove_user
from smartlic.collector.virtual_accounts import (
    create_virtual_account,
    delete_virtual_account,
    list_virtual_accounts,
    rename_virtual_account,
    set_default_virtual_account,
    set_policy,
)

from .collector_support import ALICE, NOW, OPERATOR, PAT, Site

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

USERS: Final = {
    Role.SITE_OPERATOR: OPERATOR,
    Role.SA_ADMIN: ALICE,
    Role.SA_USER: "sam@acme.example",
    Role.VA_ADMIN: "vera@acme.example",
    Role.VA_USER: "vic@acme.example",
    Role.VIEWER: "wendy@acme.example",
    Role.PARTNER_ADMIN: PAT,
}
NA = "network-advantage"
TOKEN_ENTROPY = bytes(range(24))


def _entropy(size: int) -> bytes:
    return random.Random(size).randbytes(size)  # noqa: S311 -- reproducible, not secret


async def _build(path: Path) -> None:
    store = await open_store(path)
    world = Site(store)
    try:
        for role, email in USERS.items():
            if role in (Role.SA_USER, Role.VIEWER):
                await world.run(
                    add_user, account_name="ACME", email=email, role=role, va_name=None, now=NOW
                )
            elif role in (Role.VA_ADMIN, Role.VA_USER):
                await world.run(
                    add_user,
                    account_name="ACME",
                    email=email,
                    role=role,
                    va_name="Engineering",
                    now=NOW,
                )
        await world.run(
            add_user,
            account_name="ACME",
            email="extra@acme.example",
            role=Role.VA_USER,
            va_name="Engineering",
            now=NOW,
        )
        await world.run(create_virtual_account, account_name="ACME", name="Spare", now=NOW)
        await world.run(
            deposit_order,
            number="PO-E",
            ordered_on=NOW,
            account_name="ACME",
            va_name="Engineering",
            lines=[OrderLine(tag=NA, quantity=10)],
            now=NOW,
        )
        await world.run(
            deposit_order,
            number="PO-H",
            ordered_on=NOW,
            account_name="PartnerCo",
            lines=[OrderLine(tag=NA, quantity=10)],
            now=NOW,
        )
        await world.run(
            create_token,
            account_name="ACME",
            va_name="Engineering",
            now=NOW,
            entropy=lambda n: TOKEN_ENTROPY[:n],
        )
        [device] = await world.register("ACME", "Engineering", "S1")
        await world.report(device, {NA: 1})
    finally:
        await store.close()


@pytest.fixture(scope="module")
def rbac_template(site_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rbac") / "rbac.db"
    shutil.copyfile(site_template, path)
    asyncio.run(_build(path))
    return path


EXPECTED: Final = """
operation            permission        op  saA saU vaA vaU vw  pA
account create       site.manage       X   .   .   .   .   .   .
holding create       site.manage       X   .   .   .   .   .   .
account list         account.read      X   X   X   X   X   X   X
key show             key.read          X   X   X   X   X   X   X
va create            va.manage         X   X   X   .   .   .   .
va list              va.read           X   X   X   X   X   X   .
va rename            va.manage         X   X   X   .   .   .   .
va delete            va.manage         X   X   X   .   .   .   .
va set-default       va.manage         X   X   X   .   .   .   .
va policy set        va.manage         X   X   X   .   .   .   .
va policy show       va.read           X   X   X   X   X   X   .
order deposit SA     order.deposit     X   .   .   .   .   .   .
order deposit PHA    order.deposit     X   .   .   .   .   .   .
order transfer       order.transfer    X   .   .   .   .   .   X
order list SA        order.read        X   X   X   X   X   X   .
order list PHA       order.read        X   .   .   .   .   .   X
license transfer     license.transfer  X   X   X   .   .   .   .
license list         license.read      X   X   X   X   X   X   .
token create         token.manage      X   X   X   X   X   .   .
token list           token.read        X   X   X   X   X   X   .
token revoke         token.manage      X   X   X   X   X   .   .
device list          device.read       X   X   X   X   X   X   .
device move          device.manage     X   X   X   .   .   .   .
device deregister    device.manage     X   X   X   X   X   .   .
user add va-user     user.manage       X   X   .   X   .   .   .
user add sa-user     user.manage       X   X   .   .   .   .   .
user list            user.read         X   X   X   X   X   X   .
user remove          user.manage       X   X   .   X   .   .   .
usage                usage.read        X   X   X   X   X   X   .
audit SA             audit.read        X   X   X   .   .   X   .
audit PHA            audit.read        X   .   .   .   .   .   X
audit verify         audit.verify      X   .   .   .   .   .   .
"""
"""Columns: site-operator, sa-admin, sa-user, va-admin and va-user (both on
ACME/Engineering), viewer (on ACME), partner-admin (on PartnerCo). Moving a device or licenses
from Engineering to DEFAULT needs the permission on both VAs, which the VA roles lack."""

ENGINEERING: Final = {"account_name": "ACME", "name": "Engineering"}
S1: Final = "C9300/24T:S1"
ONE_NA: Final = [OrderLine(tag=NA, quantity=1)]
CALLS: Final[dict[str, tuple[Callable[..., Awaitable[Any]], dict[str, Any]]]] = {
    "account create": (
        site_ops.create_smart_account,
        {"name": "Globex", "admin_email": "h@globex.example", "now": NOW},
    ),
    "holding create": (
        site_ops.create_holding_account,
        {"name": "Resell", "admin_email": "r@resell.example", "now": NOW},
    ),
    "account list": (list_accounts, {}),
    "key show": (site_ops.collector_key_info, {}),
    "va create": (create_virtual_account, {"account_name": "ACME", "name": "New", "now": NOW}),
    "va list": (list_virtual_accounts, {"account_name": "ACME"}),
    "va rename": (rename_virtual_account, {**ENGINEERING, "new_name": "Eng", "now": NOW}),
    "va delete": (delete_virtual_account, {"account_name": "ACME", "name": "Spare", "now": NOW}),
    "va set-default": (set_default_virtual_account, {**ENGINEERING, "now": NOW}),
    "va policy set": (
        set_policy,
        {**ENGINEERING, "report_interval": 43200, "authorization_validity": None, "now": NOW},
    ),
    "va policy show": (
        set_policy,
        {**ENGINEERING, "report_interval": None, "authorization_validity": None, "now": NOW},
    ),
    "order deposit SA": (
        deposit_order,
        {
            "number": "PO-9",
            "ordered_on": NOW,
            "account_name": "ACME",
            "va_name": "Engineering",
            "lines": ONE_NA,
            "now": NOW,
        },
    ),
    "order deposit PHA": (
        deposit_order,
        {
            "number": "PO-8",
            "ordered_on": NOW,
            "account_name": "PartnerCo",
            "lines": ONE_NA,
            "now": NOW,
        },
    ),
    "order transfer": (
        transfer_order,
        {"number": "PO-H", "to_account": "ACME", "va_name": None, "now": NOW},
    ),
    "order list SA": (list_orders, {"account_name": "ACME"}),
    "order list PHA": (list_orders, {"account_name": "PartnerCo"}),
    "license transfer": (
        transfer_licenses,
        {
            "account_name": "ACME",
            "tag": NA,
            "count": 1,
            "from_va": "Engineering",
            "to_va": "DEFAULT",
            "now": NOW,
        },
    ),
    "license list": (
        provenance,
        {"account_name": "ACME", "va_name": "Engineering", "tag": None, "now": NOW},
    ),
    "token create": (
        create_token,
        {"account_name": "ACME", "va_name": "Engineering", "now": NOW, "entropy": _entropy},
    ),
    "token list": (list_tokens, {"account_name": "ACME"}),
    "token revoke": (
        revoke_token,
        {"account_name": "ACME", "token_id": TOKEN_ENTROPY[:8].hex(), "now": NOW},
    ),
    "device list": (list_devices, {"account_name": "ACME", "va_name": "Engineering", "now": NOW}),
    "device move": (
        move_device,
        {"account_name": "ACME", "udi": S1, "to_va": "DEFAULT", "now": NOW},
    ),
    "device deregister": (deregister_device, {"account_name": "ACME", "udi": S1, "now": NOW}),
    "user add va-user": (
        add_user,
        {
            "account_name": "ACME",
            "email": "new@acme.example",
            "role": Role.VA_USER,
            "va_name": "Engineering",
            "now": NOW,
        },
    ),
    "user add sa-user": (
        add_user,
        {
            "account_name": "ACME",
            "email": "new@acme.example",
            "role": Role.SA_USER,
            "va_name": None,
            "now": NOW,
        },
    ),
    "user list": (list_users, {"account_name": "ACME"}),
    "user remove": (
        remove_user,
        {"account_name": "ACME", "email": "extra@acme.example", "now": NOW},
    ),
    "usage": (usage, {"account_name": "ACME", "va_name": "Engineering", "now": NOW}),
    "audit SA": (audit.trail, {"account_name": "ACME", "since": None}),
    "audit PHA": (audit.trail, {"account_name": "PartnerCo", "since": None}),
    "audit verify": (audit.verify_chain, {}),
}


@dataclass(frozen=True)
class Expectation:
    operation: str
    permission: Permission
    allowed: frozenset[Role]


def _expectations() -> list[Expectation]:
    _, *lines = EXPECTED.strip().splitlines()
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines]
    return [
        Expectation(
            operation=name,
            permission=Permission(permission),
            allowed=frozenset(role for role, mark in zip(ROLES, marks, strict=True) if mark == "X"),
        )
        for name, permission, *marks in rows
    ]


async def _attempt(
    template: Path, folder: Path, expectation: Expectation, role: Role
) -> PermissionDenied | NotFound | None:
    path = folder / "rbac.db"
    shutil.copyfile(template, path)
    store = await open_store(path)
    try:
        call, kwargs = CALLS[expectation.operation]
        await Site(store).run(call, as_=USERS[role], **kwargs)
    except (PermissionDenied, NotFound) as denied:
        return denied
    finally:
        await store.close()
    return None


READ_FIRST: Final = {
    "user remove": ("user list", Permission.USER_READ),
    "token revoke": ("token list", Permission.TOKEN_READ),
    "device move": ("device list", Permission.DEVICE_READ),
    "device deregister": ("device list", Permission.DEVICE_READ),
}
"""Operations on one named object whose refusal would tell someone who cannot list such
objects whether it exists: such a one is refused for lack of reading them, as the listing
refuses them, whether the object exists or not."""
OUTSIDERS: Final = {
    "ACME": frozenset({Role.PARTNER_ADMIN}),
    "PartnerCo": frozenset(ROLES) - {Role.SITE_OPERATOR, Role.PARTNER_ADMIN},
}
"""Who holds no role in each account: it is not there for them, as it is not in their listing
of accounts, whatever they ask of it (the table's mark aside)."""
NOT_FOUND_UNLESS_READ: Final = {"order transfer": "order list PHA"}
"""Operations on an object named without its account (an order number): whoever cannot list
it is told it does not exist, since naming its account would tell them where it is."""


def _allowed(operation: str) -> frozenset[Role]:
    return next(e.allowed for e in _expectations() if e.operation == operation)


@pytest.mark.parametrize("role", ROLES, ids=str)
@pytest.mark.parametrize("expectation", _expectations(), ids=lambda e: e.operation)
async def test_each_role_may_do_exactly_what_the_table_says(
    rbac_template: Path, tmp_path: Path, expectation: Expectation, role: Role
) -> None:
    denied = await _attempt(rbac_template, tmp_path, expectation, role)
    account = CALLS[expectation.operation][1].get("account_name")
    if account is not None and role in OUTSIDERS[account]:
        assert isinstance(denied, NotFound)
        assert f"no account named {account!r}" == denied.message
        return
    if expectation.operation in NOT_FOUND_UNLESS_READ and role not in _allowed(
        NOT_FOUND_UNLESS_READ[expectation.operation]
    ):
        assert isinstance(denied, NotFound)
        return
    missing = expectation.permission
    if expectation.operation in READ_FIRST:
        listing, read = READ_FIRST[expectation.operation]
        if role not in _allowed(listing):
            missing = read
    if role in expectation.allowed:
        assert None is denied
    else:
        assert isinstance(denied, PermissionDenied)
        assert missing == denied.permission
        assert f"{USERS[role]} lacks {missing}" in denied.message


def test_the_table_covers_every_operation_and_permission() -> None:
    expectations = _expectations()
    assert set(CALLS) == {e.operation for e in expectations}
    assert set(Permission) == {e.permission for e in expectations}


_SMART_ONLY: Final = "cannot be granted on a holding account"
GRANT_SHAPES: Final = {
    # (role, account, va): None when the grant is accepted, else what the refusal says.
    **{
        (Role.SITE_OPERATOR, account, va): "site-operator is granted on the site"
        for account, va in [("ACME", None), ("ACME", "Engineering"), ("PartnerCo", None)]
    },
    (Role.SA_ADMIN, "ACME", None): None,
    (Role.SA_USER, "ACME", None): None,
    (Role.VA_ADMIN, "ACME", None): "va-admin needs --va",
    (Role.VA_USER, "ACME", None): "va-user needs --va",
    (Role.VIEWER, "ACME", None): None,
    (Role.PARTNER_ADMIN, "ACME", None): "partner-admin is granted on a holding account",
    (Role.SA_ADMIN, "ACME", "Engineering"): "sa-admin covers the whole smart account",
    (Role.SA_USER, "ACME", "Engineering"): "sa-user covers the whole smart account",
    (Role.VA_ADMIN, "ACME", "Engineering"): None,
    (Role.VA_USER, "ACME", "Engineering"): None,
    (Role.VIEWER, "ACME", "Engineering"): None,
    (Role.PARTNER_ADMIN, "ACME", "Engineering"): "partner-admin is granted on a holding account",
    (Role.SA_ADMIN, "PartnerCo", None): f"sa-admin {_SMART_ONLY}",
    (Role.SA_USER, "PartnerCo", None): f"sa-user {_SMART_ONLY}",
    (Role.VA_ADMIN, "PartnerCo", None): f"va-admin {_SMART_ONLY}",
    (Role.VA_USER, "PartnerCo", None): f"va-user {_SMART_ONLY}",
    (Role.VIEWER, "PartnerCo", None): None,
    (Role.PARTNER_ADMIN, "PartnerCo", None): None,
    (Role.VIEWER, "PartnerCo", "Engineering"): "a holding account has no virtual accounts",
    (Role.PARTNER_ADMIN, "PartnerCo", "Engineering"): "a holding account has no virtual accounts",
}


@pytest.mark.parametrize(("role", "account", "va"), list(GRANT_SHAPES))
async def test_a_role_is_granted_only_on_the_scope_it_makes_sense_on(
    site: Site, role: Role, account: str, va: str | None
) -> None:
    """Each role on each kind of scope: a holding account takes partner-admin and viewer, a
    smart account the SA roles account-wide and the VA roles on one VA."""
    refusal = GRANT_SHAPES[role, account, va]
    grant = site.run(
        add_user, account_name=account, email="new@x.example", role=role, va_name=va, now=NOW
    )
    if refusal is None:
        assert role == (await grant).role
    else:
        with pytest.raises(InvalidRequest, match=re.escape(refusal)):
            await grant
