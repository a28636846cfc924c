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

from smartlic.collector.compliance import (
    PoolKey,
    PoolState,
    device_status,
    device_tags,
    load_pool_states,
)
from smartlic.collector.devices import reserve_notice_seqs
from smartlic.collector.service.decisions import compliance_notice
from smartlic.protocol import (
    CollectorMessage,
    DeregistrationResult,
    ErrorCode,
    ErrorNotice,
    RegistrationRequest,
    RegistrationResult,
)

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from smartlic.collector.devices import DeviceRecord
    from smartlic.collector.store import Transaction
    from smartlic.protocol import ComplianceStatus, DeregistrationRequest, VerifyingKey

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


@dataclass(frozen=True, slots=True, kw_only=True)
class ResultRequest:
    """A device's (de)registration went through: it is owed the result."""

    device: DeviceRecord
    """The device as the request left it."""
    request: RegistrationRequest | DeregistrationRequest
    collector_key: VerifyingKey


NoticeOwed = NoticeRequest | ErrorRequest | ResultRequest


def pools_needed(requests: Sequence[NoticeRequest]) -> set[PoolKey]:
    return {
        (request.device.va_id, tag)
        for request in requests
        for tag, count in request.counts.items()
        if count > 0
    }


def status_told(
    va_id: int, counts: Mapping[str, int], pools: Mapping[PoolKey, PoolState]
) -> ComplianceStatus:
    """What a compliance notice built from ``pools`` tells a device of ``va_id`` with
    ``counts``: pushes compare it with what the device was last told."""
    return device_status(device_tags(va_id, counts, pools))


def _notice_pk(owed: NoticeOwed) -> int | None:
    return owed.device_pk if isinstance(owed, ErrorRequest) else owed.device.pk


async def _numbers(
    tx: Transaction, owed: Sequence[NoticeOwed], told: Mapping[int, ComplianceStatus]
) -> list[int]:
    """Each owed notice's ``notice_seq``, reserved in the store, rising in the order given;
    ``told`` is stored as what each device was last told."""
    wanted: defaultdict[int, int] = defaultdict(int)
    for each in owed:
        pk = _notice_pk(each)
        if pk is not None:
            wanted[pk] += 1
    last = await reserve_notice_seqs(tx, wanted, told)
    next_seq = {pk: last[pk] - n + 1 for pk, n in wanted.items()}
    numbers: list[int] = []
    for each in owed:
        pk = _notice_pk(each)
        if pk is None:
            # An unknown device has no counter; 1 is as good as any: it has applied nothing.
            numbers.append(1)
        else:
            numbers.append(next_seq[pk])
            next_seq[pk] += 1
    return numbers


async def number_notices(
    tx: Transaction,
    owed: Sequence[NoticeOwed],
    *,
    now: int,
    pools: Mapping[PoolKey, PoolState] | None = None,
) -> list[CollectorMessage]:
    """Reserve notice numbers and build every notice owed, numbered in the order given.

    ``owed`` must be in the order the notices will be sent: a device applies a notice only
    when its ``notice_seq`` is above the last it applied (SPEC §4), so one numbered lower but
    sent later would be taken for stale and its news lost. ``pools`` may carry pool states
    the caller already has; the others are loaded at ``now``.
    """
    requests = [o for o in owed if isinstance(o, NoticeRequest)]
    known = dict(pools or {})
    missing = pools_needed(requests) - known.keys()
    if missing:
        known.update(await load_pool_states(tx, missing, now))
    at = [(n, each) for n, each in enumerate(owed) if isinstance(each, NoticeRequest)]
    tags = {n: device_tags(each.device.va_id, each.counts, known) for n, each in at}
    # In the order given: a device's last compliance notice is what it ends up told.
    told = {each.device.pk: device_status(tags[n]) for n, each in at}
    numbers = await _numbers(tx, owed, told)
    # One draw from the OS for the batch's nonces: a system call per notice cost more than
    # building the notice.
    nonces = secrets.token_bytes(NONCE_BYTES * len(requests))
    drawn = 0
    built: list[CollectorMessage] = []
    for n, (each, notice_seq) in enumerate(zip(owed, numbers, strict=True)):
        if isinstance(each, NoticeRequest):
            device = each.device
            nonce = nonces[drawn : drawn + NONCE_BYTES]
            drawn += NONCE_BYTES
            built.append(
                compliance_notice(
                    device_id=device.device_id,
                    notice_seq=notice_seq,
                    now=now,
                    in_reply_to=each.in_reply_to,
                    virtual_account=device.va_name,
                    tags=tags[n],
                    policy=device.policy,
                    nonce=nonce,
                )
            )
        elif isinstance(each, ErrorRequest):
            built.append(
                ErrorNotice(
                    device_id=each.device_id,
                    notice_seq=notice_seq,
                    issued_at=now,
                    in_reply_to=each.in_reply_to,
                    code=each.code,
                    message=each.message,
                    collector_key=each.collector_key,
                )
            )
        else:
            built.append(_result(each, notice_seq=notice_seq, now=now))
    return built


def _result(owed: ResultRequest, *, notice_seq: int, now: int) -> CollectorMessage:
    device, request = owed.device, owed.request
    if isinstance(request, RegistrationRequest):
        return RegistrationResult(
            device_id=device.device_id,
            request_id=request.request_id,
            notice_seq=notice_seq,
            issued_at=now,
            smart_account=device.account_name,
            virtual_account=device.va_name,
            report_interval=device.policy.report_interval,
            collector_key=owed.collector_key,
        )
    return DeregistrationResult(
        device_id=device.device_id,
        request_id=request.request_id,
        notice_seq=notice_seq,
        issued_at=now,
    )


def consumed_tags(devices: Collection[DeviceRecord]) -> set[PoolKey]:
    return {(d.va_id, tag) for d in devices for tag, n in d.counts.items() if n > 0}
