"""The outbox of pushed notices: a row is deleted once the broker has the push, whatever fails.

A push is written to the outbox in the transaction that decided it and deleted once the broker
acknowledged it, so that a crash in between sends it again rather than losing it. A store
outage at the moment of deleting must not leave the row behind: it would be sent again at the
next reconnect or restart, long after it was delivered.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pytest
from smartlic.collector.devices import find_devices
from smartlic.collector.service import service as service_module
from smartlic.collector.service.ingest import Ingest
from smartlic.collector.service.notices import NoticeRequest, number_notices
from smartlic.collector.service.outbox import forget_pushes, queue_pushes, unsent_pushes
from smartlic.collector.store import StoreError, open_store
from smartlic.mqtt.native import NativeMqttClient
from smartlic.protocol import Authorization, OutOfComplianceNotice, seal
from structlog.testing import capture_logs

from .conftest import running_service
from .support import now

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from smartlic.mqtt.broker import MosquittoBroker

    from .support import Device, MakeDevice, Site

T = TypeVar("T")

pytestmark = [pytest.mark.timeout(60)]
TAG = "network-advantage"


def _failing(function: Callable[..., Awaitable[T]], times: int) -> Callable[..., Awaitable[T]]:
    """``function``, failing as a store outage the first ``times`` times."""
    failures = 0

    async def failing(*args: Any, **kwargs: Any) -> T:
        nonlocal failures
        if failures < times:
            failures += 1
            raise StoreError("database is locked")
        return await function(*args, **kwargs)

    return failing


async def _outbox_rows(site: Site) -> int:
    (row,) = await site.query("SELECT COUNT(*) AS n FROM notice_outbox")
    return int(row["n"])


@pytest.mark.usefixtures("service")
async def test_a_push_delivered_during_a_store_outage_leaves_the_outbox_once_the_store_is_back(
    collector_site: Site, make_device: MakeDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    await collector_site.deposit("PO-1", quantity=1)
    device = await make_device()
    await device.register(await collector_site.token())
    assert isinstance(await device.report({TAG: 2}), OutOfComplianceNotice)
    monkeypatch.setattr(service_module, "forget_pushes", _failing(forget_pushes, times=2))

    with capture_logs() as logs:
        await collector_site.deposit("PO-2", quantity=5)
        await device.expect(
            lambda m: isinstance(m, Authorization) and m.in_reply_to is None, timeout=3.0
        )
        async with asyncio.timeout(5):
            while await _outbox_rows(collector_site):
                await asyncio.sleep(0.1)

    assert 2 == len([e for e in logs if e["event"] == "collector.store_failed"])
    assert [] == await device.silence(0.5)


async def _told_it_is_short(
    site: Site, mosquitto: MosquittoBroker, make_device: MakeDevice
) -> Device:
    """A device registered and told it uses 2 licenses of a pool of 1, by a service that then
    stopped."""
    await site.deposit("PO-1", quantity=1)
    device = await make_device()
    async with running_service(site, mosquitto):
        await device.register(await site.token())
        assert isinstance(await device.report({TAG: 2}), OutOfComplianceNotice)
    return device


async def _left_in_the_outbox(site: Site, device_id: str) -> None:
    """A push for ``device_id`` in the outbox, as a service that crashed before sending it
    leaves it."""
    store = await open_store(site.db)
    try:
        async with store.write() as tx:
            record = (await find_devices(tx, [device_id]))[device_id]
            request = NoticeRequest(device=record, counts=record.counts, in_reply_to=None)
            (notice,) = await number_notices(tx, [request], now=now())
            await queue_pushes(tx, [(device_id, seal(notice, site.key))], now=now())
    finally:
        await store.close()


async def test_a_push_left_in_the_outbox_goes_out_at_start_up_through_a_store_outage(
    collector_site: Site,
    mosquitto: MosquittoBroker,
    make_device: MakeDevice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device = await _told_it_is_short(collector_site, mosquitto, make_device)
    await _left_in_the_outbox(collector_site, device.device_id)
    monkeypatch.setattr(service_module, "unsent_pushes", _failing(unsent_pushes, times=2))

    with capture_logs() as logs:
        async with running_service(collector_site, mosquitto):
            pushed = await device.expect(
                lambda m: isinstance(m, OutOfComplianceNotice) and m.in_reply_to is None,
                timeout=5.0,
            )

    assert 1 == pushed.tags[TAG].shortfall
    assert 2 == len([e for e in logs if e["event"] == "collector.store_failed"])


async def test_an_outbox_of_more_than_a_page_goes_out_whole_at_start_up(
    collector_site: Site,
    mosquitto: MosquittoBroker,
    make_device: MakeDevice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pages of two rows here (10,000 in the service): a crash during a deposit to 50,000
    devices leaves more than a page, and what is beyond the first must not wait for the next
    reconnect."""
    device = await _told_it_is_short(collector_site, mosquitto, make_device)
    for _ in range(5):
        await _left_in_the_outbox(collector_site, device.device_id)

    async def paged(tx: Any, *, after: int = 0, limit: int = 2) -> Any:
        continued = {"after": after} if after else {}
        return await unsent_pushes(tx, limit=min(limit, 2), **continued)

    monkeypatch.setattr(service_module, "RESEND_PAGE", 2)
    monkeypatch.setattr(service_module, "unsent_pushes", paged)

    async with running_service(collector_site, mosquitto):
        for _ in range(5):
            await device.expect(
                lambda m: isinstance(m, OutOfComplianceNotice) and m.in_reply_to is None,
                timeout=5.0,
            )
        async with asyncio.timeout(5):
            while await _outbox_rows(collector_site):
                await asyncio.sleep(0.1)


