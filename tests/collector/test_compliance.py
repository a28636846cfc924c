"""Compliance: the pure rules, pools over time (term licenses), recorded flips, change feed."""

from __future__ import annotations

import pytest
from smartlic.collector import audit
from smartlic.collector.changes import ChangeKind, PoolFlip, changes_since, latest_change_id
from smartlic.collector.compliance import (
    Lot,
    PoolState,
    active_quantity,
    device_status,
    device_tags,
    evaluate_pools,
    license_active,
    load_pool_states,
    next_license_change,
    next_license_change_at,
    pool_compliance,
    reevaluate,
    usage,
    vas_with_license_changes,
)
from smartlic.collector.errors import Refused
from smartlic.collector.licenses import transfer_licenses
from smartlic.collector.orders import OrderLine, deposit_order
from smartlic.collector.rbac import Role
from smartlic.collector.users import add_user
from smartlic.protocol import ComplianceStatus

from .collector_support import ALICE, DAY, NOW, Site

IN, OUT = ComplianceStatus.IN_COMPLIANCE, ComplianceStatus.OUT_OF_COMPLIANCE
NA = "network-advantage"


@pytest.mark.parametrize(
    ("moment", "active"),
    [(NOW - 1, False), (NOW, True), (NOW + DAY - 1, True), (NOW + DAY, False)],
)
def test_a_term_license_is_active_from_its_start_up_to_its_end(moment: int, active: bool) -> None:
    assert active is license_active(NOW, NOW + DAY, moment)


def test_a_perpetual_license_is_always_active() -> None:
    assert license_active(None, None, 0)


def test_purchased_counts_only_the_licenses_active_now() -> None:
    lots = [
        Lot(quantity=10),
        Lot(quantity=5, starts_at=NOW - DAY, ends_at=NOW),
        Lot(quantity=2, starts_at=NOW, ends_at=NOW + DAY),
    ]
    assert 12 == active_quantity(lots, NOW)


def test_a_pool_in_use_up_to_its_purchase_is_in_compliance() -> None:
    assert (IN, 0) == (pool_compliance(5, 5).status, pool_compliance(5, 5).shortfall)


def test_a_pool_using_more_than_purchased_is_short_by_the_difference() -> None:
    assert (OUT, 3) == (pool_compliance(5, 8).status, pool_compliance(5, 8).shortfall)


def _standing(counts: dict[str, int]) -> ComplianceStatus:
    """A device of VA 1 with ``counts``, where tag a is in compliance and tag b is short."""
    pools = {
        (1, "a"): PoolState(va_id=1, tag="a", purchased=5, in_use=3, recorded=IN),
        (1, "b"): PoolState(va_id=1, tag="b", purchased=1, in_use=2, recorded=OUT),
    }
    return device_status(device_tags(1, counts, pools))


def test_a_device_is_out_of_compliance_when_a_tag_it_consumes_is_short() -> None:
    assert OUT == _standing({"a": 1, "b": 2})


def test_a_device_not_consuming_the_short_tag_is_unaffected() -> None:
    assert IN == _standing({"a": 1, "b": 0})


def test_a_device_consuming_a_tag_without_a_pool_in_its_va_is_short() -> None:
    """No pool: none of its licenses there. The device listing once said in compliance where
    the device's notice said out of it."""
    assert OUT == _standing({"c": 1})


def test_every_pool_is_evaluated_from_its_lots_and_usage_at_now() -> None:
    """A pool with licenses and no usage, one with both, and one with usage and none left."""
    lots = {
        (1, "a"): [Lot(quantity=5)],
        (1, "b"): [Lot(quantity=3), Lot(quantity=4, starts_at=NOW, ends_at=NOW + DAY)],
    }
    usage = {(1, "b"): (6, IN), (2, "c"): (1, IN)}

    pools = evaluate_pools(lots, usage, NOW + DAY)

    assert {
        (1, "a"): (5, 0, IN, IN),
        (1, "b"): (3, 6, OUT, IN),
        (2, "c"): (0, 1, OUT, IN),
    } == {key: (p.purchased, p.in_use, p.status, p.recorded) for key, p in pools.items()}


