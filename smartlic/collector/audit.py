"""The audit log: append-only and hash-chained, so an edited or deleted entry is detected.

Each entry's hash is SHA-256 over the previous entry's hash and the entry's canonical content
(its sequence number, time, actor, action, accounts, subject and before/after states as
canonical JSON). ``audit_head`` holds the newest sequence number and hash, written in the same
transaction as every append, so deleting the newest entries is caught as well as deleting or
editing any other. :func:`verify` recomputes everything and says which entries are wrong.

What this cannot catch: someone with write access to the database rewriting the *whole* chain
and the head. Recording :attr:`Verdict.head_hash` somewhere else from time to time (a ticket, a
log shipped off the machine) closes that gap: a rewritten chain no longer ends in it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from smartlic.collector.accounts import find_account
from smartlic.collector.rbac import SITE, Actor, Permission, authorize

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from smartlic.collector.store import Row, Transaction

GENESIS_HASH: Final = "0" * 64


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """What happened: who did which action to what, and the state before and after."""

    actor: str
    action: str
    subject: str
    account_id: int | None = None
    counterpart_id: int | None = None
    """A second account the action touched (the holding account an order came from)."""
    before: Mapping[str, object] | None = None
    after: Mapping[str, object] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    seq: int
    at: int
    actor: str
    action: str
    account_id: int | None
    counterpart_id: int | None
    subject: str
    before: str | None
    after: str | None
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: Row) -> AuditRecord:
        return cls(
            seq=_optional_int(row["seq"]) or 0,
            at=_optional_int(row["at"]) or 0,
            actor=str(row["actor"]),
            action=str(row["action"]),
            account_id=_optional_int(row["account_id"]),
            counterpart_id=_optional_int(row["counterpart_id"]),
            subject=str(row["subject"]),
            before=_optional_str(row["before_state"]),
            after=_optional_str(row["after_state"]),
            prev_hash=str(row["prev_hash"]),
            hash=str(row["hash"]),
        )


def _optional_int(value: object) -> int | None:
    # Lenient on purpose: an edited row must still display; verify() is what judges it.
    return value if isinstance(value, int) else None


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def canonical_json(value: Mapping[str, object] | None) -> str | None:
    """One spelling per value (sorted keys, no spaces), so its hash is reproducible."""
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


CONTENT_COLUMNS: Final = (
    "seq",
    "at",
    "actor",
    "action",
    "account_id",
    "counterpart_id",
    "subject",
    "before_state",
    "after_state",
)
"""What an entry's hash covers, besides the previous hash."""


def entry_hash(prev_hash: object, content: Sequence[object]) -> str:
    # repr() for anything JSON cannot spell: a tampered row may hold a blob where text was.
    encoded = json.dumps(list(content), separators=(",", ":"), ensure_ascii=False, default=repr)
    return hashlib.sha256(f"{prev_hash}\n{encoded}".encode()).hexdigest()


def row_hash(row: Mapping[str, object]) -> str:
    """What a stored row's hash must be if nothing in it was edited."""
    return entry_hash(row["prev_hash"], [row[column] for column in CONTENT_COLUMNS])


