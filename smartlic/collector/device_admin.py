"""What administrators do to devices: list them, move them between VAs, deregister them.

Each re-evaluates the pools it touched, records the ones that flipped, and appends to the
change feed in the same transaction, so that the running service pushes notices to the
devices whose status changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from smartlic.collector import audit
from smartlic.collector.accounts import (
    Account,
    find_account,
    find_virtual_account,
    refuse_consumption_in_holding_account,
    virtual_accounts_of,
)
from smartlic.collector.audit import AuditEntry
from smartlic.collector.changes import ChangeKind, PoolFlip, append_change
from smartlic.collector.compliance import (
    PoolKey,
    apply_pool_deltas,
    device_status,
    device_tags,
    load_pools,
    reevaluate,
)
from smartlic.collector.devices import DeviceRecord, deregister, devices_in, find_devices
from smartlic.collector.errors import InvalidRequest, Refused
from smartlic.collector.rbac import (
    Actor,
    Permission,
    authorize,
    authorized_vas,
    refuse_missing,
    refuse_unseen,
)
from smartlic.protocol import ComplianceStatus, LocalProtocolError, Udi

if TYPE_CHECKING:
    from smartlic.collector.store import Transaction


async def _device_account(tx: Transaction, actor: Actor, name: str) -> Account:
    account = await find_account(tx, name, seen_by=actor)
    refuse_consumption_in_holding_account(account, "devices")
    return account


async def find_account_device(
    tx: Transaction, actor: Actor, account: Account, udi_text: str
) -> DeviceRecord:
    """A device of ``account`` named by its UDI (``PID:SERIAL``), if ``actor`` may see it."""
    try:
        udi = Udi.parse(udi_text)
    except LocalProtocolError as exc:
        raise InvalidRequest(exc.message) from None
    device = (await find_devices(tx, [udi.device_id])).get(udi.device_id)
    missing = f"{account.name} has no device {udi}"
    if device is None or device.account_id != account.id:
        refuse_missing(actor, Permission.DEVICE_READ, account.scope, missing)
    refuse_unseen(actor, Permission.DEVICE_READ, account.scope, device.va_scope, missing)
    return device


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceChange:
    device: DeviceRecord
    flips: tuple[PoolFlip, ...]


async def deregister_device(
    tx: Transaction, actor: Actor, *, account_name: str, udi: str, now: int
) -> DeviceChange:
    """An administrator deregisters a device: it stops counting; the service tells it."""
    account = await _device_account(tx, actor, account_name)
    device = await find_account_device(tx, actor, account, udi)
    authorize(actor, Permission.DEVICE_MANAGE, device.va_scope)
    flips = await deregister(tx, device, actor=actor.email, now=now)
    await append_change(
        tx,
        ChangeKind.DEVICE_DEREGISTER,
        now=now,
        account_id=account.id,
        va_ids=[device.va_id],
        flips=flips,
        devices=[device.device_id],
    )
    return DeviceChange(device=device, flips=tuple(flips))


async def move_device(
    tx: Transaction, actor: Actor, *, account_name: str, udi: str, to_va: str, now: int
) -> DeviceChange:
    """Move a registered device to another VA of its smart account; its counts move along."""
    account = await _device_account(tx, actor, account_name)
    device = await find_account_device(tx, actor, account, udi)
    target = await find_virtual_account(tx, account, to_va)
    authorize(actor, Permission.DEVICE_MANAGE, device.va_scope)
    authorize(actor, Permission.DEVICE_MANAGE, target.scope)
    if not device.registered:
        raise Refused(f"{device.udi} is deregistered; only registered devices can be moved")
    if target.id == device.va_id:
        raise Refused(f"{device.udi} is already in {target.name}")
    await tx.execute("UPDATE devices SET va_id = ? WHERE id = ?", (target.id, device.pk))
    deltas: dict[PoolKey, int] = {}
    for tag, count in device.counts.items():
        deltas[device.va_id, tag] = -count
        deltas[target.id, tag] = count
    await apply_pool_deltas(tx, deltas)
    flips = await reevaluate(tx, [device.va_id, target.id], actor=actor.email, now=now)
    await audit.append(
        tx,
        [
            AuditEntry(
                actor=actor.email,
                action="device.move",
                subject=f"device {device.udi}",
                account_id=account.id,
                before={"va": device.va_name},
                after={"va": target.name},
            )
        ],
        now=now,
    )
    await append_change(
        tx,
        ChangeKind.DEVICE_MOVE,
        now=now,
        account_id=account.id,
        va_ids=[device.va_id, target.id],
        flips=flips,
        devices=[device.device_id],
    )
    moved = (await find_devices(tx, [device.device_id]))[device.device_id]
    return DeviceChange(device=moved, flips=tuple(flips))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceView:
    device: DeviceRecord
    status: ComplianceStatus | None
    """None for a deregistered device: it is not part of any pool."""


async def list_devices(
    tx: Transaction, actor: Actor, *, account_name: str, va_name: str | None, now: int
) -> list[DeviceView]:
    """The account's devices (one VA's), with each registered device's compliance now."""
    account = await _device_account(tx, actor, account_name)
    if va_name is not None:
        va = await find_virtual_account(tx, account, va_name)
        authorize(actor, Permission.DEVICE_READ, va.scope)
        visible = {va.id}
    else:
        vas = await virtual_accounts_of(tx, account)
        visible = authorized_vas(
            actor, Permission.DEVICE_READ, account.scope, [(v.id, v.name) for v in vas]
        )
    records = await devices_in(tx, visible)
    pools = await load_pools(tx, visible, now)
    return [
        DeviceView(
            device=r,
            status=device_status(device_tags(r.va_id, r.counts, pools)) if r.registered else None,
        )
        for r in records
    ]
