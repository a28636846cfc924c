"""Notices to devices: who gets one, with what, numbered and ready to sign.

Answers to reports and pushes after a pool flips are built the same way: a device's notice
lists the pools of the tags it consumes, in its VA, as they stand after the change. Numbers
(``notice_seq``) are reserved in the store in the same transaction as the decision, so a device
never sees two notices with one number, even across collectors.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smartlic.collector.compliance import PoolKey, PoolState, load_pool_states, pool_compliance
from smartlic.collector.devices import reserve_notice_seqs
from smartlic.collector.service.decisions import compliance_notice
from smartlic.protocol import CollectorMessage, ErrorCode, ErrorNotice, TagCompliance

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from smartlic.collector.devices import DeviceRecord
    from smartlic.collector.store import Transaction
    from smartlic.protocol import VerifyingKey

NONCE_BYTES = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class NoticeRequest:
    """A device is owed a compliance notice (``in_reply_to`` a report, or pushed)."""

    device: DeviceRecord
    counts: Mapping[str, int]
    """The device's counts after the change (its VA is ``device.va_id``)."""
    in_reply_to: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorRequest:
    device_id: str
    device_pk: int | None
    """The store's key when the device is known: its notice_seq is then reserved there."""
    in_reply_to: int | bytes | None
    code: ErrorCode
    message: str
    collector_key: VerifyingKey | None = None
    """Set when answering a registration: the device has no pinned key yet."""


def pools_needed(requests: Sequence[NoticeRequest]) -> set[PoolKey]:
    return {
        (request.device.va_id, tag)
        for request in requests
        for tag, count in request.counts.items()
        if count > 0
    }


def tag_compliance(
    va_id: int, counts: Mapping[str, int], pools: Mapping[PoolKey, PoolState]
) -> dict[str, TagCompliance]:
    """The standing of each tag the device consumes, in its VA."""
    return {
        tag: pools[va_id, tag].compliance if (va_id, tag) in pools else pool_compliance(0, count)
        for tag, count in counts.items()
        if count > 0
    }


async def number_notices(
    tx: Transaction,
    requests: Sequence[NoticeRequest],
    errors: Sequence[ErrorRequest],
    *,
    now: int,
    pools: Mapping[PoolKey, PoolState] | None = None,
) -> list[CollectorMessage]:
    """Reserve notice numbers and build every notice; order follows the requests.

    ``pools`` may carry pool states the caller already has; the others are loaded at ``now``.
    """
    known = dict(pools or {})
    missing = pools_needed(requests) - known.keys()
    if missing:
        known.update(await load_pool_states(tx, missing, now))
    wanted: defaultdict[int, int] = defaultdict(int)
    for request in requests:
        wanted[request.device.pk] += 1
    for error in errors:
        if error.device_pk is not None:
            wanted[error.device_pk] += 1
    last = await reserve_notice_seqs(tx, wanted)
    next_seq = {pk: last[pk] - n + 1 for pk, n in wanted.items()}

    def take(pk: int) -> int:
        seq = next_seq[pk]
        next_seq[pk] = seq + 1
        return seq

    # One draw from the OS for the batch's nonces: a system call per notice cost more than
    # building the notice.
    nonces = secrets.token_bytes(NONCE_BYTES * len(requests))
    built: list[CollectorMessage] = [
        compliance_notice(
            device_id=r.device.device_id,
            notice_seq=take(r.device.pk),
            now=now,
            in_reply_to=r.in_reply_to,
            virtual_account=r.device.va_name,
            tags=tag_compliance(r.device.va_id, r.counts, known),
            policy=r.device.policy,
            nonce=nonces[i * NONCE_BYTES : (i + 1) * NONCE_BYTES],
        )
        for i, r in enumerate(requests)
    ]
    built.extend(
        ErrorNotice(
            device_id=e.device_id,
            # An unknown device has no counter; 1 is as good as any: it has applied nothing.
            notice_seq=take(e.device_pk) if e.device_pk is not None else 1,
            issued_at=now,
            in_reply_to=e.in_reply_to,
            code=e.code,
            message=e.message,
            collector_key=e.collector_key,
        )
        for e in errors
    )
    return built


def consumed_tags(devices: Collection[DeviceRecord]) -> set[PoolKey]:
    return {(d.va_id, tag) for d in devices for tag, n in d.counts.items() if n > 0}