async def append(tx: Transaction, entries: Iterable[AuditEntry], *, now: int) -> list[int]:
    """Add ``entries`` to the end of the chain; their sequence numbers."""
    entries = list(entries)
    if not entries:
        return []
    head = await tx.fetch_one("SELECT seq, hash FROM audit_head WHERE id = 1")
    if head is None:
        message = "audit_head row is missing: the audit log was tampered with"
        raise RuntimeError(message)
    seq, prev = int(head["seq"]), str(head["hash"])
    rows: list[tuple[object, ...]] = []
    for entry in entries:
        seq += 1
        before, after = canonical_json(entry.before), canonical_json(entry.after)
        content = [
            seq,
            now,
            entry.actor,
            entry.action,
            entry.account_id,
            entry.counterpart_id,
            entry.subject,
            before,
            after,
        ]
        digest = entry_hash(prev, content)
        rows.append((*content, prev, digest))
        prev = digest
    await tx.execute_many(
        "INSERT INTO audit_log (seq, at, actor, action, account_id, counterpart_id, subject,"
        " before_state, after_state, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    await tx.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (seq, prev))
    return [int(str(row[0])) for row in rows]


async def entries(
    tx: Transaction, *, account_id: int | None = None, since: int | None = None
) -> list[AuditRecord]:
    """The entries about one account (or all of them), oldest first, from ``since`` on."""
    conditions, params = [], []
    if account_id is not None:
        conditions.append("(account_id = ? OR counterpart_id = ?)")
        params += [account_id, account_id]
    if since is not None:
        conditions.append("at >= ?")
        params.append(since)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = await tx.fetch_all(f"SELECT * FROM audit_log {where} ORDER BY seq", params)  # noqa: S608 -- only fixed condition strings are interpolated
    return [AuditRecord.from_row(row) for row in rows]


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    entries: int
    head_seq: int
    head_hash: str
    problems: tuple[str, ...]

    @property
    def intact(self) -> bool:
        return not self.problems


def chain_problems(
    rows: Iterable[Mapping[str, object]], head_seq: int, head_hash: str
) -> list[str]:
    """Every way the stored ``rows`` (ordered by seq) and the head fail to form the chain.

    Rows are judged as stored, before any parsing, so an edit that changes a value's type is
    caught like any other.
    """
    problems, last_seq, last_hash = _row_problems(rows)
    if head_seq > last_seq:
        problems.append(_missing(last_seq + 1, head_seq))
    elif head_seq != last_seq or head_hash != last_hash:
        problems.append(f"the chain's head (entry {head_seq}) does not match the last entry")
    return problems


def _row_problems(rows: Iterable[Mapping[str, object]]) -> tuple[list[str], int, str]:
    """What is wrong with the rows alone, and the last entry's sequence number and hash."""
    problems: list[str] = []
    expected_seq, prev_hash = 1, GENESIS_HASH
    for row in rows:
        seq = row["seq"]
        if not isinstance(seq, int):
            problems.append(f"an entry's sequence number was edited (it reads {seq!r})")
            continue
        if seq != expected_seq:
            problems.append(_missing(expected_seq, seq - 1))
        elif row["prev_hash"] != prev_hash:
            problems.append(f"entry {seq} does not link to entry {seq - 1} (one was edited)")
        if row_hash(row) != row["hash"]:
            problems.append(f"entry {seq} was edited (its hash does not match its content)")
        expected_seq, prev_hash = seq + 1, str(row["hash"])
    return problems, expected_seq - 1, prev_hash


def _missing(first: int, last: int) -> str:
    if first == last:
        return f"entry {first} is missing (deleted)"
    return f"entries {first}..{last} are missing (deleted)"


async def verify(tx: Transaction) -> Verdict:
    """Recompute the whole chain; every problem found, naming the entries."""
    head = await tx.fetch_one("SELECT seq, hash FROM audit_head WHERE id = 1")
    if head is None:
        return Verdict(
            entries=0, head_seq=-1, head_hash="", problems=("the chain's head record is missing",)
        )
    rows = await tx.fetch_all("SELECT * FROM audit_log ORDER BY seq")
    head_seq, head_hash = head["seq"], head["hash"]
    if type(head_seq) is not int or type(head_hash) is not str:
        # Judged as stored, like the rows: an edit that changes a value's type is tampering.
        field, value = (
            ("hash", head_hash) if type(head_seq) is int else ("sequence number", head_seq)
        )
        edited = f"the chain's head was edited (its {field} reads {value!r})"
        problems, _, _ = _row_problems(rows)
        return Verdict(entries=len(rows), head_seq=-1, head_hash="", problems=(edited, *problems))
    return Verdict(
        entries=len(rows),
        head_seq=head_seq,
        head_hash=head_hash,
        problems=tuple(chain_problems(rows, head_seq, head_hash)),
    )


async def trail(
    tx: Transaction, actor: Actor, *, account_name: str | None, since: int | None
) -> list[AuditRecord]:
    """What ``audit ACCOUNT`` shows: the account's entries (every entry, for the site)."""
    if account_name is None:
        authorize(actor, Permission.AUDIT_READ, SITE)
        return await entries(tx, since=since)
    account = await find_account(tx, account_name, seen_by=actor)
    authorize(actor, Permission.AUDIT_READ, account.scope)
    return await entries(tx, account_id=account.id, since=since)


async def verify_chain(tx: Transaction, actor: Actor) -> Verdict:
    """What ``audit verify`` does: the whole chain checked, by the site operator."""
    authorize(actor, Permission.AUDIT_VERIFY, SITE)
    return await verify(tx)
