"""Users and their roles in an account: granting, listing, removing, and the rules on each."""

from __future__ import annotations

import pytest
from smartlic.collector.errors import NotFound, PermissionDenied, Refused
from smartlic.collector.rbac import Role
from smartlic.collector.users import add_user, list_users, remove_user

from .collector_support import ALICE, NOW, PAT, Site

BOB = "bob@acme.example"


async def _grant(
    site: Site, email: str, role: Role, va: str | None = None, *, account: str = "ACME"
) -> None:
    await site.run(add_user, account_name=account, email=email, role=role, va_name=va, now=NOW)


async def test_the_same_role_twice_on_the_same_scope_is_refused(site: Site) -> None:
    await _grant(site, BOB, Role.VA_USER, "Engineering")

    with pytest.raises(Refused, match=f"{BOB} already has va-user on ACME/Engineering"):
        await _grant(site, BOB, Role.VA_USER, "Engineering")


async def test_the_same_role_on_another_va_is_a_second_grant(site: Site) -> None:
    await _grant(site, BOB, Role.VA_USER, "Engineering")
    await _grant(site, BOB, Role.VA_USER, "DEFAULT")

    members = await site.run(list_users, account_name="ACME", as_=ALICE)

    assert ["DEFAULT", "Engineering"] == sorted(m.va for m in members if m.email == BOB)


async def test_an_email_is_stored_in_one_form(site: Site) -> None:
    """The same address written in another case is the same user, not a second one."""
    await _grant(site, "Bob@ACME.example", Role.VIEWER)

    members = await site.run(list_users, account_name="ACME", as_=ALICE)

    assert [BOB] == [m.email for m in members if m.email.lower() == BOB]


async def test_removing_the_last_sa_admin_is_refused(site: Site) -> None:
    with pytest.raises(Refused, match=f"{ALICE} is the last sa-admin of ACME"):
        await site.run(remove_user, account_name="ACME", email=ALICE, now=NOW)


async def test_the_last_sa_admin_can_go_once_there_is_another(site: Site) -> None:
    await _grant(site, BOB, Role.SA_ADMIN)

    removed = await site.run(remove_user, account_name="ACME", email=ALICE, now=NOW, as_=BOB)

    assert [(ALICE, Role.SA_ADMIN)] == [(m.email, m.role) for m in removed]


async def test_removing_the_last_partner_admin_is_refused(site: Site) -> None:
    with pytest.raises(Refused, match=f"{PAT} is the last partner-admin of PartnerCo"):
        await site.run(remove_user, account_name="PartnerCo", email=PAT, now=NOW)


async def test_removing_someone_with_no_role_there_is_not_found(site: Site) -> None:
    with pytest.raises(NotFound, match=f"{BOB} has no role in ACME"):
        await site.run(remove_user, account_name="ACME", email=BOB, now=NOW, as_=ALICE)


async def test_a_grant_one_can_read_but_not_manage_is_refused_naming_its_scope(
    site: Site,
) -> None:
    await _grant(site, "viewer@acme.example", Role.VIEWER)
    await _grant(site, BOB, Role.VA_USER, "Engineering")

    with pytest.raises(PermissionDenied) as refused:
        await site.run(
            remove_user, account_name="ACME", email=BOB, now=NOW, as_="viewer@acme.example"
        )

    assert (
        "permission denied: viewer@acme.example lacks user.manage on ACME/Engineering"
        == refused.value.message
    )
