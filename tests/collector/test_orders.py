"""Orders, deliveries from holding accounts, license transfers between VAs, provenance."""

from __future__ import annotations

from typing import Any

import pytest
from smartlic.collector import site as site_ops
from smartlic.collector.compliance import usage
from smartlic.collector.errors import InvalidRequest, Refused
from smartlic.collector.licenses import License, choose_lots, provenance, transfer_licenses
from smartlic.collector.orders import (
    OrderLine,
    check_order_line,
    delivered_term,
    deposit_order,
    list_orders,
    transfer_order,
)
from smartlic.collector.rbac import Role
from smartlic.collector.users import add_user

from .collector_support import ALICE, DAY, NOW, PAT, Site

NA = "network-advantage"


def _where(where: dict[str, str | None]) -> dict[str, Any]:
    return {"account_name": "ACME", "va_name": None, **where}


async def _deposit(site: Site, number: str, *lines: OrderLine, **where: str | None) -> None:
    await site.run(
        deposit_order,
        number=number,
        ordered_on=NOW,
        lines=list(lines),
        now=NOW,
        **_where(where),
    )


async def _pools(site: Site, *, at: int = NOW) -> dict[tuple[str, str], int]:
    """(VA, tag) → purchased, as the usage view shows it."""
    lines = await site.run(usage, account_name="ACME", va_name=None, now=at)
    return {(u.va, u.tag): u.purchased for u in lines}


async def test_a_deposit_into_a_va_adds_to_its_pool(site: Site) -> None:
    await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=10), va_name="Engineering")
    assert {("Engineering", NA): 10} == await _pools(site)


async def test_a_deposit_without_a_va_lands_in_the_default_va(site: Site) -> None:
    await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=10))
    assert {("DEFAULT", NA): 10} == await _pools(site)


async def test_depositing_the_same_order_twice_is_refused(site: Site) -> None:
    await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=10))
    with pytest.raises(Refused, match="order PO-1 was already deposited"):
        await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=10), account_name="PartnerCo")


async def test_licenses_in_a_holding_account_count_nowhere(site: Site) -> None:
    await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=20), account_name="PartnerCo")
    assert {} == await _pools(site)


async def test_a_transferred_order_lands_in_the_chosen_va(site: Site) -> None:
    await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=20), account_name="PartnerCo")
    await site.run(
        transfer_order, as_=PAT, number="PO-1", to_account="ACME", va_name="Engineering", now=NOW
    )
    assert {("Engineering", NA): 20} == await _pools(site)


async def test_a_transferred_order_without_a_va_lands_in_the_default_va(site: Site) -> None:
    await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=20), account_name="PartnerCo")
    await site.run(transfer_order, as_=PAT, number="PO-1", to_account="ACME", va_name=None, now=NOW)
    assert {("DEFAULT", NA): 20} == await _pools(site)


async def test_a_term_line_starts_no_earlier_than_its_delivery(site: Site) -> None:
    term = OrderLine(tag=NA, quantity=5, starts_at=NOW - 10 * DAY, ends_at=NOW + 365 * DAY)
    await _deposit(site, "PO-1", term, account_name="PartnerCo")
    await site.run(transfer_order, as_=PAT, number="PO-1", to_account="ACME", va_name=None, now=NOW)
    lots = await site.run(provenance, account_name="ACME", va_name=None, tag=None, now=NOW)
    assert [(NOW, NOW + 365 * DAY)] == [(lot.starts_at, lot.ends_at) for lot in lots]


def test_a_term_that_starts_after_delivery_keeps_its_start() -> None:
    assert (NOW + DAY, NOW + 2 * DAY) == delivered_term(NOW + DAY, NOW + 2 * DAY, NOW)


def test_a_term_that_ended_before_delivery_is_delivered_empty() -> None:
    assert (NOW - DAY, NOW - DAY) == delivered_term(NOW - 9 * DAY, NOW - DAY, NOW)


def test_a_perpetual_line_is_delivered_as_it_is() -> None:
    assert (None, None) == delivered_term(None, None, NOW)


async def test_an_order_already_in_a_smart_account_cannot_be_transferred(site: Site) -> None:
    await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=5))
    with pytest.raises(Refused, match="only orders in a holding account can be transferred"):
        await site.run(transfer_order, number="PO-1", to_account="ACME", va_name=None, now=NOW)


async def test_an_order_cannot_be_delivered_to_a_holding_account(site: Site) -> None:
    await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=5), account_name="PartnerCo")
    with pytest.raises(Refused, match="delivered to a customer's smart account"):
        await site.run(transfer_order, number="PO-1", to_account="PartnerCo", va_name=None, now=NOW)


