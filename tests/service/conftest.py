"""Fixtures for the collector service tests: a site, a running service, devices."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import TYPE_CHECKING

import pytest
from smartlic.collector.service.config import ServiceConfig
from smartlic.collector.service.service import CollectorService
from smartlic.protocol import Udi

from .support import Device, Site

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from smartlic.mqtt.broker import MosquittoBroker

    from .support import MakeDevice


@pytest.fixture
async def collector_site(tmp_path: Path) -> Site:
    built = await Site.create(tmp_path)
    await built.account("ACME", "Engineering")
    return built


def service_config(
    collector_site: Site, broker: MosquittoBroker, **overrides: object
) -> ServiceConfig:
    settings: dict[str, object] = {
        "db": collector_site.db,
        "key": collector_site.key_path,
        "broker": broker.url,
        "client_id": "collector-under-test",
        "batch_linger_ms": 2.0,
        "change_poll_ms": 50.0,
        "log_level": "warning",
        "log_format": "json",
    }
    settings.update(overrides)
    return ServiceConfig(**settings)  # type: ignore[arg-type]  # keyword names are the fields


@contextlib.asynccontextmanager
async def running_service(
    collector_site: Site, broker: MosquittoBroker, **overrides: object
) -> AsyncIterator[CollectorService]:
    """A collector service running in this event loop until the block ends."""
    running = CollectorService(service_config(collector_site, broker, **overrides))
    task = asyncio.create_task(running.run(), name="collector-under-test")
    await running.wait_ready()
    try:
        yield running
    finally:
        running.stop()
        async with asyncio.timeout(20):
            await task


@pytest.fixture
async def service(
    collector_site: Site, mosquitto: MosquittoBroker
) -> AsyncIterator[CollectorService]:
    async with running_service(collector_site, mosquitto) as running:
        yield running


@pytest.fixture
async def make_device(
    collector_site: Site, mosquitto: MosquittoBroker
) -> AsyncIterator[MakeDevice]:
    made: list[Device] = []
    serials = itertools.count(1)

    async def make(udi: str | None = None) -> Device:
        device = Device(
            udi=Udi.parse(udi or f"C9300-24T:FOC{next(serials):05d}"),
            broker_url=mosquitto.url,
            collector_key=collector_site.key,
        )
        made.append(await device.connect())
        return device

    yield make
    for device in made:
        await device.close()
