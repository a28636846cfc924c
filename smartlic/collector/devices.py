"""Devices: registration, latest counts and deregistration — and the pool counters.

Theory of operation: a registered device has a latest count per license tag
(``device_usage``), and each pool's in-use counter (``pool_usage``) is the sum of those counts
over the VA's registered devices. Every function here that changes a device's counts, its VA or
its state applies the matching deltas to the pool counters in the same transaction, so the sum
is never recomputed and never wrong. What administrators do to devices (list, move,
deregister) is in :mod:`smartlic.collector.device_admin`.

The service's batch path is :func:`find_devices` → :func:`apply_reports` → (compliance) →
:func:`reserve_notice_seqs`: a handful of round trips per batch, whatever its size.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from smartlic.collector import audit
from smartlic.collector.accounts import Policy
from smartlic.collector.audit import AuditEntry
from smartlic.collector.compliance import PoolKey, apply_pool_deltas, reevaluate
from smartlic.collector.errors import Refused
from smartlic.collector.rbac import Scope
from smartlic.collector.tokens import redeem_token
from smartlic.protocol import (
    Algorithm,
    ComplianceStatus,
    ErrorCode,
    RegistrationToken,
    Udi,
    VerifyingKey,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from smartlic.collector.changes import PoolFlip
    from smartlic.collector.store import Row, Transaction


class DeviceState(StrEnum):
    REGISTERED = "registered"
    DEREGISTERED = "deregistered"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRecord:
    """What the collector knows about a device, with its VA's names and policy."""

    pk: int
    """The store's key for the device (``device_id`` is the protocol's)."""
    device_id: str
    udi: Udi
    algorithm: Algorithm
    public_key: bytes
    va_id: int
    va_name: str
    account_id: int
    account_name: str
    policy: Policy
    state: DeviceState
    registered_at: int
    deregistered_at: int | None
    last_seq: int
    last_report_at: int | None
    notice_seq: int
    counts: Mapping[str, int]

    @property
    def registered(self) -> bool:
        return self.state is DeviceState.REGISTERED

    @property
    def va_scope(self) -> Scope:
        return Scope(f"{self.account_name}/{self.va_name}", self.account_id, self.va_id)

    def verifying_key(self) -> VerifyingKey:
        return VerifyingKey.from_raw(self.algorithm.key_type, self.public_key)

    @classmethod
    def from_row(cls, row: Row, counts: Mapping[str, int]) -> DeviceRecord:
        # Every batch the service decides loads its devices' rows: the conversions that
        # build objects (UDI, algorithm, state, policy) are looked up rather than rebuilt.
        deregistered_at, last_report_at = row["deregistered_at"], row["last_report_at"]
        return cls(
            pk=int(row["id"]),
            device_id=str(row["device_id"]),
            udi=_udi(str(row["udi"])),
            algorithm=_ALGORITHMS[int(row["algorithm"])],
            public_key=bytes(row["public_key"]),
            va_id=int(row["va_id"]),
            va_name=str(row["va_name"]),
            account_id=int(row["account_id"]),
            account_name=str(row["account_name"]),
            policy=_policy(int(row["report_interval"]), int(row["auth_validity"])),
            state=_STATES[str(row["state"])],
            registered_at=int(row["registered_at"]),
            deregistered_at=None if deregistered_at is None else int(deregistered_at),
            last_seq=int(row["last_seq"]),
            last_report_at=None if last_report_at is None else int(last_report_at),
            notice_seq=int(row["notice_seq"]),
            counts=counts,
        )

    def after_reports(self, counts: Mapping[str, int], *, last_seq: int, at: int) -> DeviceRecord:
        """This record once reports up to ``last_seq`` (received ``at``) set its counts."""
        return DeviceRecord(
            pk=self.pk,
            device_id=self.device_id,
            udi=self.udi,
            algorithm=self.algorithm,
            public_key=self.public_key,
            va_id=self.va_id,
            va_name=self.va_name,
            account_id=self.account_id,
            account_name=self.account_name,
            policy=self.policy,
            state=self.state,
            registered_at=self.registered_at,
            deregistered_at=self.deregistered_at,
            last_seq=last_seq,
            last_report_at=at,
            notice_seq=self.notice_seq,
            counts=counts,
        )


