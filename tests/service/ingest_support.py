"""Driving the service's ``Ingest`` directly on a real SQLite file, without a broker.

Each batch is a list of MQTT messages, as the service hands them over.
"""

from __future__ import annotations

import contextlib
import itertools
from typing import TYPE_CHECKING

from smartlic.collector.devices import NewDevice, register_devices
from smartlic.collector.service.crypto import CryptoPool
from smartlic.collector.service.ingest import ACTOR, Ingest, Prepared, Settings
from smartlic.collector.service.notices import number_notices
from smartlic.collector.service.pushes import pushes_for_changes
from smartlic.collector.store import open_store
from smartlic.mqtt.common import MqttMessage
from smartlic.protocol import Algorithm, ErrorCode, Udi

from .support import TOPICS, Device, now

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    from smartlic.collector.store import Store
    from smartlic.protocol import CollectorMessage

    from .support import Site

_mids = itertools.count(1)


@contextlib.asynccontextmanager
async def collector(site: Site) -> AsyncIterator[Ingest]:
    """A collector's ingest on its own connection to the site's database."""
    store = await open_store(site.db)
    crypto = CryptoPool(0)
    settings = Settings(
        topics=TOPICS, key=site.key, fingerprint=site.key.public.fingerprint, clock_skew=3600
    )
    try:
        yield Ingest(store, crypto, settings)
    finally:
        await crypto.close()
        await store.close()


def newcomer(site: Site, serial: str) -> Device:
    """A device the site has never seen, with a key of its own."""
    return Device(
        udi=Udi(product_id="C9300-24T", serial=serial), broker_url="", collector_key=site.key
    )


async def devices(site: Site, *serials: str, va: str = "DEFAULT") -> list[Device]:
    """Devices registered straight in the store, as if by earlier batches."""
    made = [newcomer(site, s) for s in serials]
    (row,) = await site.query("SELECT id FROM virtual_accounts WHERE name = ?", (va,))
    store = await open_store(site.db)
    try:
        async with store.write() as tx:
            await register_devices(
                tx,
                [
                    NewDevice(
                        udi=d.udi,
                        algorithm=Algorithm.ED25519,
                        public_key=d.key.public.raw,
                        va_id=int(row["id"]),
                    )
                    for d in made
                ],
                now=now(),
            )
    finally:
        await store.close()
    return made


def uplink(device: Device, payload: bytes) -> MqttMessage:
    """``payload`` as received on ``device``'s uplink topic."""
    return uplink_message(TOPICS.uplink(device.device_id), payload)


def uplink_message(topic: str, payload: bytes) -> MqttMessage:
    """``payload`` as the collector receives it on ``topic``."""
    return MqttMessage(
        topic=topic,
        payload=payload,
        qos=1,
        mid=next(_mids),
        retain=False,
        duplicate=False,
    )


def report(
    device: Device,
    counts: Mapping[str, int],
    *,
    seq: int | None = None,
    issued_at: int | None = None,
) -> MqttMessage:
    return uplink(device, device.report_bytes(counts, seq=seq, issued_at=issued_at))


async def decide(ingest: Ingest, messages: Sequence[MqttMessage]) -> Prepared:
    """One batch, parsed, verified and committed; its items tell what was decided."""
    prepared = await ingest.prepare(messages)
    await ingest.commit(prepared, now())
    return prepared


def refusals(prepared: Prepared) -> list[ErrorCode | None]:
    return [item.refusal.code if item.refusal else None for item in prepared.items]


async def changes_pushed(
    store: Store, since: int, *, at: int
) -> tuple[int, list[CollectorMessage]]:
    """The service's change-feed loop, once and without its task: the feed's new mark and the
    notices its changes since ``since`` push (numbered, not signed)."""
    async with store.write() as tx:
        mark, requests, errors = await pushes_for_changes(tx, since, now=at, actor=ACTOR)
        return mark, await number_notices(tx, [*requests, *errors], now=at)