def test_the_next_license_change_is_the_first_start_or_end_after_now() -> None:
    lots = [
        Lot(quantity=1, starts_at=NOW - DAY, ends_at=NOW + 9 * DAY),
        Lot(quantity=1, starts_at=NOW + 2 * DAY, ends_at=NOW + 5 * DAY),
        Lot(quantity=0, starts_at=NOW + DAY, ends_at=NOW + 3 * DAY),
        Lot(quantity=4),
    ]
    assert NOW + 2 * DAY == next_license_change(lots, NOW)


def test_perpetual_licenses_never_change() -> None:
    assert None is next_license_change([Lot(quantity=3)], NOW)


async def _term_pool(site: Site, *, quantity: int, ends_in: int, using: int) -> int:
    """Engineering gets ``quantity`` term licenses ending ``ends_in`` s from now, and devices
    using ``using`` of them; the VA's id."""
    await site.run(
        deposit_order,
        number="PO-T",
        ordered_on=NOW,
        account_name="ACME",
        va_name="Engineering",
        now=NOW,
        lines=[OrderLine(tag=NA, quantity=quantity, starts_at=NOW - DAY, ends_at=NOW + ends_in)],
    )
    devices = await site.register("ACME", "Engineering", *(f"S{i}" for i in range(using)))
    for device in devices:
        await site.report(device, {NA: 1})
    return await site.va_id("ACME", "Engineering")


async def test_a_pool_goes_out_of_compliance_when_its_term_licenses_end(site: Site) -> None:
    await _term_pool(site, quantity=5, ends_in=30 * DAY, using=3)
    before = await site.run(usage, account_name="ACME", va_name="Engineering", now=NOW)
    after = await site.run(usage, account_name="ACME", va_name="Engineering", now=NOW + 30 * DAY)
    assert [(5, 3, IN), (0, 3, OUT)] == [
        (u.purchased, u.in_use, u.compliance.status) for u in (*before, *after)
    ]


async def test_the_next_license_change_of_a_va_is_when_its_term_ends(site: Site) -> None:
    va_id = await _term_pool(site, quantity=5, ends_in=30 * DAY, using=0)
    async with site.store.read() as tx:
        assert NOW + 30 * DAY == await next_license_change_at(tx, NOW, [va_id])


async def test_the_vas_to_reevaluate_are_those_whose_licenses_changed_meanwhile(
    site: Site,
) -> None:
    va_id = await _term_pool(site, quantity=5, ends_in=30 * DAY, using=0)
    async with site.store.read() as tx:
        before = await vas_with_license_changes(tx, after=NOW, until=NOW + 30 * DAY - 1)
        across = await vas_with_license_changes(tx, after=NOW, until=NOW + 30 * DAY)
    assert (set(), {va_id}) == (before, across)


async def test_reevaluating_at_the_end_of_a_term_records_the_flip(site: Site) -> None:
    va_id = await _term_pool(site, quantity=5, ends_in=DAY, using=2)
    async with site.store.write() as tx:
        flips = await reevaluate(tx, [va_id], actor="collector", now=NOW + DAY)
    assert [PoolFlip(va_id=va_id, tag=NA, before=IN, after=OUT, purchased=0, in_use=2)] == flips


async def test_a_recorded_flip_is_not_recorded_again(site: Site) -> None:
    va_id = await _term_pool(site, quantity=5, ends_in=DAY, using=2)
    for _ in range(2):
        async with site.store.write() as tx:
            flips = await reevaluate(tx, [va_id], actor="collector", now=NOW + DAY)
    assert [] == flips