_ALGORITHMS: Final = {int(algorithm): algorithm for algorithm in Algorithm}
_STATES: Final = {str(state): state for state in DeviceState}


@functools.lru_cache(maxsize=1 << 16)
def _udi(text: str) -> Udi:
    return Udi.parse(text)


@functools.lru_cache(maxsize=256)
def _policy(report_interval: int, authorization_validity: int) -> Policy:
    return Policy(report_interval=report_interval, authorization_validity=authorization_validity)


_SELECT: Final = (
    "SELECT d.*, va.name AS va_name, va.account_id, a.name AS account_name,"
    " va.report_interval, va.auth_validity FROM devices d"
    " JOIN virtual_accounts va ON va.id = d.va_id JOIN accounts a ON a.id = va.account_id"
)


async def _records(tx: Transaction, rows: Sequence[Row]) -> list[DeviceRecord]:
    counts: defaultdict[int, dict[str, int]] = defaultdict(dict)
    for usage in await tx.fetch_in(
        "SELECT device_id, tag, count FROM device_usage WHERE device_id IN ({in})",
        [int(row["id"]) for row in rows],
    ):
        counts[int(usage["device_id"])][str(usage["tag"])] = int(usage["count"])
    return [DeviceRecord.from_row(row, counts.get(int(row["id"]), {})) for row in rows]


async def find_devices(tx: Transaction, device_ids: Collection[str]) -> dict[str, DeviceRecord]:
    """The known devices among ``device_ids`` (two round trips per 500 ids)."""
    rows = await tx.fetch_in(f"{_SELECT} WHERE d.device_id IN ({{in}})", sorted(set(device_ids)))
    return {record.device_id: record for record in await _records(tx, rows)}


async def devices_in(tx: Transaction, va_ids: Collection[int]) -> list[DeviceRecord]:
    """Every device of the VAs ``va_ids``, registered or not, by device id."""
    rows = await tx.fetch_in(f"{_SELECT} WHERE d.va_id IN ({{in}})", sorted(va_ids))
    return sorted(await _records(tx, rows), key=lambda r: r.device_id)


async def consumers(tx: Transaction, va_id: int, tags: Collection[str]) -> list[DeviceRecord]:
    """The VA's registered devices that consume any of ``tags``: who a flip concerns."""
    rows = await tx.fetch_in(
        f"{_SELECT} WHERE d.va_id = ? AND d.state = 'registered' AND d.id IN"  # noqa: S608 -- fixed query text
        " (SELECT device_id FROM device_usage WHERE tag IN ({in}))",
        sorted(set(tags)),
        (va_id,),
    )
    unique = {int(row["id"]): row for row in rows}
    return await _records(tx, list(unique.values()))


@dataclass(frozen=True, slots=True, kw_only=True)
class NewDevice:
    udi: Udi
    algorithm: Algorithm
    public_key: bytes
    va_id: int
    token_pk: int | None = None


async def register_devices(tx: Transaction, devices: Sequence[NewDevice], *, now: int) -> None:
    """Register new devices, or re-register deregistered ones, in bulk (a trusted path: the
    caller has checked tokens and keys). A re-registered device starts with no counts and a new
    sequence window; its ``notice_seq`` keeps growing from where it was."""
    rows = [
        (d.udi.device_id, str(d.udi), int(d.algorithm), d.public_key, d.va_id, now, d.token_pk)
        for d in devices
    ]
    await tx.execute_many(
        "INSERT INTO devices (device_id, udi, algorithm, public_key, va_id, state,"
        " registered_at, token_id) VALUES (?, ?, ?, ?, ?, 'registered', ?, ?)"
        " ON CONFLICT (device_id) DO UPDATE SET udi = excluded.udi,"
        " algorithm = excluded.algorithm, public_key = excluded.public_key,"
        " va_id = excluded.va_id, state = 'registered', registered_at = excluded.registered_at,"
        " deregistered_at = NULL, token_id = excluded.token_id, last_seq = 0,"
        " last_report_at = NULL WHERE devices.state = 'deregistered'",
        rows,
    )
    await tx.execute_many(
        "DELETE FROM accepted_reports WHERE device_id ="
        " (SELECT id FROM devices WHERE device_id = ? AND registered_at = ?)",
        [(d.udi.device_id, now) for d in devices],
    )


