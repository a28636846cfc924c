"""Licenses as lots, transfers of licenses between VAs, and provenance.

A *lot* is some licenses of one order line sitting in one pool, with that line's term. Lots are
never merged or deleted: a transfer drains source lots (their quantity goes down) and creates
new lots in the target that point back at what they came from (``source_id``, and the transfer
that moved them). Following those links from any lot reaches the order that created it, which
is what :func:`provenance` shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from smartlic.collector import audit
from smartlic.collector.accounts import (
    VirtualAccount,
    find_smart_account,
    find_virtual_account,
    virtual_accounts_by_id,
    virtual_accounts_of,
)
from smartlic.collector.audit import AuditEntry
from smartlic.collector.changes import ChangeKind, PoolFlip, append_change
from smartlic.collector.compliance import (
    active_quantity,
    license_active,
    load_pool_states,
    pool_compliance,
    reevaluate,
)
from smartlic.collector.errors import InvalidRequest, Refused
from smartlic.collector.rbac import Actor, Permission, authorize, authorized_vas
from smartlic.protocol import LocalProtocolError
from smartlic.protocol import fields as protocol_fields

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from smartlic.collector.store import Row, Transaction


@dataclass(frozen=True, slots=True, kw_only=True)
class License:
    """One lot."""

    id: int
    order_line_id: int
    account_id: int
    va_id: int | None
    tag: str
    quantity: int
    starts_at: int | None
    ends_at: int | None
    arrived_at: int
    transfer_id: int | None
    source_id: int | None

    @classmethod
    def from_row(cls, row: Row) -> License:
        def optional(name: str) -> int | None:
            return None if row[name] is None else int(row[name])

        return cls(
            id=int(row["id"]),
            order_line_id=int(row["order_line_id"]),
            account_id=int(row["account_id"]),
            va_id=optional("va_id"),
            tag=str(row["tag"]),
            quantity=int(row["quantity"]),
            starts_at=optional("starts_at"),
            ends_at=optional("ends_at"),
            arrived_at=int(row["arrived_at"]),
            transfer_id=optional("transfer_id"),
            source_id=optional("source_id"),
        )


def check_tag(tag: str) -> str:
    try:
        return protocol_fields.license_tag(tag)
    except LocalProtocolError as exc:
        raise InvalidRequest(exc.message) from None


def check_count(count: int) -> int:
    if not 1 <= count <= protocol_fields.COUNT_MAX:
        raise InvalidRequest(f"a license count is 1..{protocol_fields.COUNT_MAX}, not {count}")
    return count


def transfer_preference(lot: License) -> tuple[int, int, int]:
    """Which lots a transfer takes first: perpetual ones, then the terms that end last.

    The receiving VA gets the longest-lived licenses, and the source keeps the ones about to
    end anyway. Ties go to the oldest lot, so the choice is deterministic.
    """
    return (0 if lot.ends_at is None else 1, -(lot.ends_at or 0), lot.id)


def choose_lots(lots: Iterable[License], count: int, now: int) -> list[tuple[License, int]]:
    """``(lot, how many to take from it)`` covering ``count`` active licenses."""
    picks: list[tuple[License, int]] = []
    left = count
    for lot in sorted(lots, key=transfer_preference):
        if left == 0:
            break
        if lot.quantity > 0 and license_active(lot.starts_at, lot.ends_at, now):
            take = min(lot.quantity, left)
            picks.append((lot, take))
            left -= take
    return picks


def check_transfer_available(source: VirtualAccount, tag: str, active: int, count: int) -> None:
    """A VA can give away only licenses it has, active now."""
    if active < count:
        raise Refused(
            f"{source.name} has {active} active {tag} license{'s' * (active != 1)};"
            f" cannot transfer {count}"
        )


def refuse_overdraw(source: VirtualAccount, tag: str, remaining: int, in_use: int) -> None:
    """With --no-overdraw: refuse a transfer that would leave the source short."""
    if remaining < in_use:
        raise Refused(
            f"transferring would leave {source.name} with {remaining} {tag} licenses for"
            f" {in_use} in use (--no-overdraw)"
        )


async def pool_lots(tx: Transaction, va_id: int, tag: str) -> list[License]:
    rows = await tx.fetch_all(
        "SELECT * FROM licenses WHERE va_id = ? AND tag = ? AND quantity > 0 ORDER BY id",
        (va_id, tag),
    )
    return [License.from_row(row) for row in rows]


async def move_lots(
    tx: Transaction,
    picks: Sequence[tuple[License, int]],
    *,
    account_id: int,
    va_id: int | None,
    transfer_id: int | None,
    now: int,
    term: Callable[[License], tuple[int | None, int | None]] = lambda lot: (
        lot.starts_at,
        lot.ends_at,
    ),
) -> None:
    """Take ``n`` licenses from each picked lot and put them in new lots in the target."""
    await tx.execute_many(
        "UPDATE licenses SET quantity = quantity - ? WHERE id = ?",
        [(take, lot.id) for lot, take in picks],
    )
    await tx.execute_many(
        "INSERT INTO licenses (order_line_id, account_id, va_id, tag, quantity, starts_at,"
        " ends_at, arrived_at, transfer_id, source_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                lot.order_line_id,
                account_id,
                va_id,
                lot.tag,
                take,
                *term(lot),
                now,
                transfer_id,
                lot.id,
            )
            for lot, take in picks
        ],
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class LicenseTransfer:
    id: int
    tag: str
    count: int
    source: VirtualAccount
    target: VirtualAccount
    source_purchased: int
    source_in_use: int
    flips: tuple[PoolFlip, ...]

    @property
    def source_shortfall(self) -> int:
        """SPEC §2: a transfer that leaves the source short is allowed, and reported."""
        return pool_compliance(self.source_purchased, self.source_in_use).shortfall


async def transfer_licenses(  # noqa: PLR0913 -- keyword-only fields of one request
    tx: Transaction,
    actor: Actor,
    *,
    account_name: str,
    tag: str,
    count: int,
    from_va: str,
    to_va: str,
    now: int,
    no_overdraw: bool = False,
) -> LicenseTransfer:
    """Move ``count`` active licenses of ``tag`` between two VAs of one smart account."""
    account = await find_smart_account(
        tx, account_name, "virtual accounts to transfer between", seen_by=actor
    )
    source = await find_virtual_account(tx, account, from_va)
    target = await find_virtual_account(tx, account, to_va)
    authorize(actor, Permission.LICENSE_TRANSFER, source.scope)
    authorize(actor, Permission.LICENSE_TRANSFER, target.scope)
    tag, count = check_tag(tag), check_count(count)
    if source.id == target.id:
        raise InvalidRequest("source and target are the same virtual account")
    lots = await pool_lots(tx, source.id, tag)
    active = active_quantity(lots, now)
    check_transfer_available(source, tag, active, count)
    before = await load_pool_states(tx, [(source.id, tag), (target.id, tag)], now)
    in_use = before[source.id, tag].in_use
    if no_overdraw:
        refuse_overdraw(source, tag, active - count, in_use)
    row = await tx.fetch_one(
        "INSERT INTO license_transfers (account_id, tag, quantity, from_va_id, to_va_id, at,"
        " actor) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (account.id, tag, count, source.id, target.id, now, actor.email),
    )
    if row is None:
        message = "INSERT ... RETURNING gave no row"
        raise RuntimeError(message)
    transfer_id = int(row["id"])
    await move_lots(
        tx,
        choose_lots(lots, count, now),
        account_id=account.id,
        va_id=target.id,
        transfer_id=transfer_id,
        now=now,
    )
    flips = await reevaluate(tx, [source.id, target.id], actor=actor.email, now=now)
    await audit.append(
        tx,
        [
            AuditEntry(
                actor=actor.email,
                action="license.transfer",
                subject=f"{count} {tag} from {source.name} to {target.name}",
                account_id=account.id,
                before={
                    source.name: before[source.id, tag].purchased,
                    target.name: before[target.id, tag].purchased,
                },
                after={
                    source.name: before[source.id, tag].purchased - count,
                    target.name: before[target.id, tag].purchased + count,
                },
            )
        ],
        now=now,
    )
    await append_change(
        tx,
        ChangeKind.LICENSE_TRANSFER,
        now=now,
        account_id=account.id,
        va_ids=[source.id, target.id],
        flips=flips,
    )
    return LicenseTransfer(
        id=transfer_id,
        tag=tag,
        count=count,
        source=source,
        target=target,
        source_purchased=before[source.id, tag].purchased - count,
        source_in_use=in_use,
        flips=tuple(flips),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Provenance:
    """Where the licenses of one lot came from: the order line and every move since."""

    va: str
    tag: str
    quantity: int
    starts_at: int | None
    ends_at: int | None
    active: bool
    order: str
    line: int
    history: tuple[str, ...]


async def provenance(
    tx: Transaction,
    actor: Actor,
    *,
    account_name: str,
    va_name: str | None,
    tag: str | None,
    now: int,
) -> list[Provenance]:
    """The lots of an account's pools (one VA's, one tag's), each traced to its order."""
    account = await find_smart_account(tx, account_name, "license pools", seen_by=actor)
    if va_name is not None:
        va = await find_virtual_account(tx, account, va_name)
        authorize(actor, Permission.LICENSE_READ, va.scope)
        visible = {va.id}
    else:
        vas = await virtual_accounts_of(tx, account)
        visible = authorized_vas(
            actor, Permission.LICENSE_READ, account.scope, [(v.id, v.name) for v in vas]
        )
    rows = await tx.fetch_all(
        "SELECT l.*, o.number, ol.line_no FROM licenses l"
        " JOIN order_lines ol ON ol.id = l.order_line_id JOIN orders o ON o.id = ol.order_id"
        " WHERE l.account_id = ? AND l.quantity > 0 ORDER BY l.id",
        (account.id,),
    )
    lots = [
        (License.from_row(row), str(row["number"]), int(row["line_no"]))
        for row in rows
        if row["va_id"] is not None
        and int(row["va_id"]) in visible
        and (tag is None or row["tag"] == tag)
    ]
    history = await _histories(tx, [lot for lot, _, _ in lots])
    names = await virtual_accounts_by_id(tx, sorted(visible))
    return [
        Provenance(
            va=names[lot.va_id].name if lot.va_id is not None else "",
            tag=lot.tag,
            quantity=lot.quantity,
            starts_at=lot.starts_at,
            ends_at=lot.ends_at,
            active=license_active(lot.starts_at, lot.ends_at, now),
            order=number,
            line=line,
            history=history[lot.id],
        )
        for lot, number, line in sorted(lots, key=lambda x: (x[0].va_id or 0, x[0].tag, x[0].id))
    ]


