"""Compliance (SPEC §3): what is purchased and in use per (VA, tag), and what that decides.

For a pool — one license tag in one virtual account — **purchased** is the quantity of its
licenses active now (perpetual, or term with start ≤ now < end) and **in use** is the sum of
the latest counts of the VA's registered devices. The pool is in compliance when in use ≤
purchased; otherwise it is short by the difference, and every device of the VA that consumes
the tag is out of compliance.

The rules are pure functions of plain values (:func:`license_active`, :func:`active_quantity`,
:func:`pool_compliance`, :func:`device_status`,
:func:`next_license_change`). The rest loads pools and records statuses. In use is never summed
over devices here: ``pool_usage`` keeps it incrementally (:func:`apply_pool_deltas`, called in the
same transaction as every change to a device's counts, VA or state), so evaluating a pool costs
the same with ten devices or a million.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeAlias

from smartlic.collector import audit
from smartlic.collector.accounts import (
    find_account,
    find_virtual_account,
    refuse_consumption_in_holding_account,
    virtual_accounts_by_id,
    virtual_accounts_of,
)
from smartlic.collector.audit import AuditEntry
from smartlic.collector.changes import PoolFlip
from smartlic.collector.rbac import Actor, Permission, authorize, authorized_vas
from smartlic.protocol import ComplianceStatus, TagCompliance

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping

    from smartlic.collector.store import Transaction

PoolKey: TypeAlias = tuple[int, str]
"""A pool: (VA id, license tag)."""


class Dated(Protocol):
    """Some licenses with a term (``None``, ``None`` for perpetual ones)."""

    @property
    def quantity(self) -> int: ...
    @property
    def starts_at(self) -> int | None: ...
    @property
    def ends_at(self) -> int | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Lot:
    quantity: int
    starts_at: int | None = None
    ends_at: int | None = None


def license_active(starts_at: int | None, ends_at: int | None, now: int) -> bool:
    """Perpetual licenses always count; term licenses while start ≤ now < end."""
    if starts_at is None or ends_at is None:
        return True
    return starts_at <= now < ends_at


def active_quantity(lots: Iterable[Dated], now: int) -> int:
    """Purchased: how many of ``lots``' licenses are active at ``now``."""
    return sum(lot.quantity for lot in lots if license_active(lot.starts_at, lot.ends_at, now))


def next_license_change(lots: Iterable[Dated], now: int) -> int | None:
    """The first time after ``now`` that a term license starts or ends, if any."""
    times = [
        moment
        for lot in lots
        if lot.quantity > 0
        for moment in (lot.starts_at, lot.ends_at)
        if moment is not None and moment > now
    ]
    return min(times, default=None)


def pool_compliance(purchased: int, in_use: int) -> TagCompliance:
    """The pool's standing: its status and shortfall are the protocol's ``TagCompliance``'s."""
    return TagCompliance(in_use=in_use, entitled=purchased)


def device_tags(
    va_id: int, counts: Mapping[str, int], pools: Mapping[PoolKey, PoolState]
) -> dict[str, TagCompliance]:
    """The standing of each tag the device consumes (count > 0) in its VA ``va_id``; a tag
    with no pool there has no license there."""
    return {
        tag: pools[va_id, tag].compliance if (va_id, tag) in pools else pool_compliance(0, count)
        for tag, count in counts.items()
        if count > 0
    }


def device_status(tags: Mapping[str, TagCompliance]) -> ComplianceStatus:
    """A device is out of compliance when a tag it consumes is short in its VA (SPEC §3):
    ``tags`` are its :func:`device_tags`."""
    if any(c.shortfall for c in tags.values()):
        return ComplianceStatus.OUT_OF_COMPLIANCE
    return ComplianceStatus.IN_COMPLIANCE


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolState:
    va_id: int
    tag: str
    purchased: int
    in_use: int
    recorded: ComplianceStatus
    """The status last recorded (and audited) for the pool."""
    compliance: TagCompliance = field(init=False, repr=False, compare=False)
    """The pool's standing, made once: every notice of the VA's devices carries it."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "compliance", pool_compliance(self.purchased, self.in_use))

    @property
    def status(self) -> ComplianceStatus:
        return self.compliance.status


def evaluate_pools(
    lots: Mapping[PoolKey, Iterable[Dated]],
    usage: Mapping[PoolKey, tuple[int, ComplianceStatus]],
    now: int,
) -> dict[PoolKey, PoolState]:
    """Compliance (SPEC §3) of every pool that has licenses or usage, as a function of the
    state alone: each pool's license lots, its (in use, last recorded status), and ``now``."""
    pools = {}
    for key in sorted(set(lots) | set(usage)):
        in_use, recorded = usage.get(key, (0, ComplianceStatus.IN_COMPLIANCE))
        pools[key] = PoolState(
            va_id=key[0],
            tag=key[1],
            purchased=active_quantity(lots.get(key, ()), now),
            in_use=in_use,
            recorded=recorded,
        )
    return pools