async def test_a_holding_account_lists_the_orders_it_delivered(site: Site) -> None:
    await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=5), account_name="PartnerCo")
    await site.run(transfer_order, as_=PAT, number="PO-1", to_account="ACME", va_name=None, now=NOW)
    orders = await site.run(list_orders, as_=PAT, account_name="PartnerCo")
    assert [("PO-1", "PartnerCo", "ACME/DEFAULT")] == [
        (o.number, o.origin, o.holder) for o in orders
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (OrderLine(tag="Bad Tag", quantity=1), "license tag"),
        (OrderLine(tag=NA, quantity=0), "1.."),
        (OrderLine(tag=NA, quantity=1, starts_at=NOW, ends_at=NOW), "ends after it starts"),
        (OrderLine(tag=NA, quantity=1, starts_at=NOW), "both a start and an end"),
    ],
)
def test_an_invalid_order_line_is_refused(line: OrderLine, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        check_order_line(line)


async def test_a_license_transfer_moves_licenses_between_vas(site: Site) -> None:
    await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=10), va_name="Engineering")
    await site.run(
        transfer_licenses,
        as_=ALICE,
        account_name="ACME",
        tag=NA,
        count=4,
        from_va="Engineering",
        to_va="DEFAULT",
        now=NOW,
    )
    assert {("DEFAULT", NA): 4, ("Engineering", NA): 6} == await _pools(site)


async def test_a_transfer_larger_than_the_active_licenses_is_refused(site: Site) -> None:
    await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=3), va_name="Engineering")
    with pytest.raises(
        Refused, match="Engineering has 3 active network-advantage licenses; cannot transfer 5"
    ):
        await site.run(
            transfer_licenses,
            account_name="ACME",
            tag=NA,
            count=5,
            from_va="Engineering",
            to_va="DEFAULT",
            now=NOW,
        )


async def test_licenses_not_yet_active_cannot_be_transferred(site: Site) -> None:
    future = OrderLine(tag=NA, quantity=5, starts_at=NOW + DAY, ends_at=NOW + 9 * DAY)
    await _deposit(site, "PO-1", future, va_name="Engineering")
    with pytest.raises(Refused, match="has 0 active"):
        await site.run(
            transfer_licenses,
            account_name="ACME",
            tag=NA,
            count=1,
            from_va="Engineering",
            to_va="DEFAULT",
            now=NOW,
        )


async def test_a_transfer_that_leaves_the_source_short_is_allowed_and_reported(
    site: Site,
) -> None:
    await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=5), va_name="Engineering")
    [device] = await site.register("ACME", "Engineering", "S1")
    await site.report(device, {NA: 4})
    moved = await site.run(
        transfer_licenses,
        account_name="ACME",
        tag=NA,
        count=3,
        from_va="Engineering",
        to_va="DEFAULT",
        now=NOW,
    )
    assert 2 == moved.source_shortfall


async def test_no_overdraw_refuses_a_transfer_that_leaves_the_source_short(site: Site) -> None:
    await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=5), va_name="Engineering")
    [device] = await site.register("ACME", "Engineering", "S1")
    await site.report(device, {NA: 4})
    with pytest.raises(Refused, match="--no-overdraw"):
        await site.run(
            transfer_licenses,
            account_name="ACME",
            tag=NA,
            count=3,
            from_va="Engineering",
            to_va="DEFAULT",
            now=NOW,
            no_overdraw=True,
        )


async def test_a_transfer_to_the_same_va_is_refused(site: Site) -> None:
    with pytest.raises(InvalidRequest, match="the same virtual account"):
        await site.run(
            transfer_licenses,
            account_name="ACME",
            tag=NA,
            count=1,
            from_va="DEFAULT",
            to_va="DEFAULT",
            now=NOW,
        )


def _lot(lot_id: int, quantity: int, ends_at: int | None) -> License:
    return License(
        id=lot_id,
        order_line_id=1,
        account_id=1,
        va_id=1,
        tag=NA,
        quantity=quantity,
        starts_at=None if ends_at is None else NOW - DAY,
        ends_at=ends_at,
        arrived_at=NOW,
        transfer_id=None,
        source_id=None,
    )


def test_a_transfer_takes_perpetual_licenses_then_the_longest_terms() -> None:
    lots = [_lot(1, 2, NOW + DAY), _lot(2, 2, NOW + 9 * DAY), _lot(3, 2, None)]
    picks = choose_lots(lots, 3, NOW)
    assert [(3, 2), (2, 1)] == [(lot.id, take) for lot, take in picks]


def test_a_transfer_never_takes_expired_licenses() -> None:
    picks = choose_lots([_lot(1, 5, NOW - 1), _lot(2, 1, NOW + DAY)], 1, NOW)
    assert [(2, 1)] == [(lot.id, take) for lot, take in picks]


async def test_provenance_traces_a_pool_to_its_orders_and_transfers(site: Site) -> None:
    await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=10), va_name="Engineering")
    await _deposit(site, "PO-2", OrderLine(tag=NA, quantity=20), account_name="PartnerCo")
    await site.run(transfer_order, number="PO-2", to_account="ACME", va_name="Engineering", now=NOW)
    await site.run(
        transfer_licenses,
        account_name="ACME",
        tag=NA,
        count=25,
        from_va="Engineering",
        to_va="DEFAULT",
        now=NOW,
    )
    lots = await site.run(provenance, account_name="ACME", va_name="DEFAULT", tag=NA, now=NOW)
    assert [
        (
            "PO-1",
            10,
            ("deposited into ACME/Engineering", "transfer #1 from Engineering to ACME/DEFAULT"),
        ),
        (
            "PO-2",
            15,
            (
                "deposited into PartnerCo",
                "delivered to ACME/Engineering",
                "transfer #1 from Engineering to ACME/DEFAULT",
            ),
        ),
    ] == [(lot.order, lot.quantity, lot.history) for lot in lots]


