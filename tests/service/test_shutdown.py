"""A shutdown while what the service depends on is away: it still stops when told to.

A batch that cannot commit is retried and nothing of it is acknowledged. Retried for ever, it
would also hold a shutdown for ever (an operator stopping the service to free a full disk).
Stopped during a store outage, the service leaves what it could not commit unacknowledged,
and the broker delivers it again to the next session: nothing is lost, nothing counted twice.
Likewise a broker that is away must not hold a shutdown: publishes waiting for room in the
window would wait for it to come back, and so would the wait before the next connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import pytest
from smartlic.collector.service.config import ServiceConfig
from smartlic.collector.service.ingest import Ingest
from smartlic.collector.service.service import CollectorService
from smartlic.collector.store import StoreError
from smartlic.mqtt import outgoing
from smartlic.mqtt.native import NativeMqttClient
from smartlic.protocol import Authorization
from structlog.testing import capture_logs

from .conftest import running_service

if TYPE_CHECKING:
    from collections.abc import Sequence

    from smartlic.mqtt.broker import MosquittoBroker

    from .support import Device, MakeDevice, Site

pytestmark = pytest.mark.timeout(60)
TAG = "network-advantage"
STOP_DEADLINE = 5.0


async def _down(*_args: Any, **_kwargs: Any) -> Any:
    raise StoreError("disk I/O error")


async def test_a_service_stopped_during_a_store_outage_stops_and_leaves_the_report_to_redeliver(
    collector_site: Site,
    mosquitto: MosquittoBroker,
    make_device: MakeDevice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await collector_site.deposit("PO-1", quantity=5)
    device = await make_device()
    async with running_service(collector_site, mosquitto):
        await device.register(await collector_site.token())
        await device.report({TAG: 1})
    with capture_logs() as logs:
        async with running_service(collector_site, mosquitto) as service:
            monkeypatch.setattr(Ingest, "process", _down)
            monkeypatch.setattr(Ingest, "commit", _down)
            await device.send(device.report_bytes({TAG: 3}))
            async with asyncio.timeout(5):
                while not any(e["event"] == "collector.store_failed" for e in logs):
                    await asyncio.sleep(0.05)
            service.stop()
            stopping = time.monotonic()
        stopped_in = time.monotonic() - stopping
    monkeypatch.undo()

    async with running_service(collector_site, mosquitto):
        answer = await device.expect(lambda m: getattr(m, "in_reply_to", None) == device.seq)

    assert stopped_in < STOP_DEADLINE
    assert [1] == [e["unacknowledged"] for e in logs if e["event"] == "collector.stopped_in_outage"]
    assert isinstance(answer, Authorization)
    assert 3 == await collector_site.in_use(TAG)


async def test_a_service_stopped_while_the_broker_is_away_with_pushes_waiting_stops(
    collector_site: Site,
    mosquitto: MosquittoBroker,
    make_device: MakeDevice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With a window of two, a deposit that pushes to three devices while the broker is away
    leaves the third push waiting for room."""
    _window_of_two(monkeypatch)
    devices = [await make_device() for _ in range(3)]

    with capture_logs() as logs:
        stopped_in = await _stopped_with_pushes_waiting(collector_site, mosquitto, devices)

    assert stopped_in < STOP_DEADLINE
    assert [] == [e for e in logs if e["log_level"] in {"error", "critical"}]


async def test_a_service_stopped_with_more_to_publish_than_packet_ids_stops_without_an_error(
    collector_site: Site,
    mosquitto: MosquittoBroker,
    make_device: MakeDevice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With three packet ids (65,535 in MQTT) and the window released by the stop, the fourth
    push to publish while the broker is away finds no id. Every push stays in the outbox: the
    packet ids are reused at once, so a PUBACK must name its push when it arrives."""
    _window_of_two(monkeypatch)
    monkeypatch.setattr(outgoing, "MAX_PACKET_ID", 3)
    devices = [await make_device() for _ in range(4)]

    with capture_logs() as logs:
        stopped_in = await _stopped_with_pushes_waiting(collector_site, mosquitto, devices)

    assert stopped_in < STOP_DEADLINE
    assert [1] == [e["left"] for e in logs if e["event"] == "collector.publish_abandoned"]
    assert [] == [e for e in logs if e["log_level"] in {"error", "critical"}]
    outbox = await collector_site.query("SELECT device_id FROM notice_outbox")
    assert sorted(d.device_id for d in devices) == sorted(r["device_id"] for r in outbox)


async def _stopped_with_pushes_waiting(
    site: Site, mosquitto: MosquittoBroker, devices: Sequence[Device]
) -> float:
    """Seconds a service takes to stop when the broker went away just before a deposit that
    pushes to every one of ``devices`` (all short of one license until then)."""
    await site.deposit("PO-1", quantity=1)
    token = await site.token()
    async with running_service(site, mosquitto) as service:
        for device in devices:
            await device.register(token)
            await device.report({TAG: 1})
        mosquitto.stop()
        await site.deposit("PO-2", quantity=5)
        async with asyncio.timeout(5):
            while service._require_client().pending < 2:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        service.stop()
        stopping = time.monotonic()
    stopped_in = time.monotonic() - stopping
    mosquitto.start()
    return stopped_in


def _window_of_two(monkeypatch: pytest.MonkeyPatch) -> None:
    original = NativeMqttClient.__init__

    def small_window(self: NativeMqttClient, **options: Any) -> None:
        original(self, **{**options, "max_pending": 2})

    monkeypatch.setattr(NativeMqttClient, "__init__", small_window)


async def test_a_service_stopped_during_start_up_behind_another_process_writer_stops_cleanly(
    collector_site: Site,
) -> None:
    """Start-up waits for the store's write lock (up to its busy timeout): a stop meanwhile
    ends the service at once and without an error, the start-up abandoned."""
    service = CollectorService(
        ServiceConfig(
            db=collector_site.db,
            key=collector_site.key_path,
            broker="mqtt://127.0.0.1:1",
            crypto_workers=0,
        )
    )
    writer = sqlite3.connect(collector_site.db, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        with capture_logs() as logs:
            running = asyncio.create_task(service.run())
            await asyncio.sleep(0.5)
            service.stop()
            stopping = time.monotonic()
            async with asyncio.timeout(STOP_DEADLINE):
                await running
            stopped_in = time.monotonic() - stopping
    finally:
        writer.execute("ROLLBACK")
        writer.close()

    assert stopped_in < 1.0
    assert ["collector.stopping", "collector.stopped"] == [e["event"] for e in logs]
