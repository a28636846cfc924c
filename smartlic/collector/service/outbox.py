"""Pushed notices, kept in the store until the broker has them.

A notice answering a report needs no keeping: if the collector dies before sending it, the
broker redelivers the report (it was never acknowledged) and the stored answer goes out again.
A *pushed* notice has no report behind it, so it is written to ``notice_outbox`` in the same
transaction as the decision that caused it, sent after the commit, and deleted once the broker
acknowledged it. At start-up the service sends whatever is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from smartlic.collector.store import Transaction


@dataclass(frozen=True, slots=True, kw_only=True)
class Outgoing:
    device_id: str
    payload: bytes
    outbox_id: int | None = None
    """Set for pushes kept in the outbox: delete the row once the broker has the message."""


async def queue_pushes(
    tx: Transaction, pushes: Sequence[tuple[str, bytes]], *, now: int
) -> list[Outgoing]:
    """Keep ``(device id, signed notice)`` pushes until sent; the messages to send."""
    queued: list[Outgoing] = []
    for device_id, payload in pushes:
        row = await tx.fetch_one(
            "INSERT INTO notice_outbox (device_id, payload, created_at) VALUES (?, ?, ?)"
            " RETURNING id",
            (device_id, payload, now),
        )
        if row is None:
            message = "INSERT ... RETURNING gave no row"
            raise RuntimeError(message)
        queued.append(Outgoing(device_id=device_id, payload=payload, outbox_id=int(row["id"])))
    return queued


async def unsent_pushes(tx: Transaction, *, after: int = 0, limit: int = 10_000) -> list[Outgoing]:
    """What was committed to push and may not have been sent, oldest first, from the row
    after ``after`` on (a page of ``limit``)."""
    rows = await tx.fetch_all(
        "SELECT id, device_id, payload FROM notice_outbox WHERE id > ? ORDER BY id LIMIT ?",
        (after, limit),
    )
    return [
        Outgoing(device_id=str(r["device_id"]), payload=bytes(r["payload"]), outbox_id=int(r["id"]))
        for r in rows
    ]


async def forget_pushes(tx: Transaction, outbox_ids: Sequence[int]) -> None:
    await tx.execute_many("DELETE FROM notice_outbox WHERE id = ?", [(i,) for i in outbox_ids])


async def service_mark(tx: Transaction, name: str) -> int | None:
    """A position the service keeps across restarts (last change handled, last expiry check)."""
    row = await tx.fetch_one("SELECT value FROM service_state WHERE name = ?", (name,))
    return None if row is None else int(row["value"])


async def set_service_mark(tx: Transaction, name: str, value: int) -> None:
    await tx.execute(
        "INSERT INTO service_state (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (name, value),
    )