async def test_a_push_of_the_last_batch_before_a_clean_stop_leaves_the_outbox(
    collector_site: Site,
    mosquitto: MosquittoBroker,
    make_device: MakeDevice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stopping paused reading, so the PUBACK of the last batch's pushes went unread and
    their rows stayed: the next start sent the same notice again."""
    await collector_site.deposit("PO-1", quantity=2)
    short, other = await make_device(), await make_device()
    commit = Ingest.commit
    deciding = asyncio.Event()

    async def slow_commit(self: Ingest, *args: Any) -> Any:
        deciding.set()
        await asyncio.sleep(0.5)
        return await commit(self, *args)

    async with running_service(collector_site, mosquitto) as service:
        for device in (short, other):
            await device.register(await collector_site.token())
        assert isinstance(await other.report({TAG: 1}), Authorization)
        monkeypatch.setattr(Ingest, "commit", slow_commit)
        await short.send(short.report_bytes({TAG: 2}))
        await deciding.wait()
        service.stop()
    pushed = await other.expect(lambda m: isinstance(m, OutOfComplianceNotice))

    assert 0 == await _outbox_rows(collector_site)
    assert 1 == pushed.tags[TAG].shortfall


class _SlowBroker(NativeMqttClient):
    """The service's client with a publish window of 2, whose PUBACKs can be held back (a
    slow broker), recording every payload it publishes."""

    made: ClassVar[list[_SlowBroker]] = []

    def __init__(self, **options: Any) -> None:
        super().__init__(**{**options, "max_pending": 2})
        self.holding = False
        self.held: list[tuple[int, int]] = []
        self.published: list[bytes] = []
        _SlowBroker.made.append(self)

    def _puback(self, packet_id: int, reason: int) -> None:
        if self.holding:
            self.held.append((packet_id, reason))
        else:
            super()._puback(packet_id, reason)

    def release(self) -> None:
        self.holding = False
        held, self.held = self.held, []
        for packet_id, reason in held:
            super()._puback(packet_id, reason)

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        mid = await super().publish(topic, payload, qos)
        self.published.append(payload)
        return mid


async def test_a_push_waiting_for_window_room_is_not_resent_by_the_reconnection_too(
    collector_site: Site,
    mosquitto: MosquittoBroker,
    make_device: MakeDevice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pushes of a deposit wait for room in a full window when the connection drops: the
    resend after the reconnection used to publish them as well, each one twice."""
    monkeypatch.setattr(service_module, "NativeMqttClient", _SlowBroker)
    _SlowBroker.made.clear()
    await collector_site.deposit("PO-1", quantity=1)
    async with running_service(collector_site, mosquitto):
        (client,) = _SlowBroker.made
        for _ in range(5):
            device = await make_device()
            await device.register(await collector_site.token())
            await device.report({TAG: 1})
        client.holding = True
        client.published.clear()
        await collector_site.deposit("PO-2", quantity=10)
        async with asyncio.timeout(5):
            while client.pending < 2:
                await asyncio.sleep(0.01)
        client._drop_link("the test drops the connection")
        async with asyncio.timeout(10):
            await client.wait_connected()
        await asyncio.sleep(0.3)
        client.release()
        async with asyncio.timeout(10):
            while await _outbox_rows(collector_site):
                await asyncio.sleep(0.05)

    assert len(set(client.published)) == len(client.published)
