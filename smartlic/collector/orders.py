"""Orders: deposited into a smart account's VA or a partner holding account, and delivered
from a holding account to a customer.

An order number is unique across the site: depositing it twice is refused. Each line makes one
lot of licenses (``licenses.py``). Delivering an order moves its lots from the holding account
into a VA of the customer's smart account; a term line's start is moved up to the delivery, so
a customer never receives licenses that were already ticking away in someone else's account.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smartlic.collector import audit
from smartlic.collector.accounts import (
    Account,
    AccountKind,
    VirtualAccount,
    account_by_id,
    check_name,
    find_account,
    virtual_account_or_default,
    virtual_accounts_by_id,
    virtual_accounts_of,
)
from smartlic.collector.audit import AuditEntry
from smartlic.collector.changes import ChangeKind, append_change
from smartlic.collector.compliance import reevaluate
from smartlic.collector.errors import InvalidRequest, NotFound, Refused
from smartlic.collector.licenses import License, check_count, check_tag, move_lots
from smartlic.collector.rbac import (
    Actor,
    Permission,
    Scope,
    authorize,
    authorized_vas,
    refuse_unseen,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from smartlic.collector.store import Row, Transaction


@dataclass(frozen=True, slots=True, kw_only=True)
class OrderLine:
    tag: str
    quantity: int
    starts_at: int | None = None
    """Term licenses: active while starts_at ≤ now < ends_at. Perpetual: both None."""
    ends_at: int | None = None

    @property
    def perpetual(self) -> bool:
        return self.starts_at is None


def check_order_line(line: OrderLine) -> OrderLine:
    check_tag(line.tag)
    check_count(line.quantity)
    if (line.starts_at is None) != (line.ends_at is None):
        raise InvalidRequest(f"{line.tag}: a term line has both a start and an end")
    if line.starts_at is not None and line.ends_at is not None and line.starts_at >= line.ends_at:
        raise InvalidRequest(f"{line.tag}: a term ends after it starts")
    return line


def delivered_term(
    starts_at: int | None, ends_at: int | None, delivered_at: int
) -> tuple[int | None, int | None]:
    """A term line's start is never before the delivery to the smart account.

    A term that ended before the delivery is delivered empty (start = end): it stays traceable
    but never counts.
    """
    if starts_at is None or ends_at is None:
        return starts_at, ends_at
    start = max(starts_at, delivered_at)
    return min(start, ends_at), ends_at


@dataclass(frozen=True, slots=True, kw_only=True)
class Order:
    number: str
    ordered_on: int
    deposited_at: int
    origin: str
    """The account it was deposited into."""
    holder: str
    """The account (and VA) that holds it now."""
    delivered_at: int | None
    lines: tuple[OrderLine, ...]
    delivered_lines: tuple[int, ...] = ()
    """Of an order still in its holding account, the lines (1 for the first) delivered out of
    it already, one by one."""


async def _load_orders(tx: Transaction, rows: Sequence[Row]) -> list[Order]:
    ids = [int(row["id"]) for row in rows]
    lines: dict[int, list[OrderLine]] = {order_id: [] for order_id in ids}
    for line in await tx.fetch_in(
        "SELECT * FROM order_lines WHERE order_id IN ({in}) ORDER BY order_id, line_no", ids
    ):
        lines[int(line["order_id"])].append(
            OrderLine(
                tag=str(line["tag"]),
                quantity=int(line["quantity"]),
                starts_at=None if line["starts_at"] is None else int(line["starts_at"]),
                ends_at=None if line["ends_at"] is None else int(line["ends_at"]),
            )
        )
    vas = await virtual_accounts_by_id(
        tx, sorted({int(r["va_id"]) for r in rows if r["va_id"] is not None})
    )
    names = {
        int(r["id"]): str(r["name"])
        for r in await tx.fetch_in(
            "SELECT id, name FROM accounts WHERE id IN ({in})",
            sorted({int(r[c]) for r in rows for c in ("account_id", "origin_account_id")}),
        )
    }
    partly = [int(r["id"]) for r in rows if r["delivered_at"] is None]
    delivered: dict[int, list[int]] = {order_id: [] for order_id in partly}
    for line in await tx.fetch_in(
        "SELECT ol.order_id, ol.line_no FROM order_lines ol JOIN orders o ON o.id = ol.order_id"
        " WHERE ol.order_id IN ({in}) AND NOT EXISTS (SELECT 1 FROM licenses l"
        " WHERE l.order_line_id = ol.id AND l.account_id = o.account_id AND l.quantity > 0)"
        " ORDER BY ol.order_id, ol.line_no",
        partly,
    ):
        delivered[int(line["order_id"])].append(int(line["line_no"]))
    return [
        Order(
            number=str(row["number"]),
            ordered_on=int(row["ordered_on"]),
            deposited_at=int(row["deposited_at"]),
            origin=names[int(row["origin_account_id"])],
            holder=names[int(row["account_id"])]
            + (f"/{vas[int(row['va_id'])].name}" if row["va_id"] is not None else ""),
            delivered_at=None if row["delivered_at"] is None else int(row["delivered_at"]),
            lines=tuple(lines[int(row["id"])]),
            delivered_lines=tuple(delivered.get(int(row["id"]), ())),
        )
        for row in rows
    ]


async def _order_row(tx: Transaction, number: str) -> Row:
    row = await tx.fetch_one("SELECT * FROM orders WHERE number = ?", (number,))
    if row is None:
        raise NotFound(f"no order {number!r}")
    return row


async def deposit_order(  # noqa: PLR0913 -- keyword-only fields of one request
    tx: Transaction,
    actor: Actor,
    *,
    number: str,
    ordered_on: int,
    lines: Sequence[OrderLine],
    account_name: str,
    va_name: str | None = None,
    kind: AccountKind | None = None,
    now: int,
) -> Order:
    """Deposit an order into a smart account's VA (default VA if none) or a holding account;
    ``kind``, when given, is the kind the caller means the account to be."""
    number = check_name("order number", number)
    lines = [check_order_line(line) for line in lines]
    if not lines:
        raise InvalidRequest("an order has at least one line")
    account = await find_account(tx, account_name, seen_by=actor)
    if kind is not None and account.kind is not kind:
        # A deposit cannot be undone: one meant for a partner's holding account and made
        # into a customer's pool can be consumed at once and never moved back.
        raise Refused(f"{account.name} is a {account.kind} account, not a {kind} account")
    va: VirtualAccount | None = None
    if account.kind is AccountKind.HOLDING:
        if va_name is not None:
            raise InvalidRequest(f"{account.name} is a holding account: it has no VAs")
        scope: Scope = account.scope
    else:
        va = await virtual_account_or_default(tx, account, va_name)
        scope = va.scope
    authorize(actor, Permission.ORDER_DEPOSIT, scope)
    existing = await tx.fetch_one(
        "SELECT origin_account_id FROM orders WHERE number = ?", (number,)
    )
    if existing is not None:
        origin = await account_by_id(tx, int(existing["origin_account_id"]))
        raise Refused(f"order {number} was already deposited (into {origin.name})")
    row = await tx.fetch_one(
        "INSERT INTO orders (number, ordered_on, deposited_at, origin_account_id, account_id,"
        " va_id) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        (number, ordered_on, now, account.id, account.id, va.id if va else None),
    )
    if row is None:
        message = "INSERT ... RETURNING gave no row"
        raise RuntimeError(message)
    order_id = int(row["id"])
    for line_no, line in enumerate(lines, start=1):
        line_row = await tx.fetch_one(
            "INSERT INTO order_lines (order_id, line_no, tag, quantity, starts_at, ends_at)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (order_id, line_no, line.tag, line.quantity, line.starts_at, line.ends_at),
        )
        if line_row is None:
            message = "INSERT ... RETURNING gave no row"
            raise RuntimeError(message)
        await tx.execute(
            "INSERT INTO licenses (order_line_id, account_id, va_id, tag, quantity, starts_at,"
            " ends_at, arrived_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                int(line_row["id"]),
                account.id,
                va.id if va else None,
                line.tag,
                line.quantity,
                line.starts_at,
                line.ends_at,
                now,
            ),
        )
    flips = await reevaluate(tx, [va.id], actor=actor.email, now=now) if va else []
    await audit.append(
        tx,
        [
            AuditEntry(
                actor=actor.email,
                action="order.deposit",
                subject=f"order {number} into {scope.label}",
                account_id=account.id,
                after={"lines": [_line_json(line) for line in lines], "ordered_on": ordered_on},
            )
        ],
        now=now,
    )
    if va is not None:
        await append_change(
            tx,
            ChangeKind.ORDER_DEPOSIT,
            now=now,
            account_id=account.id,
            va_ids=[va.id],
            flips=flips,
        )
    return (await _load_orders(tx, [await _order_row(tx, number)]))[0]


def _line_json(line: OrderLine) -> dict[str, object]:
    return {
        "tag": line.tag,
        "quantity": line.quantity,
        "starts_at": line.starts_at,
        "ends_at": line.ends_at,
    }


def require_in_holding_account(number: str, holder: Account) -> None:
    """Only an order still in a partner holding account can be delivered to a customer."""
    if holder.kind is not AccountKind.HOLDING:
        raise Refused(
            f"order {number} is in {holder.name}, not in a holding account: only orders in a"
            " holding account can be transferred"
        )


async def transfer_order(
    tx: Transaction,
    actor: Actor,
    *,
    number: str,
    to_account: str,
    va_name: str | None,
    now: int,
    lines: Sequence[int] = (),
) -> Order:
    """Deliver an order from a holding account to a smart account's VA (default VA if none):
    the ``lines`` named (1 for the first), or every line still held (SPEC §2: "a whole order
    (or lines)"). The order leaves the holding account with its last line."""
    row = await _order_row(tx, number)
    holding = await account_by_id(tx, int(row["account_id"]))
    origin = await account_by_id(tx, int(row["origin_account_id"]))
    if origin.id != holding.id and actor.may(Permission.ORDER_READ, origin.scope):
        # The partner that delivered it still lists it: "no order" would be untrue.
        raise Refused(f"order {number} was already delivered (to {holding.name})")
    refuse_unseen(actor, Permission.ORDER_READ, None, holding.scope, f"no order {number!r}")
    authorize(actor, Permission.ORDER_TRANSFER, holding.scope)
    require_in_holding_account(number, holding)
    # The customer is named as the destination: delivering to it takes no role in it.
    customer = await find_account(tx, to_account, seen_by=None)
    if customer.kind is AccountKind.HOLDING:
        raise Refused(
            f"{customer.name} is a partner holding account: orders are delivered to a"
            " customer's smart account"
        )
    va = await virtual_account_or_default(tx, customer, va_name)
    order_id = int(row["id"])
    lots, delivered = await _lots_to_deliver(tx, number, order_id, holding, lines)
    await move_lots(
        tx,
        [(lot, lot.quantity) for lot in lots],
        account_id=customer.id,
        va_id=va.id,
        transfer_id=None,
        now=now,
        term=lambda lot: delivered_term(lot.starts_at, lot.ends_at, now),
    )
    still_held = await tx.fetch_one(
        "SELECT COUNT(*) AS n FROM licenses l JOIN order_lines ol ON ol.id = l.order_line_id"
        " WHERE ol.order_id = ? AND l.account_id = ? AND l.quantity > 0",
        (order_id, holding.id),
    )
    if still_held is None or not int(still_held["n"]):
        await tx.execute(
            "UPDATE orders SET account_id = ?, va_id = ?, delivered_at = ? WHERE id = ?",
            (customer.id, va.id, now, order_id),
        )
    flips = await reevaluate(tx, [va.id], actor=actor.email, now=now)
    await audit.append(
        tx,
        [
            AuditEntry(
                actor=actor.email,
                action="order.transfer",
                subject=f"order {number}",
                account_id=customer.id,
                counterpart_id=holding.id,
                before={"holder": holding.name},
                after={
                    "holder": va.scope.label,
                    **({"lines": delivered} if lines else {}),
                },
            )
        ],
        now=now,
    )
    await append_change(
        tx,
        ChangeKind.ORDER_TRANSFER,
        now=now,
        account_id=customer.id,
        va_ids=[va.id],
        flips=flips,
    )
    return (await _load_orders(tx, [await _order_row(tx, number)]))[0]


async def _lots_to_deliver(
    tx: Transaction, number: str, order_id: int, holding: Account, lines: Sequence[int]
) -> tuple[list[License], list[int]]:
    """The lots of the order's ``lines`` (all of them if none) still in ``holding``, and the
    numbers of the lines they are."""
    numbers = [
        int(r["line_no"])
        for r in await tx.fetch_all(
            "SELECT line_no FROM order_lines WHERE order_id = ? ORDER BY line_no", (order_id,)
        )
    ]
    unknown = sorted(set(lines) - set(numbers))
    if unknown:
        raise InvalidRequest(
            f"order {number} has no line {unknown[0]}: its lines are 1 to {len(numbers)}"
        )
    wanted = set(lines) or set(numbers)
    rows = [
        row
        for row in await tx.fetch_all(
            "SELECT l.*, ol.line_no AS line_no FROM licenses l"
            " JOIN order_lines ol ON ol.id = l.order_line_id"
            " WHERE ol.order_id = ? AND l.account_id = ? AND l.quantity > 0 ORDER BY l.id",
            (order_id, holding.id),
        )
        if int(row["line_no"]) in wanted
    ]
    held = sorted({int(row["line_no"]) for row in rows})
    gone = sorted(wanted - set(held))
    if lines and gone:
        raise Refused(f"line {gone[0]} of order {number} was already delivered")
    return [License.from_row(row) for row in rows], held


async def list_orders(tx: Transaction, actor: Actor, account_name: str) -> list[Order]:
    """Orders held by the account or deposited into it (a holding account's delivered ones
    too), restricted for VA-scoped readers to orders that landed in their VAs."""
    account = await find_account(tx, account_name, seen_by=actor)
    rows = await tx.fetch_all(
        "SELECT * FROM orders WHERE account_id = ? OR origin_account_id = ?"
        # An order whose lines are delivered one by one is held by its holding account until
        # the last: the customers of the others list it too.
        " OR id IN (SELECT ol.order_id FROM order_lines ol"
        " JOIN licenses l ON l.order_line_id = ol.id WHERE l.account_id = ? AND l.quantity > 0)"
        " ORDER BY number",
        (account.id, account.id, account.id),
    )
    if account.kind is AccountKind.HOLDING:
        authorize(actor, Permission.ORDER_READ, account.scope)
        return await _load_orders(tx, rows)
    vas = await virtual_accounts_of(tx, account)
    visible = authorized_vas(
        actor, Permission.ORDER_READ, account.scope, [(v.id, v.name) for v in vas]
    )
    everything = actor.may(Permission.ORDER_READ, account.scope)
    landed = await _lines_landed(tx, account, rows)
    shown = [
        row
        for row in rows
        if everything
        or (row["va_id"] is not None and int(row["va_id"]) in visible)
        or any(va_id in visible for _, va_id in landed.get(int(row["id"]), ()))
    ]
    return [
        _as_seen_by(account, row, order, landed.get(int(row["id"]), set()))
        for row, order in zip(shown, await _load_orders(tx, shown), strict=True)
    ]


async def _lines_landed(
    tx: Transaction, account: Account, rows: Sequence[Row]
) -> dict[int, set[tuple[int, int]]]:
    """By order, the (line number, VA) of each of its lots in ``account``."""
    landed: dict[int, set[tuple[int, int]]] = {}
    for lot in await tx.fetch_in(
        "SELECT ol.order_id, ol.line_no, l.va_id FROM order_lines ol"
        " JOIN licenses l ON l.order_line_id = ol.id"
        " WHERE l.account_id = ? AND l.quantity > 0 AND ol.order_id IN ({in})",
        [int(row["id"]) for row in rows],
        (account.id,),
    ):
        landed.setdefault(int(lot["order_id"]), set()).add((int(lot["line_no"]), int(lot["va_id"])))
    return landed


def _as_seen_by(account: Account, row: Row, order: Order, landed: set[tuple[int, int]]) -> Order:
    """``order`` as a customer that received some of its lines sees it: those lines, and the
    holding account it came from rather than another customer that holds the rest."""
    if int(row["origin_account_id"]) == account.id:
        return order
    mine = {line_no for line_no, _ in landed}
    return dataclasses.replace(
        order,
        holder=order.holder if int(row["account_id"]) == account.id else order.origin,
        lines=tuple(line for n, line in enumerate(order.lines, start=1) if n in mine),
        delivered_lines=tuple(n for n in order.delivered_lines if n in mine),
    )
