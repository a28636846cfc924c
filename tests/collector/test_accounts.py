"""Smart accounts, holding accounts and virtual accounts."""

from __future__ import annotations

from typing import Any

import pytest
from smartlic.collector import audit
from smartlic.collector import site as site_ops
from smartlic.collector.accounts import (
    Policy,
    VirtualAccount,
    check_policy,
    find_account,
    list_accounts,
)
from smartlic.collector.device_admin import deregister_device
from smartlic.collector.errors import InvalidRequest, NotFound, PermissionDenied, Refused
from smartlic.collector.orders import OrderLine, deposit_order
from smartlic.collector.rbac import Role
from smartlic.collector.users import add_user, list_users, load_actor
from smartlic.collector.virtual_accounts import (
    Contents,
    can_delete_virtual_account,
    create_virtual_account,
    delete_virtual_account,
    list_virtual_accounts,
    rename_virtual_account,
    set_default_virtual_account,
    set_policy,
)

from .collector_support import ALICE, DAY, NOW, OPERATOR, Site, udi_of

SAM = "sam@acme.example"


async def test_a_new_smart_account_has_a_default_va_named_default(site: Site) -> None:
    account, va = await site.run(
        site_ops.create_smart_account, name="Globex", admin_email="hank@globex.example", now=NOW
    )
    summaries = await site.run(list_virtual_accounts, account_name="Globex")
    assert ("Globex", "DEFAULT", True) == (account.name, va.name, va.is_default)
    assert [("DEFAULT", True)] == [(s.va.name, s.va.is_default) for s in summaries]


async def test_a_new_smart_account_names_its_first_admin(site: Site) -> None:
    await site.run(
        site_ops.create_smart_account, name="Globex", admin_email="Hank@Globex.example", now=NOW
    )
    members = await site.run(list_users, account_name="Globex")
    assert [("hank@globex.example", "sa-admin")] == [(m.email, str(m.role)) for m in members]


async def test_account_names_are_unique_across_smart_and_holding_accounts(site: Site) -> None:
    with pytest.raises(Refused, match="'PartnerCo' already exists"):
        await site.run(site_ops.create_smart_account, name="PartnerCo", admin_email=ALICE, now=NOW)


async def test_a_failed_account_creation_leaves_no_account_behind(site: Site) -> None:
    with pytest.raises(InvalidRequest):
        await site.run(site_ops.create_smart_account, name="Globex", admin_email="nope", now=NOW)
    async with site.store.read() as tx:
        with pytest.raises(NotFound):
            await find_account(tx, "Globex", seen_by=None)


async def test_a_name_with_control_characters_is_refused(site: Site) -> None:
    with pytest.raises(InvalidRequest, match="printable"):
        await site.run(create_virtual_account, account_name="ACME", name="a\nb", now=NOW)


async def test_va_names_are_unique_within_an_account(site: Site) -> None:
    with pytest.raises(Refused, match="already has a virtual account named 'Engineering'"):
        await site.run(create_virtual_account, account_name="ACME", name="Engineering", now=NOW)


async def test_a_holding_account_has_no_virtual_accounts(site: Site) -> None:
    with pytest.raises(Refused, match="PartnerCo is a partner holding account"):
        await site.run(create_virtual_account, account_name="PartnerCo", name="X", now=NOW)


async def test_renaming_a_va_keeps_it_and_frees_the_old_name(site: Site) -> None:
    await site.run(
        rename_virtual_account, account_name="ACME", name="Engineering", new_name="R&D", now=NOW
    )
    names = [s.va.name for s in await site.run(list_virtual_accounts, account_name="ACME")]
    assert ["DEFAULT", "R&D"] == names


async def test_renaming_onto_a_taken_name_is_refused(site: Site) -> None:
    with pytest.raises(Refused, match="already has"):
        await site.run(
            rename_virtual_account,
            account_name="ACME",
            name="Engineering",
            new_name="DEFAULT",
            now=NOW,
        )