async def register_device(
    tx: Transaction,
    *,
    udi: Udi,
    algorithm: Algorithm,
    public_key: bytes,
    token: RegistrationToken,
    collector_fingerprint: bytes,
    now: int,
) -> tuple[DeviceRecord, bool]:
    """Register a device with its token: the record, and whether it is a new registration.

    Checks come before any write: a registered device with another key is refused (it must be
    deregistered first); the same key again is a retry and gets the existing record without
    spending a token use.
    """
    existing = (await find_devices(tx, [udi.device_id])).get(udi.device_id)
    if existing is not None and existing.registered:
        if existing.public_key == public_key:
            return existing, False
        raise Refused(
            f"{udi} is already registered with another key; deregister it first",
            code=ErrorCode.ALREADY_REGISTERED,
        )
    stored = await redeem_token(tx, token, collector_fingerprint=collector_fingerprint, now=now)
    await register_devices(
        tx,
        [
            NewDevice(
                udi=udi,
                algorithm=algorithm,
                public_key=public_key,
                va_id=stored.va_id,
                token_pk=stored.id,
            )
        ],
        now=now,
    )
    record = (await find_devices(tx, [udi.device_id]))[udi.device_id]
    await audit.append(
        tx,
        [
            AuditEntry(
                actor=f"device {udi.device_id}",
                action="device.register",
                subject=f"device {udi}",
                account_id=record.account_id,
                after={"va": record.va_name, "token": stored.token_id, "algorithm": algorithm.name},
            )
        ],
        now=now,
    )
    return record, True


def latest_counts(previous: Mapping[str, int], reported: Mapping[str, int]) -> dict[str, int]:
    """SPEC §3 counts each device's most recent count per tag: a report sets the tags it
    names (0 included) and leaves the others at their last count. Zeros are dropped."""
    merged = {**previous, **reported}
    return {tag: count for tag, count in merged.items() if count > 0}


