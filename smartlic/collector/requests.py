"""(De)registration requests the collector has carried out, for telling a retry from a replay.

A device's request may arrive more than once: re-sent by the device, redelivered by the
broker, or handed to two members of a shared-subscription group out of order. In the state it
left the device in, a copy is a retry and gets the same outcome again; once the state has
moved on (the device deregistered since its registration, or registered again since its
deregistration) a copy is a replay and is refused (SPEC §4, *Replay and freshness*). Only
requests inside the clock-skew window can pass at all, so that is as long as they are kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smartlic.collector.devices import DeviceRecord
    from smartlic.collector.store import Transaction


def request_replayed(*, carried_out: bool, registered: bool, registers: bool) -> bool:
    """Whether a request (``registers``: a registration, else a deregistration) is a replay:
    carried out before, and the device no longer in the state it left it in."""
    return carried_out and registered is not registers


async def carried_out(tx: Transaction, device: DeviceRecord, request_id: bytes) -> bool:
    """Whether the device's request ``request_id`` was carried out (and is still kept)."""
    row = await tx.fetch_one(
        "SELECT 1 AS found FROM carried_requests WHERE device_id = ? AND request_id = ?",
        (device.pk, request_id),
    )
    return row is not None


async def is_replay(
    tx: Transaction, device: DeviceRecord, request_id: bytes, *, registers: bool
) -> bool:
    """Whether the device's request ``request_id`` is a replay (:func:`request_replayed`)."""
    return request_replayed(
        carried_out=await carried_out(tx, device, request_id),
        registered=device.registered,
        registers=registers,
    )


async def record_carried_out(
    tx: Transaction, device_pk: int, request_id: bytes, *, now: int, keep: int
) -> None:
    """Remember a request carried out, and forget those older than ``keep`` seconds.

    ``keep`` must cover every moment a copy could still be accepted: issued up to the window
    after ``now`` and accepted up to the window after that, so twice the clock-skew window.
    """
    await tx.execute("DELETE FROM carried_requests WHERE carried_at < ?", (now - keep,))
    await tx.execute(
        "INSERT INTO carried_requests (device_id, request_id, carried_at) VALUES (?, ?, ?)"
        " ON CONFLICT (device_id, request_id) DO NOTHING",
        (device_pk, request_id, now),
    )