async def test_an_empty_va_can_be_deleted(site: Site) -> None:
    await site.run(delete_virtual_account, account_name="ACME", name="Engineering", now=NOW)
    names = [s.va.name for s in await site.run(list_virtual_accounts, account_name="ACME")]
    assert ["DEFAULT"] == names


async def test_a_deleted_va_name_can_be_used_again(site: Site) -> None:
    await site.run(delete_virtual_account, account_name="ACME", name="Engineering", now=NOW)
    va = await site.run(create_virtual_account, account_name="ACME", name="Engineering", now=NOW)
    assert "Engineering" == va.name


async def test_deleting_a_va_with_licenses_says_what_is_left(site: Site) -> None:
    await site.run(
        deposit_order,
        number="PO-1",
        ordered_on=NOW,
        lines=[OrderLine(tag="network-advantage", quantity=10)],
        account_name="ACME",
        va_name="Engineering",
        now=NOW,
    )
    with pytest.raises(Refused, match="still holds 10 network-advantage licenses"):
        await site.run(delete_virtual_account, account_name="ACME", name="Engineering", now=NOW)


async def test_deleting_a_va_with_devices_says_how_many(site: Site) -> None:
    await site.register("ACME", "Engineering", "S1", "S2")
    with pytest.raises(Refused, match="2 registered devices"):
        await site.run(delete_virtual_account, account_name="ACME", name="Engineering", now=NOW)


async def test_a_va_whose_devices_were_deregistered_can_be_deleted(site: Site) -> None:
    [device] = await site.register("ACME", "Engineering", "S1")
    await site.run(deregister_device, account_name="ACME", udi=udi_of(device), now=NOW)
    deletion = await site.run(
        delete_virtual_account, account_name="ACME", name="Engineering", now=NOW
    )
    assert "Engineering" == deletion.va.name


async def test_licenses_whose_term_ended_do_not_keep_a_va_alive(site: Site) -> None:
    await site.run(
        deposit_order,
        number="PO-1",
        ordered_on=NOW,
        lines=[OrderLine(tag="dna", quantity=3, starts_at=NOW - 30 * DAY, ends_at=NOW - DAY)],
        account_name="ACME",
        va_name="Engineering",
        now=NOW,
    )
    deletion = await site.run(
        delete_virtual_account, account_name="ACME", name="Engineering", now=NOW
    )
    assert "Engineering" == deletion.va.name


def _va(*, is_default: bool) -> VirtualAccount:
    return VirtualAccount(
        id=1,
        account_id=1,
        account_name="ACME",
        name="R&D",
        is_default=is_default,
        policy=Policy(),
        created_at=0,
    )


def test_the_default_va_cannot_be_deleted() -> None:
    reason = can_delete_virtual_account(_va(is_default=True), Contents(licenses={}, devices=0))
    assert "R&D is the default virtual account; make another one the default first" == reason


def test_an_empty_va_that_is_not_the_default_can_be_deleted() -> None:
    assert None is can_delete_virtual_account(
        _va(is_default=False), Contents(licenses={}, devices=0)
    )


def test_the_refusal_lists_licenses_by_tag_and_devices() -> None:
    reason = can_delete_virtual_account(
        _va(is_default=False), Contents(licenses={"b": 1, "a": 2}, devices=1)
    )
    assert (
        "R&D still holds 2 a licenses, 1 b license, 1 registered device;"
        " transfer or remove them first"
    ) == reason


async def test_setting_the_default_moves_it(site: Site) -> None:
    await site.run(set_default_virtual_account, account_name="ACME", name="Engineering", now=NOW)
    defaults = {
        s.va.name: s.va.is_default
        for s in await site.run(list_virtual_accounts, account_name="ACME")
    }
    assert {"DEFAULT": False, "Engineering": True} == defaults


async def test_setting_the_default_to_the_default_is_refused(site: Site) -> None:
    with pytest.raises(Refused, match="already the default"):
        await site.run(set_default_virtual_account, account_name="ACME", name="DEFAULT", now=NOW)


