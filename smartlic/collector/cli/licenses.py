"""Order and license commands: deposits, deliveries, transfers between VAs, provenance."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartlic.collector import licenses, orders
from smartlic.collector.accounts import AccountKind
from smartlic.collector.cli.framework import Command, Invocation, UsageError
from smartlic.collector.cli.output import Listing, Report
from smartlic.collector.cli.values import (
    format_order_line,
    format_term,
    format_time,
    parse_order_line,
    parse_time,
)

if TYPE_CHECKING:
    import argparse

    from smartlic.collector.orders import Order


def _deposit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("number", metavar="ORDER", help="order number, unique")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--account", metavar="SA", help="deposit into this smart account")
    where.add_argument("--holding", metavar="PHA", help="deposit into this holding account")
    parser.add_argument("--va", help="the smart account's VA (default: its default VA)")
    parser.add_argument(
        "--line",
        dest="lines",
        action="append",
        type=parse_order_line,
        required=True,
        metavar="TAG=N[@START..END]",
        help="an order line (repeat for more)",
    )
    parser.add_argument("--date", type=parse_time, metavar="DATE", help="order date (today)")


def _order_data(order: Order) -> dict[str, str | int | bool | list[str] | None]:
    return {
        "order": order.number,
        "date": (format_time(order.ordered_on) or "")[:10],
        "holder": order.holder,
        "origin": order.origin,
        "deposited": format_time(order.deposited_at),
        # An order delivered line by line is held by its holding account until the last line.
        "delivered": format_time(order.delivered_at)
        or (
            f"line {', '.join(map(str, order.delivered_lines))}" if order.delivered_lines else None
        ),
        "lines": [format_order_line(line) for line in order.lines],
    }


async def _deposit(run: Invocation) -> Report:
    if run.args.holding and run.args.va:
        raise UsageError("--va goes with --account: a holding account has no VAs")
    order = await orders.deposit_order(
        run.tx,
        run.actor,
        number=run.args.number,
        ordered_on=run.args.date if run.args.date is not None else run.now,
        lines=run.args.lines,
        account_name=run.args.account or run.args.holding,
        va_name=run.args.va,
        kind=AccountKind.HOLDING if run.args.holding else AccountKind.SMART,
        now=run.now,
    )
    return Report(f"deposited order {order.number} into {order.holder}", _order_data(order))


def _transfer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("number", metavar="ORDER", help="an order in a holding account")
    parser.add_argument("--to", required=True, metavar="SA", help="the customer's smart account")
    parser.add_argument("--va", help="the VA it lands in (default: the default VA)")
    parser.add_argument(
        "--line",
        dest="lines",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="deliver only line N (1 for the first; repeatable); default: every line still held",
    )


async def _transfer(run: Invocation) -> Report:
    lines: list[int] = run.args.lines
    order = await orders.transfer_order(
        run.tx,
        run.actor,
        number=run.args.number,
        to_account=run.args.to,
        va_name=run.args.va,
        now=run.now,
        lines=lines,
    )
    destination = run.args.to + (f"/{run.args.va}" if run.args.va else "")
    what = f"line {', '.join(map(str, sorted(set(lines))))} of order" if lines else "order"
    return Report(
        f"transferred {what} {order.number} from {order.origin} to {destination}",
        _order_data(order),
    )


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("account", help="smart or holding account")


async def _list(run: Invocation) -> Listing:
    found = await orders.list_orders(run.tx, run.actor, run.args.account)
    return Listing(
        ("order", "date", "holder", "origin", "deposited", "delivered", "lines"),
        [_order_data(order) for order in found],
    )


def _license_transfer_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("account", help="smart account")
    parser.add_argument("--tag", required=True, help="license tag")
    parser.add_argument("--count", required=True, type=int, help="how many licenses")
    parser.add_argument("--from", dest="source", required=True, metavar="VA", help="source VA")
    parser.add_argument("--to", dest="target", required=True, metavar="VA", help="target VA")
    parser.add_argument(
        "--no-overdraw",
        action="store_true",
        help="refuse a transfer that would leave the source VA short",
    )


async def _license_transfer(run: Invocation) -> Report:
    moved = await licenses.transfer_licenses(
        run.tx,
        run.actor,
        account_name=run.args.account,
        tag=run.args.tag,
        count=run.args.count,
        from_va=run.args.source,
        to_va=run.args.target,
        now=run.now,
        no_overdraw=run.args.no_overdraw,
    )
    text = f"transferred {moved.count} {moved.tag} from {moved.source.name} to {moved.target.name}"
    if moved.source_shortfall:
        text += (
            f"; warning: {moved.source.name} is now {moved.source_shortfall} short"
            f" ({moved.source_in_use} in use, {moved.source_purchased} licensed)"
        )
    return Report(
        text,
        {
            "transfer": moved.id,
            "tag": moved.tag,
            "count": moved.count,
            "from": moved.source.name,
            "to": moved.target.name,
            "source_shortfall": moved.source_shortfall,
        },
    )


def _license_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("account", help="smart account")
    parser.add_argument("--va", help="only this VA")
    parser.add_argument("--tag", help="only this license tag")


async def _license_list(run: Invocation) -> Listing:
    lots = await licenses.provenance(
        run.tx,
        run.actor,
        account_name=run.args.account,
        va_name=run.args.va,
        tag=run.args.tag,
        now=run.now,
    )
    return Listing(
        ("va", "tag", "quantity", "term", "active", "order", "line", "history"),
        [
            {
                "va": lot.va,
                "tag": lot.tag,
                "quantity": lot.quantity,
                "term": format_term(lot.starts_at, lot.ends_at),
                "active": lot.active,
                "order": lot.order,
                "line": lot.line,
                "history": list(lot.history),
            }
            for lot in lots
        ],
    )


COMMANDS = (
    Command(("order", "deposit"), "deposit an order", _deposit, _deposit_arguments),
    Command(
        ("order", "transfer"),
        "deliver an order from a holding account to a smart account",
        _transfer,
        _transfer_arguments,
    ),
    Command(("order", "list"), "list an account's orders", _list, _list_arguments, store="read"),
    Command(
        ("license", "transfer"),
        "move licenses between two VAs of a smart account",
        _license_transfer,
        _license_transfer_arguments,
    ),
    Command(
        ("license", "list"),
        "list license lots with their provenance",
        _license_list,
        _license_list_arguments,
        store="read",
    ),
)