async def load_pools(
    tx: Transaction, va_ids: Collection[int], now: int
) -> dict[PoolKey, PoolState]:
    """Every pool of these VAs that has licenses or usage, evaluated at ``now``."""
    ids = sorted(set(va_ids))
    lots: defaultdict[PoolKey, list[Lot]] = defaultdict(list)
    for row in await tx.fetch_in(
        "SELECT va_id, tag, quantity, starts_at, ends_at FROM licenses"
        " WHERE quantity > 0 AND va_id IN ({in})",
        ids,
    ):
        lots[int(row["va_id"]), str(row["tag"])].append(
            Lot(quantity=int(row["quantity"]), starts_at=row["starts_at"], ends_at=row["ends_at"])
        )
    usage = {
        (int(row["va_id"]), str(row["tag"])): (
            int(row["in_use"]),
            ComplianceStatus(int(row["status"])),
        )
        for row in await tx.fetch_in(
            "SELECT va_id, tag, in_use, status FROM pool_usage WHERE va_id IN ({in})", ids
        )
    }
    return evaluate_pools(lots, usage, now)


async def load_pool_states(
    tx: Transaction, keys: Collection[PoolKey], now: int
) -> dict[PoolKey, PoolState]:
    """The named pools at ``now`` (one that has neither licenses nor usage is all zeros)."""
    pools = await load_pools(tx, {va_id for va_id, _ in keys}, now)
    return {key: pools.get(key) or _empty_pool(key) for key in keys}


async def load_pools_around(
    tx: Transaction, keys: Collection[PoolKey], now: int
) -> dict[PoolKey, PoolState]:
    """The named pools and every other pool of their VAs, at ``now``.

    What a batch records after its reports moved the named ones: a term license may have
    started or ended in another pool of the VA since it was last evaluated, and its flip is
    then recorded, audited and pushed with the batch's rather than when the expiry watcher
    comes.
    """
    pools = await load_pools(tx, {va_id for va_id, _ in keys}, now)
    return {**{key: _empty_pool(key) for key in keys if key not in pools}, **pools}


def _empty_pool(key: PoolKey) -> PoolState:
    """A pool with neither licenses nor usage."""
    return PoolState(
        va_id=key[0], tag=key[1], purchased=0, in_use=0, recorded=ComplianceStatus.IN_COMPLIANCE
    )


async def apply_pool_deltas(tx: Transaction, deltas: Mapping[PoolKey, int]) -> None:
    """Add each delta to its pool's in-use counter (in the caller's transaction)."""
    rows = [(va_id, tag, max(delta, 0), delta) for (va_id, tag), delta in deltas.items() if delta]
    if rows:
        # The inserted value is never negative, so the CHECK holds on engines that check the
        # candidate row before resolving the conflict (SQLite does; PostgreSQL does not).
        await tx.execute_many(
            "INSERT INTO pool_usage (va_id, tag, in_use) VALUES (?, ?, ?)"
            " ON CONFLICT (va_id, tag) DO UPDATE SET in_use = pool_usage.in_use + ?",
            rows,
        )


