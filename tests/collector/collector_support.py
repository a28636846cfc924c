"""Helpers shared by the collector's tests: a site on a real SQLite file, and acting in it.

The ``site`` fixture (``conftest.py``) is an initialised store with a site operator, a smart
account ACME (alice is its sa-admin; VAs DEFAULT and Engineering) and a partner holding account
PartnerCo (pat is its partner-admin). ``Site.run(op, as_=..., **kwargs)`` runs one domain
operation as one user in one write transaction, like a CLI command does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from smartlic.collector import site as site_ops
from smartlic.collector.devices import (
    CountsUpdate,
    DeviceRecord,
    NewDevice,
    apply_reports,
    find_devices,
    register_devices,
)
from smartlic.collector.store import Store, open_store
from smartlic.collector.users import load_actor
from smartlic.collector.virtual_accounts import create_virtual_account
from smartlic.protocol import Algorithm, KeyType, SigningKey, Udi

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from pathlib import Path

NOW: Final = 1_800_000_000
"""2027-01-15T08:00:00Z: the tests' clock."""
DAY: Final = 86_400
OPERATOR: Final = "ops@example.com"
ALICE: Final = "alice@acme.example"
PAT: Final = "pat@partner.example"
COLLECTOR_KEY: Final = SigningKey.from_seed(KeyType.ED25519, bytes(range(32)))


@dataclass
class Site:
    store: Store

    async def run(
        self, op: Callable[..., Awaitable[Any]], *, as_: str = OPERATOR, **kwargs: Any
    ) -> Any:
        """``op(tx, actor, **kwargs)`` in one write transaction, acting as ``as_``."""
        async with self.store.write() as tx:
            actor = await load_actor(tx, as_)
            return await op(tx, actor, **kwargs)

    async def va_id(self, account: str, name: str) -> int:
        async with self.store.read() as tx:
            row = await tx.fetch_one(
                "SELECT va.id FROM virtual_accounts va JOIN accounts a ON a.id = va.account_id"
                " WHERE a.name = ? AND va.name = ? AND va.deleted_at IS NULL",
                (account, name),
            )
        assert row is not None
        return int(row["id"])

    async def register(self, account: str, va: str, *serials: str) -> list[str]:
        """Register devices straight into a VA (the service's trusted bulk path)."""
        va_id = await self.va_id(account, va)
        udis = [Udi(product_id="C9300/24T", serial=serial) for serial in serials]
        async with self.store.write() as tx:
            await register_devices(
                tx,
                [
                    NewDevice(
                        udi=udi,
                        algorithm=Algorithm.ED25519,
                        public_key=device_key(udi.serial).public.raw,
                        va_id=va_id,
                    )
                    for udi in udis
                ],
                now=NOW,
            )
        return [udi.device_id for udi in udis]

    async def report(self, device_id: str, counts: Mapping[str, int], *, at: int = NOW) -> None:
        """Apply one accepted report with the next sequence number."""
        async with self.store.write() as tx:
            device = (await find_devices(tx, [device_id]))[device_id]
            await apply_reports(
                tx,
                [
                    CountsUpdate(
                        device=device, seq=device.last_seq + 1, received_at=at, counts=counts
                    )
                ],
            )

    async def device(self, device_id: str) -> DeviceRecord:
        async with self.store.read() as tx:
            return (await find_devices(tx, [device_id]))[device_id]


def device_key(serial: str) -> SigningKey:
    return SigningKey.from_seed(KeyType.ED25519, serial.encode().ljust(32, b"\0")[:32])


def udi_of(device_id: str) -> str:
    return str(Udi.from_device_id(device_id))


async def build_site(path: Path) -> None:
    store = await open_store(path, create=True)
    try:
        async with store.write() as tx:
            await site_ops.init_site(
                tx, operator_email=OPERATOR, collector_key=COLLECTOR_KEY.public, now=NOW
            )
        world = Site(store)
        await world.run(site_ops.create_smart_account, name="ACME", admin_email=ALICE, now=NOW)
        await world.run(create_virtual_account, account_name="ACME", name="Engineering", now=NOW)
        await world.run(site_ops.create_holding_account, name="PartnerCo", admin_email=PAT, now=NOW)
    finally:
        await store.close()
