"""Test support for the collector service: a site, scripted devices, a running service.

The site is set up through the collector's domain API (what the admin CLI calls); devices are
built from the protocol package alone, each a real MQTT client of the test's own Mosquitto.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from smartlic.collector import device_admin, licenses, orders, site, tokens, virtual_accounts
from smartlic.collector.orders import OrderLine
from smartlic.collector.signing_key import write_key_file
from smartlic.collector.store import open_store
from smartlic.collector.users import load_actor
from smartlic.mqtt.aio import AsyncMqttClient, MqttMessage
from smartlic.mqtt.url import parse_broker_url
from smartlic.protocol import (
    Algorithm,
    DeregistrationRequest,
    KeyType,
    Opened,
    RegistrationRequest,
    SigningKey,
    Topics,
    Udi,
    UsageReport,
    open_message,
    parse_token,
    seal,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from smartlic.collector.store import Store

OPERATOR = "ops@example.com"
DAY = 86_400
TOPICS = Topics()


def now() -> int:
    return int(time.time())


@dataclass
class Site:
    """A collector database with a site operator, its key file, and helpers to change it."""

    db: Path
    key_path: Path
    key: SigningKey

    @classmethod
    async def create(cls, folder: Path) -> Site:
        db = folder / "collector.db"
        key = SigningKey.from_seed(KeyType.ED25519, secrets.token_bytes(32))
        key_path = folder / "collector.db.key"
        write_key_file(key_path, key)
        store = await open_store(db, create=True)
        try:
            async with store.write() as tx:
                await site.init_site(
                    tx, operator_email=OPERATOR, collector_key=key.public, now=now()
                )
        finally:
            await store.close()
        return cls(db=db, key_path=key_path, key=key)

    async def _as_operator(self, action: Callable[[Any, Any], Any]) -> Any:
        store: Store = await open_store(self.db)
        try:
            async with store.write() as tx:
                actor = await load_actor(tx, OPERATOR)
                return await action(tx, actor)
        finally:
            await store.close()

    async def account(self, name: str = "ACME", *vas: str) -> None:
        async def act(tx: Any, actor: Any) -> None:
            await site.create_smart_account(
                tx, actor, name=name, admin_email=f"admin@{name.lower()}.example", now=now()
            )
            for va in vas:
                await virtual_accounts.create_virtual_account(
                    tx, actor, account_name=name, name=va, now=now()
                )

        await self._as_operator(act)

    async def holding(self, name: str) -> None:
        await self._as_operator(
            lambda tx, actor: site.create_holding_account(
                tx, actor, name=name, admin_email=f"admin@{name.lower()}.example", now=now()
            )
        )

    async def deposit(
        self,
        number: str,
        *,
        tag: str = "network-advantage",
        quantity: int,
        account: str = "ACME",
        va: str | None = None,
        term: tuple[int, int] | None = None,
    ) -> None:
        line = OrderLine(
            tag=tag,
            quantity=quantity,
            starts_at=term[0] if term else None,
            ends_at=term[1] if term else None,
        )
        await self._as_operator(
            lambda tx, actor: orders.deposit_order(
                tx,
                actor,
                number=number,
                ordered_on=now(),
                lines=[line],
                account_name=account,
                va_name=va,
                now=now(),
            )
        )

    async def token(
        self,
        *,
        account: str = "ACME",
        va: str | None = None,
        max_uses: int = 100,
        expires_days: int = 30,
        created: int | None = None,
    ) -> str:
        async def act(tx: Any, actor: Any) -> str:
            _, token = await tokens.create_token(
                tx,
                actor,
                account_name=account,
                va_name=va,
                expires_days=expires_days,
                max_uses=max_uses,
                now=created or now(),
                entropy=secrets.token_bytes,
            )
            return str(token)

        return str(await self._as_operator(act))

    async def revoke(self, token: str, account: str = "ACME") -> None:
        token_id = parse_token(token).token_id_text
        await self._as_operator(
            lambda tx, actor: tokens.revoke_token(
                tx, actor, account_name=account, token_id=token_id, now=now()
            )
        )

    async def transfer(
        self, count: int, *, from_va: str, to_va: str, tag: str = "network-advantage"
    ) -> None:
        await self._as_operator(
            lambda tx, actor: licenses.transfer_licenses(
                tx,
                actor,
                account_name="ACME",
                tag=tag,
                count=count,
                from_va=from_va,
                to_va=to_va,
                now=now(),
            )
        )

    async def deregister(self, udi: str) -> None:
        await self._as_operator(
            lambda tx, actor: device_admin.deregister_device(
                tx, actor, account_name="ACME", udi=udi, now=now()
            )
        )

    async def move(self, udi: str, to_va: str) -> None:
        await self._as_operator(
            lambda tx, actor: device_admin.move_device(
                tx, actor, account_name="ACME", udi=udi, to_va=to_va, now=now()
            )
        )

    async def query(self, sql: str, params: tuple[object, ...] = ()) -> list[dict[str, Any]]:
        store = await open_store(self.db)
        try:
            async with store.read() as tx:
                return await tx.fetch_all(sql, params)
        finally:
            await store.close()

    async def in_use(self, tag: str = "network-advantage", va: str = "DEFAULT") -> int:
        rows = await self.query(
            "SELECT p.in_use FROM pool_usage p JOIN virtual_accounts v ON v.id = p.va_id"
            " WHERE p.tag = ? AND v.name = ?",
            (tag, va),
        )
        return int(rows[0]["in_use"]) if rows else 0

    async def dead_letters(self) -> list[dict[str, Any]]:
        return await self.query("SELECT * FROM dead_letters ORDER BY id")


@dataclass
class Device:
    """A device made from the protocol package: signs what it sends, verifies what it gets."""

    udi: Udi
    broker_url: str
    collector_key: SigningKey
    key: SigningKey = field(
        default_factory=lambda: SigningKey.from_seed(KeyType.ED25519, secrets.token_bytes(32))
    )
    seq: int = 0
    inbox: list[Opened] = field(default_factory=list)
    raw: list[MqttMessage] = field(default_factory=list)
    client: AsyncMqttClient | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def device_id(self) -> str:
        return self.udi.device_id

    async def connect(self) -> Device:
        self.client = AsyncMqttClient(
            client_id=self.device_id,
            broker=parse_broker_url(self.broker_url),
            on_message=self._got,
            subscriptions=[(TOPICS.downlink(self.device_id), 1)],
        )
        await self.client.connect()
        return self

    def _got(self, message: MqttMessage) -> None:
        self.raw.append(message)
        opened = open_message(message.payload)
        opened.verify(self.collector_key.public)
        self.inbox.append(opened)
        self._arrived.set()

    async def send(self, payload: bytes, *, topic: str | None = None) -> None:
        assert self.client is not None
        await self.client.publish(topic or TOPICS.uplink(self.device_id), payload)

    async def expect(
        self,
        predicate: Callable[[Any], bool] = lambda _m: True,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 -- test helper
    ) -> Any:
        """The first message received (now or later) that satisfies ``predicate``; consumed."""
        async with asyncio.timeout(timeout):
            while True:
                for index, opened in enumerate(self.inbox):
                    if predicate(opened.message):
                        del self.inbox[index]
                        return opened.message
                self._arrived.clear()
                await self._arrived.wait()

    async def silence(self, seconds: float = 0.5) -> list[Any]:
        await asyncio.sleep(seconds)
        return [o.message for o in self.inbox]

    def registration(
        self, token: str, *, key: SigningKey | None = None, issued_at: int | None = None
    ) -> bytes:
        request = RegistrationRequest(
            udi=self.udi,
            algorithm=Algorithm.ED25519,
            public_key=self.key.public.raw,
            token=token,
            request_id=secrets.token_bytes(8),
            issued_at=now() if issued_at is None else issued_at,
        )
        return seal(request, key or self.key)

    async def register(self, token: str) -> Any:
        await self.send(self.registration(token))
        return await self.expect()

    def report_bytes(
        self, counts: Mapping[str, int], *, seq: int | None = None, issued_at: int | None = None
    ) -> bytes:
        if seq is None:
            self.seq += 1
            seq = self.seq
        report = UsageReport(
            device_id=self.device_id,
            seq=seq,
            issued_at=issued_at if issued_at is not None else now(),
            period=86_400,
            counts=dict(counts),
        )
        return seal(report, self.key)

    async def report(self, counts: Mapping[str, int], **kwargs: Any) -> Any:
        payload = self.report_bytes(counts, **kwargs)
        await self.send(payload)
        seq = kwargs.get("seq") or self.seq
        return await self.expect(lambda m: getattr(m, "in_reply_to", None) == seq)

    def deregistration_bytes(self, *, issued_at: int | None = None) -> tuple[bytes, bytes]:
        """A signed deregistration request, and its request id."""
        request = DeregistrationRequest(
            device_id=self.device_id,
            request_id=secrets.token_bytes(8),
            issued_at=now() if issued_at is None else issued_at,
        )
        return seal(request, self.key), request.request_id

    async def deregister(self) -> Any:
        payload, request_id = self.deregistration_bytes()
        await self.send(payload)
        return await self.expect(lambda m: getattr(m, "request_id", None) == request_id)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.disconnect()


if TYPE_CHECKING:
    from collections.abc import Awaitable

    MakeDevice = Callable[..., Awaitable[Device]]
    """The ``make_device`` fixture: a new device, connected, not yet registered."""
