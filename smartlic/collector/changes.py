"""The change feed: how administrative changes reach the running service.

The admin CLI runs in another process than the service, so it cannot call it. Instead, every
administrative change that can move compliance (a deposit, an order or license transfer, a
device moved or deregistered, a VA's policy changed) appends a row here *in the same
transaction* as the change itself. The service polls ``changes_since(last_seen)`` (an indexed
range read, cheap at a poll every 100-200 ms), pushes fresh notices to the devices concerned,
and remembers the last id it handled. Ids only grow: SQLite serializes writers, so ids commit in
order (a PostgreSQL backend must keep that true, see docs/collector.md).

Each change lists the VAs it touched, the pools whose recorded compliance status flipped in it
(with the status before and after), and the devices it concerns directly (moved, deregistered).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from smartlic.protocol import ComplianceStatus

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from smartlic.collector.store import Row, Transaction


class ChangeKind(StrEnum):
    ORDER_DEPOSIT = "order.deposit"
    ORDER_TRANSFER = "order.transfer"
    LICENSE_TRANSFER = "license.transfer"
    DEVICE_MOVE = "device.move"
    DEVICE_DEREGISTER = "device.deregister"
    VA_POLICY = "va.policy"


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolFlip:
    """A pool whose compliance status changed (and was recorded and audited)."""

    va_id: int
    tag: str
    before: ComplianceStatus
    after: ComplianceStatus
    purchased: int
    in_use: int

    def to_json(self) -> dict[str, object]:
        return {
            "va_id": self.va_id,
            "tag": self.tag,
            "before": self.before.name,
            "after": self.after.name,
            "purchased": self.purchased,
            "in_use": self.in_use,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> PoolFlip:
        return cls(
            va_id=int(str(data["va_id"])),
            tag=str(data["tag"]),
            before=ComplianceStatus[str(data["before"])],
            after=ComplianceStatus[str(data["after"])],
            purchased=int(str(data["purchased"])),
            in_use=int(str(data["in_use"])),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    id: int
    at: int
    kind: ChangeKind
    account_id: int | None
    va_ids: tuple[int, ...]
    flips: tuple[PoolFlip, ...]
    devices: tuple[str, ...]
    """Device ids the change concerns directly: moved or deregistered devices."""

    @classmethod
    def from_row(cls, row: Row) -> Change:
        detail = json.loads(str(row["detail"]))
        return cls(
            id=int(row["id"]),
            at=int(row["at"]),
            kind=ChangeKind(str(row["kind"])),
            account_id=None if row["account_id"] is None else int(row["account_id"]),
            va_ids=tuple(int(v) for v in str(row["va_ids"]).split()),
            flips=tuple(PoolFlip.from_json(f) for f in detail.get("flips", ())),
            devices=tuple(str(d) for d in detail.get("devices", ())),
        )


async def append_change(
    tx: Transaction,
    kind: ChangeKind,
    *,
    now: int,
    account_id: int | None,
    va_ids: Iterable[int],
    flips: Iterable[PoolFlip] = (),
    devices: Iterable[str] = (),
) -> int:
    """Record a change in the caller's transaction; its id."""
    detail = {"flips": [f.to_json() for f in flips], "devices": list(devices)}
    row = await tx.fetch_one(
        "INSERT INTO changes (at, kind, account_id, va_ids, detail) VALUES (?, ?, ?, ?, ?)"
        " RETURNING id",
        (
            now,
            str(kind),
            account_id,
            " ".join(str(v) for v in sorted(set(va_ids))),
            json.dumps(detail, sort_keys=True),
        ),
    )
    if row is None:
        message = "INSERT ... RETURNING gave no row"
        raise RuntimeError(message)
    return int(row["id"])


async def changes_since(tx: Transaction, last_seen: int, *, limit: int = 1000) -> list[Change]:
    """Changes with an id above ``last_seen``, oldest first, at most ``limit`` of them."""
    rows = await tx.fetch_all(
        "SELECT * FROM changes WHERE id > ? ORDER BY id LIMIT ?", (last_seen, limit)
    )
    return [Change.from_row(row) for row in rows]


async def latest_change_id(tx: Transaction) -> int:
    """Where a service starting from the current state begins watching."""
    row = await tx.fetch_one("SELECT MAX(id) AS id FROM changes")
    return 0 if row is None or row["id"] is None else int(row["id"])


async def next_change_id(tx: Transaction, after: int) -> int | None:
    """The id of the first change after ``after``, read without reading the change itself."""
    row = await tx.fetch_one("SELECT MIN(id) AS id FROM changes WHERE id > ?", (after,))
    return None if row is None or row["id"] is None else int(row["id"])