@dataclass(frozen=True, slots=True, kw_only=True)
class CountsUpdate:
    """An accepted report's effect on its device: sequence number, time and counts."""

    device: DeviceRecord
    seq: int
    received_at: int
    counts: Mapping[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportsApplied:
    deltas: Mapping[PoolKey, int]
    """How much each pool's in-use counter moved (already applied)."""
    counts: Mapping[str, Mapping[str, int]]
    """Each reporting device's counts after the batch."""


async def apply_reports(tx: Transaction, updates: Sequence[CountsUpdate]) -> ReportsApplied:
    """Store a batch of accepted reports' counts and sequence numbers, and move the pool
    counters by the difference, in a fixed handful of statements whatever the batch size.

    Updates are applied in order; a device may appear more than once.
    """
    running: dict[int, dict[str, int]] = {}
    devices: dict[int, DeviceRecord] = {}
    deltas: defaultdict[PoolKey, int] = defaultdict(int)
    last: dict[int, tuple[int, int]] = {}
    for update in updates:
        device = update.device
        if not device.registered:
            message = f"{device.device_id} is not registered; its reports cannot count"
            raise RuntimeError(message)
        before = running.get(device.pk, dict(device.counts))
        after = latest_counts(before, update.counts)
        for tag in before.keys() | after.keys():
            deltas[device.va_id, tag] += after.get(tag, 0) - before.get(tag, 0)
        running[device.pk], devices[device.pk] = after, device
        last[device.pk] = (update.seq, update.received_at)
    upserts, deletes = [], []
    for pk, counts in running.items():
        original = devices[pk].counts
        upserts += [(pk, tag, n) for tag, n in counts.items() if original.get(tag) != n]
        deletes += [(pk, tag) for tag in original if tag not in counts]
    if upserts:
        await tx.execute_many(
            "INSERT INTO device_usage (device_id, tag, count) VALUES (?, ?, ?)"
            " ON CONFLICT (device_id, tag) DO UPDATE SET count = excluded.count",
            upserts,
        )
    if deletes:
        await tx.execute_many("DELETE FROM device_usage WHERE device_id = ? AND tag = ?", deletes)
    await tx.execute_many(
        "UPDATE devices SET last_seq = ?, last_report_at = ? WHERE id = ?",
        [(seq, at, pk) for pk, (seq, at) in last.items()],
    )
    await apply_pool_deltas(tx, deltas)
    return ReportsApplied(
        deltas={key: d for key, d in deltas.items() if d},
        counts={devices[pk].device_id: counts for pk, counts in running.items()},
    )


async def reserve_notice_seqs(
    tx: Transaction,
    wanted: Mapping[int, int],
    told: Mapping[int, ComplianceStatus] | None = None,
) -> dict[int, int]:
    """Take ``n`` notice sequence numbers for each device (by ``pk``); the last one taken.

    A device's notices get ``last - n + 1 .. last``; numbers are never given out twice, even
    across deregistration and re-registration. ``told`` is, for the devices that get a
    compliance notice among them, the status of the last one (see :func:`told_statuses`).
    """
    if not wanted:
        return {}
    told = told or {}
    await tx.execute_many(
        "UPDATE devices SET notice_seq = notice_seq + ?,"
        " told_status = COALESCE(?, told_status) WHERE id = ?",
        [(n, None if pk not in told else int(told[pk]), pk) for pk, n in wanted.items()],
    )
    rows = await tx.fetch_in("SELECT id, notice_seq FROM devices WHERE id IN ({in})", list(wanted))
    return {int(row["id"]): int(row["notice_seq"]) for row in rows}


async def told_statuses(tx: Transaction, pks: Collection[int]) -> dict[int, ComplianceStatus]:
    """The status of the last compliance notice numbered for each of these devices, for
    those that were ever told one."""
    if not pks:
        return {}
    rows = await tx.fetch_in(
        "SELECT id, told_status FROM devices WHERE told_status IS NOT NULL AND id IN ({in})",
        sorted(set(pks)),
    )
    return {int(row["id"]): ComplianceStatus(int(row["told_status"])) for row in rows}


async def _withdraw(tx: Transaction, device: DeviceRecord, *, now: int) -> None:
    """Deregister: the device's counts leave its pool."""
    await tx.execute("DELETE FROM device_usage WHERE device_id = ?", (device.pk,))
    await tx.execute(
        "UPDATE devices SET state = 'deregistered', deregistered_at = ? WHERE id = ?",
        (now, device.pk),
    )
    await apply_pool_deltas(tx, {(device.va_id, t): -n for t, n in device.counts.items()})


async def deregister(
    tx: Transaction, device: DeviceRecord, *, actor: str, now: int
) -> list[PoolFlip]:
    """Deregister ``device`` (at its own request, or the service's); the pools that flipped.

    Not written to the change feed: whoever calls this answers the device itself.
    """
    if not device.registered:
        raise Refused(f"{device.udi} is not registered", code=ErrorCode.NOT_REGISTERED)
    await _withdraw(tx, device, now=now)
    flips = await reevaluate(tx, [device.va_id], actor=actor, now=now)
    await audit.append(
        tx,
        [
            AuditEntry(
                actor=actor,
                action="device.deregister",
                subject=f"device {device.udi}",
                account_id=device.account_id,
                before={"state": str(device.state), "va": device.va_name},
                after={"state": str(DeviceState.DEREGISTERED)},
            )
        ],
        now=now,
    )
    return flips