async def record_statuses(
    tx: Transaction, states: Iterable[PoolState], *, actor: str, now: int
) -> list[PoolFlip]:
    """Record (and audit) every pool whose status is not the one last recorded; the flips."""
    flips = [
        PoolFlip(
            va_id=s.va_id,
            tag=s.tag,
            before=s.recorded,
            after=s.status,
            purchased=s.purchased,
            in_use=s.in_use,
        )
        for s in states
        if s.status is not s.recorded
    ]
    if not flips:
        return []
    await tx.execute_many(
        "INSERT INTO pool_usage (va_id, tag, in_use, status) VALUES (?, ?, 0, ?)"
        " ON CONFLICT (va_id, tag) DO UPDATE SET status = ?",
        [(f.va_id, f.tag, int(f.after), int(f.after)) for f in flips],
    )
    vas = await virtual_accounts_by_id(tx, sorted({f.va_id for f in flips}))
    await audit.append(
        tx,
        [
            AuditEntry(
                actor=actor,
                action="compliance.change",
                subject=f"pool {vas[f.va_id].account_name}/{vas[f.va_id].name} {f.tag}",
                account_id=vas[f.va_id].account_id,
                before={"status": f.before.name},
                after={
                    "status": f.after.name,
                    "purchased": f.purchased,
                    "in_use": f.in_use,
                    "shortfall": pool_compliance(f.purchased, f.in_use).shortfall,
                },
            )
            for f in flips
        ],
        now=now,
    )
    return flips


async def reevaluate(
    tx: Transaction, va_ids: Collection[int], *, actor: str, now: int
) -> list[PoolFlip]:
    """Evaluate every pool of these VAs at ``now`` and record the ones that flipped.

    What the service calls when a term license starts or ends, and what every administrative
    change that moves licenses or devices calls before it commits.
    """
    pools = await load_pools(tx, va_ids, now)
    return await record_statuses(tx, pools.values(), actor=actor, now=now)


async def next_license_change_at(
    tx: Transaction, now: int, va_ids: Collection[int] | None = None
) -> int | None:
    """When the service should next re-evaluate (these VAs' or all) pools: the first time
    after ``now`` that a license held in a VA starts or ends."""
    sql = "SELECT quantity, starts_at, ends_at FROM licenses WHERE quantity > 0"
    sql += " AND va_id IS NOT NULL AND ends_at > ?"
    if va_ids is None:
        rows = await tx.fetch_all(sql, (now,))
    else:
        rows = await tx.fetch_in(sql + " AND va_id IN ({in})", sorted(set(va_ids)), (now,))
    return next_license_change(
        (
            Lot(quantity=int(r["quantity"]), starts_at=r["starts_at"], ends_at=r["ends_at"])
            for r in rows
        ),
        now,
    )


async def vas_with_license_changes(tx: Transaction, *, after: int, until: int) -> set[int]:
    """The VAs where a license started or ended in ``(after, until]``: the ones to re-evaluate
    when the clock passes those moments (or when the service starts after a while down)."""
    rows = await tx.fetch_all(
        "SELECT DISTINCT va_id FROM licenses WHERE quantity > 0 AND va_id IS NOT NULL"
        " AND ((starts_at > ? AND starts_at <= ?) OR (ends_at > ? AND ends_at <= ?))",
        (after, until, after, until),
    )
    return {int(row["va_id"]) for row in rows}


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolUsage:
    """A line of the usage view."""

    va: str
    tag: str
    purchased: int
    in_use: int

    @property
    def compliance(self) -> TagCompliance:
        return pool_compliance(self.purchased, self.in_use)

    @property
    def balance(self) -> int:
        return self.purchased - self.in_use


async def usage(
    tx: Transaction, actor: Actor, *, account_name: str, va_name: str | None, now: int
) -> list[PoolUsage]:
    """Per VA and tag: purchased now, in use, balance and status, for the VAs the actor sees."""
    account = await find_account(tx, account_name, seen_by=actor)
    refuse_consumption_in_holding_account(account, "usage")
    if va_name is not None:
        va = await find_virtual_account(tx, account, va_name)
        authorize(actor, Permission.USAGE_READ, va.scope)
        vas = {va.id: va}
    else:
        every = {va.id: va for va in await virtual_accounts_of(tx, account)}
        visible = authorized_vas(
            actor, Permission.USAGE_READ, account.scope, [(v.id, v.name) for v in every.values()]
        )
        vas = {va_id: va for va_id, va in every.items() if va_id in visible}
    pools = await load_pools(tx, vas.keys(), now)
    return sorted(
        (
            PoolUsage(va=vas[p.va_id].name, tag=p.tag, purchased=p.purchased, in_use=p.in_use)
            for p in pools.values()
            if p.purchased or p.in_use
        ),
        key=lambda u: (u.va, u.tag),
    )