async def test_a_new_va_has_the_default_policy(site: Site) -> None:
    va = await site.run(create_virtual_account, account_name="ACME", name="Ops", now=NOW)
    assert Policy(report_interval=86_400, authorization_validity=90 * 86_400) == va.policy


async def test_a_va_policy_can_be_changed_one_setting_at_a_time(site: Site) -> None:
    va = await site.run(
        set_policy,
        account_name="ACME",
        name="Engineering",
        report_interval=12 * 3600,
        authorization_validity=None,
        now=NOW,
    )
    assert Policy(report_interval=12 * 3600, authorization_validity=90 * DAY) == va.policy


@pytest.mark.parametrize("setting", ["report_interval", "authorization_validity"])
async def test_a_va_policy_setting_of_zero_is_refused_not_ignored(site: Site, setting: str) -> None:
    settings: dict[str, Any] = {"report_interval": None, "authorization_validity": None}
    settings[setting] = 0
    with pytest.raises(InvalidRequest):
        await site.run(set_policy, account_name="ACME", name="Engineering", now=NOW, **settings)


def test_an_authorization_valid_beyond_ten_years_is_refused() -> None:
    """Its end would not be a protocol timestamp: every report would fail to be answered."""
    with pytest.raises(InvalidRequest, match="at most 10 years"):
        check_policy(Policy(report_interval=DAY, authorization_validity=100_000 * 365 * DAY))


def test_an_authorization_must_outlive_the_report_interval() -> None:
    with pytest.raises(InvalidRequest, match="longer than the report interval"):
        check_policy(Policy(report_interval=2 * DAY, authorization_validity=DAY))


def test_a_report_interval_under_a_minute_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="at least 60 s"):
        check_policy(Policy(report_interval=30))


async def test_the_operator_sees_every_account(site: Site) -> None:
    names = [s.account.name for s in await site.run(list_accounts)]
    assert ["ACME", "PartnerCo"] == names


async def test_an_sa_admin_sees_only_their_account(site: Site) -> None:
    names = [s.account.name for s in await site.run(list_accounts, as_=ALICE)]
    assert ["ACME"] == names


async def test_an_unknown_acting_user_is_refused(site: Site) -> None:
    async with site.store.read() as tx:
        with pytest.raises(NotFound, match=r"unknown user nobody@example\.com"):
            await load_actor(tx, "nobody@example.com")


async def test_the_operator_is_a_user_too(site: Site) -> None:
    async with site.store.read() as tx:
        actor = await load_actor(tx, OPERATOR.upper())
    assert OPERATOR == actor.email


async def _engineering_with_a_va_user(site: Site) -> None:
    """Engineering, emptied of its devices, with a va-user, and an sa-user on ACME."""
    for email, role, va in (
        ("vic@acme.example", Role.VA_USER, "Engineering"),
        (SAM, Role.SA_USER, None),
    ):
        await site.run(add_user, account_name="ACME", email=email, role=role, va_name=va, now=NOW)


async def test_an_sa_user_cannot_delete_a_va_that_grants_roles(site: Site) -> None:
    """It would take the VA's users' roles away: user management, which SPEC §2 leaves to
    admins; deleting the VA was a way around ``user remove``."""
    await _engineering_with_a_va_user(site)

    with pytest.raises(PermissionDenied, match=r"user\.manage"):
        await site.run(
            delete_virtual_account, as_=SAM, account_name="ACME", name="Engineering", now=NOW
        )


async def test_deleting_a_va_audits_each_role_it_takes_away(site: Site) -> None:
    await _engineering_with_a_va_user(site)
    await site.run(delete_virtual_account, account_name="ACME", name="Engineering", now=NOW)

    async with site.store.read() as tx:
        removals = [e for e in await audit.entries(tx) if e.action == "user.remove"]
    assert [("user vic@acme.example", '{"roles":["va-user@Engineering"]}')] == [
        (e.subject, e.before) for e in removals
    ]