async def test_an_order_already_delivered_is_refused_as_delivered_not_as_missing(
    site: Site,
) -> None:
    """The partner still lists it among its orders: "no order" was untrue."""
    await _deposit(site, "PO-1", OrderLine(tag=NA, quantity=5), account_name="PartnerCo")
    await site.run(transfer_order, as_=PAT, number="PO-1", to_account="ACME", va_name=None, now=NOW)

    with pytest.raises(Refused, match=r"order PO-1 was already delivered \(to ACME\)"):
        await site.run(
            transfer_order, as_=PAT, number="PO-1", to_account="ACME", va_name=None, now=NOW
        )


DNA = "dna-essentials"


async def _two_lines_in_partnerco(site: Site) -> None:
    lines = (OrderLine(tag=NA, quantity=20), OrderLine(tag=DNA, quantity=5))
    await _deposit(site, "PO-1", *lines, account_name="PartnerCo")


async def _deliver(site: Site, *lines: int, va: str | None = None) -> Any:
    return await site.run(
        transfer_order,
        as_=PAT,
        number="PO-1",
        to_account="ACME",
        va_name=va,
        now=NOW,
        lines=lines,
    )


async def test_one_line_of_an_order_can_be_delivered_on_its_own(site: Site) -> None:
    """SPEC §2: "move a whole order (or lines) from a PHA to an SA"."""
    await _two_lines_in_partnerco(site)

    order = await _deliver(site, 2)

    assert {("DEFAULT", DNA): 5} == await _pools(site)
    assert ("PartnerCo", None, (2,)) == (order.holder, order.delivered_at, order.delivered_lines)


async def test_an_order_leaves_its_holding_account_with_its_last_line(site: Site) -> None:
    await _two_lines_in_partnerco(site)
    await _deliver(site, 2)

    order = await _deliver(site, 1, va="Engineering")

    assert {("DEFAULT", DNA): 5, ("Engineering", NA): 20} == await _pools(site)
    assert ("ACME/Engineering", NOW, ()) == (
        order.holder,
        order.delivered_at,
        order.delivered_lines,
    )


async def test_an_order_transfer_without_lines_delivers_the_lines_still_held(site: Site) -> None:
    await _two_lines_in_partnerco(site)
    await _deliver(site, 2)

    await _deliver(site, va="Engineering")

    assert {("DEFAULT", DNA): 5, ("Engineering", NA): 20} == await _pools(site)


async def test_a_line_already_delivered_is_refused(site: Site) -> None:
    await _two_lines_in_partnerco(site)
    await _deliver(site, 2)

    with pytest.raises(Refused, match="line 2 of order PO-1 was already delivered"):
        await _deliver(site, 2)


async def test_a_line_the_order_does_not_have_is_refused(site: Site) -> None:
    await _two_lines_in_partnerco(site)

    with pytest.raises(InvalidRequest, match="order PO-1 has no line 3: its lines are 1 to 2"):
        await _deliver(site, 3)


async def test_the_customer_of_one_line_lists_the_order(site: Site) -> None:
    await _two_lines_in_partnerco(site)
    await _deliver(site, 2)

    listed = await site.run(list_orders, account_name="ACME")

    assert [("PO-1", (2,))] == [(o.number, o.delivered_lines) for o in listed]


async def test_a_va_reader_of_the_va_a_line_landed_in_lists_the_order(site: Site) -> None:
    await site.run(
        add_user,
        account_name="ACME",
        email="vera@acme.example",
        role=Role.VA_USER,
        va_name="Engineering",
        now=NOW,
    )
    await _two_lines_in_partnerco(site)
    await _deliver(site, 2, va="Engineering")

    listed = await site.run(list_orders, as_="vera@acme.example", account_name="ACME")

    assert ["PO-1"] == [o.number for o in listed]


async def test_a_customer_of_some_lines_sees_its_lines_and_no_other_customer(
    site: Site,
) -> None:
    """The order went on to another customer with its last line: ACME was shown it held
    there, with that customer's lines."""
    await site.run(
        site_ops.create_smart_account, name="Globex", admin_email="hank@globex.example", now=NOW
    )
    await _two_lines_in_partnerco(site)
    await _deliver(site, 2)
    await site.run(
        transfer_order,
        as_=PAT,
        number="PO-1",
        to_account="Globex",
        va_name=None,
        now=NOW,
        lines=(1,),
    )

    (seen,) = await site.run(list_orders, account_name="ACME")

    assert ("PartnerCo", (OrderLine(tag=DNA, quantity=5),)) == (seen.holder, seen.lines)
