"""Who gets a pushed notice when pools flip, a device moves or a license term starts or ends.

SPEC §3: a change that moves a pool across the line re-evaluates it and pushes fresh notices to
the devices whose status changed, without waiting for their next report. The three sources of
such changes each end here: the service's own batches (reports, deregistrations), the change
feed written by administrative commands in other processes (:func:`pushes_for_changes`), and
the clock, when a term license starts or ends (:func:`pushes_for_expiry`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from smartlic.collector.changes import ChangeKind, changes_since
from smartlic.collector.compliance import device_status, load_pools, reevaluate
from smartlic.collector.devices import DeviceRecord, consumers, find_devices
from smartlic.collector.service.notices import ErrorRequest, NoticeRequest
from smartlic.protocol import ErrorCode

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from smartlic.collector.changes import Change, PoolFlip
    from smartlic.collector.store import Transaction
    from smartlic.protocol import ComplianceStatus


async def pushes_for_flips(
    tx: Transaction, flips: Iterable[PoolFlip], *, now: int, exclude: Collection[str] = ()
) -> list[NoticeRequest]:
    """Notices for the devices whose own status ``flips`` changed (not those in ``exclude``).

    A device's status depends on every tag it consumes, so it is judged with all of its VA's
    pools: one consuming a tag that flipped and another that stays short does not change.
    ``flips`` are in the order they happened; a pool that flipped more than once is judged
    from before its first flip, which is what its devices were last told, to after its last.
    """
    by_va: defaultdict[int, dict[str, tuple[ComplianceStatus, ComplianceStatus]]]
    by_va = defaultdict(dict)
    for flip in flips:
        first = by_va[flip.va_id].get(flip.tag)
        by_va[flip.va_id][flip.tag] = (first[0] if first else flip.before, flip.after)
    requests: list[NoticeRequest] = []
    for va_id, flipped in sorted(by_va.items()):
        pools = await load_pools(tx, [va_id], now)
        after = {tag: pool.status for (_, tag), pool in pools.items()}
        after.update({tag: last for tag, (_, last) in flipped.items()})
        before = {**after, **{tag: first for tag, (first, _) in flipped.items()}}
        for device in await consumers(tx, va_id, flipped.keys()):
            if device.device_id in exclude:
                continue
            if device_status(device.counts, before) is not device_status(device.counts, after):
                requests.append(
                    NoticeRequest(device=device, counts=device.counts, in_reply_to=None)
                )
    return requests


async def pushes_for_changes(
    tx: Transaction, last_seen: int, *, now: int, limit: int = 1000
) -> tuple[int, list[NoticeRequest], list[ErrorRequest]]:
    """Handle the change feed after ``last_seen``: the new mark and what to push."""
    changes = await changes_since(tx, last_seen, limit=limit)
    if not changes:
        return last_seen, [], []
    flips = [flip for change in changes for flip in change.flips]
    direct = await _direct(tx, changes)
    requests = [r for r in direct if isinstance(r, NoticeRequest)]
    errors = [r for r in direct if isinstance(r, ErrorRequest)]
    concerned = {r.device.device_id for r in requests} | {e.device_id for e in errors}
    requests += await pushes_for_flips(tx, flips, now=now, exclude=concerned)
    return changes[-1].id, requests, errors


async def _direct(tx: Transaction, changes: Sequence[Change]) -> list[NoticeRequest | ErrorRequest]:
    """Devices a change names itself: moved ones get a fresh notice (their VA changed),
    deregistered ones are told they no longer are, a VA's new policy reaches all its devices."""
    named = {device for change in changes for device in change.devices}
    records = await find_devices(tx, named) if named else {}
    policy_vas = {va for c in changes if c.kind is ChangeKind.VA_POLICY for va in c.va_ids}
    out: dict[str, NoticeRequest | ErrorRequest] = {}
    for va_id in sorted(policy_vas):
        for device in await _registered_in(tx, va_id):
            out[device.device_id] = NoticeRequest(
                device=device, counts=device.counts, in_reply_to=None
            )
    for device_id in sorted(named):
        record = records.get(device_id)
        if record is None:
            continue
        if record.registered:
            out[device_id] = NoticeRequest(device=record, counts=record.counts, in_reply_to=None)
        else:
            out[device_id] = ErrorRequest(
                device_id=device_id,
                device_pk=record.pk,
                in_reply_to=None,
                code=ErrorCode.NOT_REGISTERED,
                message="this device was deregistered by an administrator",
            )
    return list(out.values())


async def _registered_in(tx: Transaction, va_id: int) -> list[DeviceRecord]:
    rows = await tx.fetch_all(
        "SELECT device_id FROM devices WHERE va_id = ? AND state = 'registered'", (va_id,)
    )
    found = await find_devices(tx, [str(r["device_id"]) for r in rows])
    return sorted(found.values(), key=lambda d: d.device_id)


async def pushes_for_expiry(
    tx: Transaction, since: int, now: int, *, actor: str
) -> list[NoticeRequest]:
    """Term licenses that started or ended in ``(since, now]``: re-evaluate their VAs (the
    flips are recorded and audited) and push to the devices whose status changed."""
    rows = await tx.fetch_all(
        "SELECT DISTINCT va_id FROM licenses WHERE va_id IS NOT NULL AND quantity > 0 AND"
        " ((starts_at > ? AND starts_at <= ?) OR (ends_at > ? AND ends_at <= ?))",
        (since, now, since, now),
    )
    va_ids = [int(r["va_id"]) for r in rows]
    if not va_ids:
        return []
    flips = await reevaluate(tx, va_ids, actor=actor, now=now)
    return await pushes_for_flips(tx, flips, now=now)