async def test_a_compliance_change_is_audited_with_before_and_after(site: Site) -> None:
    va_id = await _term_pool(site, quantity=5, ends_in=DAY, using=2)
    async with site.store.write() as tx:
        await reevaluate(tx, [va_id], actor="collector", now=NOW + DAY)
        last = (await audit.entries(tx))[-1]
    assert ("collector", "compliance.change", "pool ACME/Engineering network-advantage") == (
        last.actor,
        last.action,
        last.subject,
    )
    assert (
        '{"status":"IN_COMPLIANCE"}',
        '{"in_use":2,"purchased":0,"shortfall":2,"status":"OUT_OF_COMPLIANCE"}',
    ) == (last.before, last.after)


async def test_a_transfer_that_flips_a_pool_says_so_on_the_change_feed(site: Site) -> None:
    va_id = await _term_pool(site, quantity=5, ends_in=9 * DAY, using=3)
    async with site.store.read() as tx:
        seen = await latest_change_id(tx)
    await site.run(
        transfer_licenses,
        account_name="ACME",
        tag=NA,
        count=4,
        from_va="Engineering",
        to_va="DEFAULT",
        now=NOW,
    )
    async with site.store.read() as tx:
        [change] = await changes_since(tx, seen)
    assert ChangeKind.LICENSE_TRANSFER == change.kind
    assert [(va_id, NA, IN, OUT)] == [(f.va_id, f.tag, f.before, f.after) for f in change.flips]


async def test_a_deposit_that_covers_a_shortfall_flips_the_pool_back(site: Site) -> None:
    va_id = await _term_pool(site, quantity=1, ends_in=DAY, using=3)
    async with site.store.write() as tx:
        await reevaluate(tx, [va_id], actor="collector", now=NOW)
    await site.run(
        deposit_order,
        number="PO-2",
        ordered_on=NOW,
        lines=[OrderLine(tag=NA, quantity=5)],
        account_name="ACME",
        va_name="Engineering",
        now=NOW,
    )
    async with site.store.read() as tx:
        change = (await changes_since(tx, 0))[-1]
        state = (await load_pool_states(tx, [(va_id, NA)], NOW))[va_id, NA]
    assert [(OUT, IN)] == [(f.before, f.after) for f in change.flips]
    assert (IN, 6, 3) == (state.recorded, state.purchased, state.in_use)


async def test_the_change_feed_is_read_in_order_from_the_last_seen(site: Site) -> None:
    for number in ("PO-1", "PO-2", "PO-3"):
        await site.run(
            deposit_order,
            number=number,
            ordered_on=NOW,
            lines=[OrderLine(tag=NA, quantity=1)],
            account_name="ACME",
            now=NOW,
        )
    async with site.store.read() as tx:
        first, *rest = await changes_since(tx, 0)
        after_first = await changes_since(tx, first.id)
    assert [c.id for c in rest] == [c.id for c in after_first]


async def test_a_va_user_sees_the_usage_of_their_va_only(site: Site) -> None:
    for number, va in (("PO-1", "DEFAULT"), ("PO-2", "Engineering")):
        await site.run(
            deposit_order,
            number=number,
            ordered_on=NOW,
            lines=[OrderLine(tag=NA, quantity=1)],
            account_name="ACME",
            va_name=va,
            now=NOW,
        )
    await site.run(
        add_user,
        as_=ALICE,
        account_name="ACME",
        email="bob@acme.example",
        role=Role.VA_USER,
        va_name="Engineering",
        now=NOW,
    )
    lines = await site.run(
        usage, as_="bob@acme.example", account_name="ACME", va_name=None, now=NOW
    )
    assert ["Engineering"] == [u.va for u in lines]


async def test_a_holding_account_has_no_usage(site: Site) -> None:
    with pytest.raises(Refused, match="its licenses can never be consumed, so it has no usage"):
        await site.run(usage, account_name="PartnerCo", va_name=None, now=NOW)
