"""What the service keeps of the messages it handled: accepted reports and dead letters.

An accepted report is kept with the digest of its payload and the exact bytes answered, so a
duplicate (a broker redelivery, a device re-sending what it never saw answered) gets the very
same answer and changes nothing. A dead letter keeps a message the service refused, raw, with
the reason: nothing that arrives is silently lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from smartlic.collector.store import Transaction

_CHUNK: Final = 400


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptedReport:
    device_pk: int
    seq: int
    digest: bytes
    answer: bytes
    accepted_at: int


async def save_accepted(tx: Transaction, reports: Sequence[AcceptedReport]) -> None:
    await tx.execute_many(
        "INSERT INTO accepted_reports (device_id, seq, digest, answer, accepted_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [(r.device_pk, r.seq, r.digest, r.answer, r.accepted_at) for r in reports],
    )


async def find_accepted(
    tx: Transaction, keys: Collection[tuple[int, int]]
) -> dict[tuple[int, int], AcceptedReport]:
    """The accepted reports among ``(device pk, seq)`` keys."""
    found: dict[tuple[int, int], AcceptedReport] = {}
    wanted = sorted(set(keys))
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        condition = " OR ".join(["(device_id = ? AND seq = ?)"] * len(chunk))
        rows = await tx.fetch_all(
            f"SELECT * FROM accepted_reports WHERE {condition}",  # noqa: S608 -- only placeholders are interpolated
            [value for key in chunk for value in key],
        )
        for row in rows:
            report = AcceptedReport(
                device_pk=int(row["device_id"]),
                seq=int(row["seq"]),
                digest=bytes(row["digest"]),
                answer=bytes(row["answer"]),
                accepted_at=int(row["accepted_at"]),
            )
            found[report.device_pk, report.seq] = report
    return found


async def prune_accepted(tx: Transaction, *, before: int) -> int:
    """Forget answers to reports accepted before ``before``; how many were dropped.

    A duplicate older than that is then refused as a replay, which is what it is by then.
    """
    return await tx.execute("DELETE FROM accepted_reports WHERE accepted_at < ?", (before,))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    received_at: int
    topic: str
    payload: bytes
    reason: str
    code: int | None = None
    device_id: str | None = None


async def add_dead_letters(tx: Transaction, letters: Sequence[DeadLetter]) -> None:
    await tx.execute_many(
        "INSERT INTO dead_letters (received_at, topic, payload, reason, code, device_id)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(d.received_at, d.topic, d.payload, d.reason, d.code, d.device_id) for d in letters],
    )


async def recent_dead_letters(tx: Transaction, *, limit: int = 100) -> list[DeadLetter]:
    rows = await tx.fetch_all("SELECT * FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,))
    return [
        DeadLetter(
            received_at=int(row["received_at"]),
            topic=str(row["topic"]),
            payload=bytes(row["payload"]),
            reason=str(row["reason"]),
            code=None if row["code"] is None else int(row["code"]),
            device_id=None if row["device_id"] is None else str(row["device_id"]),
        )
        for row in rows
    ]
