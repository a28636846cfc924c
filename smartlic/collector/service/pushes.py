"""Who gets a pushed notice when pools flip, a device moves or a license term starts or ends.

SPEC §3: a change that moves a pool across the line re-evaluates it and pushes fresh notices to
the devices whose status changed, without waiting for their next report. The three sources of
such changes each end here: the service's own batches (reports, deregistrations), the change
feed written by administrative commands in other processes (:func:`pushes_for_changes`), and
the clock, when a term license starts or ends (:func:`pushes_for_expiry`), including while
the service was down (:func:`pushes_after_downtime`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from smartlic.collector.changes import ChangeKind, changes_since
from smartlic.collector.compliance import load_pools, reevaluate, vas_with_license_changes
from smartlic.collector.devices import DeviceRecord, consumers, find_devices, told_statuses
from smartlic.collector.service.notices import ErrorRequest, NoticeRequest, status_told
from smartlic.protocol import ErrorCode

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from smartlic.collector.changes import Change, PoolFlip
    from smartlic.collector.store import Transaction


async def pushes_for_flips(
    tx: Transaction, flips: Iterable[PoolFlip], *, now: int, exclude: Collection[str] = ()
) -> list[NoticeRequest]:
    """Notices for the devices ``flips`` concern whose status is no longer the one they were
    last told (not those in ``exclude``, which are answered anyway).

    A device's status depends on every tag it consumes, so it is judged with all of its VA's
    pools as they stand at ``now``, exactly as its notice would be: one consuming a tag that
    flipped and another that stays short does not change. What it was told is the status of
    the last compliance notice numbered for it (``told_status``), whatever happened since:
    answers to its reports between two flips of one feed read, a term that started or ended
    with no one looking, another collector's batch. A device never told one, as far as the
    store knows, is pushed.
    """
    tags_by_va: defaultdict[int, set[str]] = defaultdict(set)
    for flip in flips:
        tags_by_va[flip.va_id].add(flip.tag)
    requests: list[NoticeRequest] = []
    for va_id, tags in sorted(tags_by_va.items()):
        pools = await load_pools(tx, [va_id], now)
        concerned = [d for d in await consumers(tx, va_id, tags) if d.device_id not in exclude]
        told = await told_statuses(tx, [d.pk for d in concerned])
        requests += [
            NoticeRequest(device=device, counts=device.counts, in_reply_to=None)
            for device in concerned
            if told.get(device.pk) is not status_told(va_id, device.counts, pools)
        ]
    return requests


async def pushes_for_changes(
    tx: Transaction, last_seen: int, *, now: int, actor: str, limit: int = 1000
) -> tuple[int, list[NoticeRequest], list[ErrorRequest]]:
    """Handle the change feed after ``last_seen``: the new mark and what to push."""
    changes = await changes_since(tx, last_seen, limit=limit)
    if not changes:
        return last_seen, [], []
    flips = [flip for change in changes for flip in change.flips]
    # A change was judged at its command's clock, taken before it waited for the store's
    # lock (up to seconds) and maybe on another host: a term starting or ending in between
    # is behind the expiry watcher's mark and would never be applied. Judged again now.
    changed_vas = {va for change in changes for va in change.va_ids}
    flips += await reevaluate(tx, sorted(changed_vas), actor=actor, now=now)
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
    va_ids = sorted(await vas_with_license_changes(tx, after=since, until=now))
    if not va_ids:
        return []
    flips = await reevaluate(tx, va_ids, actor=actor, now=now)
    return await pushes_for_flips(tx, flips, now=now)


async def pushes_after_downtime(tx: Transaction, *, now: int, actor: str) -> list[NoticeRequest]:
    """What a service starting up pushes: terms may have started or ended while no collector
    looked, so every pool in use is re-evaluated once (the flips are recorded and audited) and
    the devices whose status is no longer the one they were told are pushed."""
    rows = await tx.fetch_all("SELECT DISTINCT va_id FROM pool_usage")
    flips = await reevaluate(tx, [int(r["va_id"]) for r in rows], actor=actor, now=now)
    return await pushes_for_flips(tx, flips, now=now)
