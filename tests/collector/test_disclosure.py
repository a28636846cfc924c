"""A refusal tells no one of an object they could not list.

An account is not there for anyone who holds no role in it, as it is not in their listing of
accounts; nor, then, is anything in it. Acting on one named thing in an account one is in (a
user's roles, a device, a token) is refused the same way whether it exists or not, for anyone
who may not read it: one with no read of that kind in the account, for lack of reading (as the
listing refuses them); a VA-scoped user, for whom a thing in another VA is, as in their
listings, not there.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from smartlic.collector.device_admin import deregister_device, move_device
from smartlic.collector.errors import Refused
from smartlic.collector.orders import OrderLine, deposit_order, transfer_order
from smartlic.collector.rbac import Role
from smartlic.collector.tokens import create_token, revoke_token
from smartlic.collector.users import add_user, remove_user

from .collector_support import ALICE, NOW, PAT, Site, udi_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

ACME = "ACME"
EVE = "eve@acme.example"
"""va-admin of ACME/Engineering."""


async def _refusal(
    site: Site,
    op: Callable[..., Awaitable[Any]],
    name: str,
    *,
    as_: str,
    **kwargs: Any,
) -> str:
    """What refusing ``op`` says, with the object's ``name`` blanked out."""
    try:
        await site.run(op, now=NOW, as_=as_, **kwargs)
    except Refused as refused:
        return f"{type(refused).__name__}: {refused.message}".replace(name, "NAME")
    raise AssertionError(f"{as_} was allowed {op.__name__} on {name}")


async def _with_eve(site: Site) -> None:
    await site.run(
        add_user, account_name="ACME", email=EVE, role=Role.VA_ADMIN, va_name="Engineering", now=NOW
    )


async def test_an_outsider_cannot_tell_a_member_from_a_stranger(site: Site) -> None:
    member = await _refusal(site, remove_user, ALICE, as_=PAT, account_name=ACME, email=ALICE)
    stranger = await _refusal(
        site, remove_user, "bob@acme.example", as_=PAT, account_name=ACME, email="bob@acme.example"
    )

    assert ("NotFound: no account named 'ACME'", member) == (stranger, stranger)


async def test_an_outsider_cannot_tell_an_account_or_its_vas_from_missing_ones(site: Site) -> None:
    """Account names and their VAs' names are not told to those who hold no role there."""
    tries = [("ACME", "Engineering"), ("ACME", "Secret"), ("Nobody", "DEFAULT")]
    refusals = [
        await _refusal(
            site,
            create_token,
            account,
            as_=PAT,
            account_name=account,
            va_name=va,
            entropy=random.Random(0).randbytes,  # noqa: S311 -- never used: refused first
        )
        for account, va in tries
    ]

    assert ["NotFound: no account named 'NAME'"] * 3 == refusals


async def test_a_va_admin_cannot_tell_a_member_of_another_va_from_a_stranger(site: Site) -> None:
    carol = "carol@acme.example"
    await _with_eve(site)
    await site.run(
        add_user, account_name="ACME", email=carol, role=Role.VA_USER, va_name="DEFAULT", now=NOW
    )

    member = await _refusal(site, remove_user, carol, as_=EVE, account_name=ACME, email=carol)
    stranger = await _refusal(
        site, remove_user, "bob@acme.example", as_=EVE, account_name=ACME, email="bob@acme.example"
    )

    assert ("NotFound: NAME has no role in ACME", member) == (stranger, stranger)


async def test_an_outsider_cannot_tell_a_registered_device_from_an_unknown_one(site: Site) -> None:
    (device,) = await site.register("ACME", "DEFAULT", "S1")
    known, unknown = udi_of(device), "C9300/24T:NOPE"

    registered = await _refusal(
        site, deregister_device, known, as_=PAT, account_name=ACME, udi=known
    )
    stranger = await _refusal(
        site, deregister_device, unknown, as_=PAT, account_name=ACME, udi=unknown
    )

    assert ("NotFound: no account named 'ACME'", registered) == (stranger, stranger)


async def test_a_va_admin_cannot_tell_a_device_of_another_va_from_an_unknown_one(
    site: Site,
) -> None:
    await _with_eve(site)
    (device,) = await site.register("ACME", "DEFAULT", "S1")
    known, unknown = udi_of(device), "C9300/24T:NOPE"

    moved = await _refusal(
        site, move_device, known, as_=EVE, account_name=ACME, udi=known, to_va="Engineering"
    )
    stranger = await _refusal(
        site, move_device, unknown, as_=EVE, account_name=ACME, udi=unknown, to_va="Engineering"
    )

    assert ("NotFound: ACME has no device NAME", moved) == (stranger, stranger)


async def test_a_va_admin_cannot_tell_a_token_of_another_va_from_an_unknown_one(
    site: Site,
) -> None:
    await _with_eve(site)
    token, _ = await site.run(
        create_token,
        account_name="ACME",
        va_name="DEFAULT",
        now=NOW,
        entropy=random.Random(3).randbytes,  # noqa: S311 -- reproducible token bytes, not secrets
        as_=ALICE,
    )

    known = await _refusal(
        site, revoke_token, token.token_id, as_=EVE, account_name=ACME, token_id=token.token_id
    )
    stranger = await _refusal(
        site, revoke_token, "0" * 16, as_=EVE, account_name=ACME, token_id="0" * 16
    )

    assert ("NotFound: ACME has no token NAME", known) == (stranger, stranger)


async def test_a_customer_cannot_tell_a_partners_order_from_an_unknown_one(site: Site) -> None:
    """An order is named by its number alone; a refusal naming the holding account it is in
    would tell where it is."""
    await site.run(
        deposit_order,
        number="PO-77",
        ordered_on=NOW,
        lines=[OrderLine(tag="network-advantage", quantity=1)],
        account_name="PartnerCo",
        va_name=None,
        now=NOW,
    )

    async def attempt(number: str) -> str:
        return await _refusal(
            site, transfer_order, number, as_=ALICE, number=number, to_account="ACME", va_name=None
        )

    assert ("NotFound: no order 'NAME'", await attempt("PO-77")) == (
        await attempt("PO-78"),
        await attempt("PO-78"),
    )