async def _histories(tx: Transaction, lots: Sequence[License]) -> dict[int, tuple[str, ...]]:
    """For each lot, the steps from its order's deposit to where it is, oldest first."""
    if not lots:
        return {}
    rows = await tx.fetch_in(
        "SELECT l.*, a.name AS account_name, a.kind AS account_kind FROM licenses l"
        " JOIN accounts a ON a.id = l.account_id WHERE l.order_line_id IN ({in})",
        sorted({lot.order_line_id for lot in lots}),
    )
    every = {int(row["id"]): row for row in rows}
    transfers = {
        int(row["id"]): row
        for row in await tx.fetch_in(
            "SELECT * FROM license_transfers WHERE id IN ({in})",
            sorted({int(r["transfer_id"]) for r in rows if r["transfer_id"] is not None}),
        )
    }
    vas = await virtual_accounts_by_id(
        tx, sorted({int(r["va_id"]) for r in rows if r["va_id"] is not None})
    )

    def step(row: Row) -> str:
        here = str(row["account_name"])
        if row["va_id"] is not None:
            here += f"/{vas[int(row['va_id'])].name}"
        if row["transfer_id"] is not None:
            moved = transfers[int(row["transfer_id"])]
            return f"transfer #{moved['id']} from {vas[int(moved['from_va_id'])].name} to {here}"
        if row["source_id"] is not None:
            return f"delivered to {here}"
        return f"deposited into {here}"

    result: dict[int, tuple[str, ...]] = {}
    for lot in lots:
        steps: list[str] = []
        current: Row | None = every[lot.id]
        while current is not None:
            steps.append(step(current))
            source = current["source_id"]
            current = None if source is None else every.get(int(source))
        result[lot.id] = tuple(reversed(steps))
    return result
