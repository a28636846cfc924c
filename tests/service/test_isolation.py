"""A message that breaks the service itself is kept as a dead letter; the rest goes on.

A failed constraint is such a fault too, not a store outage: retried as it is, the batch would
stop intake behind it for good. A store outage while keeping the dead letter is waited out.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from smartlic.collector.receipts import add_dead_letters as original_add
from smartlic.collector.service import service as service_module
from smartlic.collector.service.ingest import Ingest
from smartlic.collector.store import ConstraintError, StoreError
from smartlic.protocol import Authorization, ErrorCode

if TYPE_CHECKING:
    from smartlic.mqtt.broker import MosquittoBroker

    from .support import MakeDevice, Site

from .conftest import running_service

pytestmark = [pytest.mark.timeout(60)]
TAG = "network-advantage"
POISON = "poison"


def _poisoned(fault: Exception) -> Any:
    original = Ingest._report

    async def report(self: Ingest, tx: Any, batch: Any, item: Any, message: Any) -> None:
        if POISON in message.counts:
            raise fault
        await original(self, tx, batch, item, message)

    return report


@pytest.mark.parametrize(
    "fault",
    [ConstraintError("UNIQUE constraint failed"), RuntimeError("a bug")],
    ids=["constraint", "bug"],
)
async def test_the_message_that_breaks_a_batch_is_buried_and_the_rest_answered(
    collector_site: Site,
    mosquitto: MosquittoBroker,
    make_device: MakeDevice,
    monkeypatch: pytest.MonkeyPatch,
    fault: Exception,
) -> None:
    await collector_site.deposit("PO-1", quantity=5)
    token = await collector_site.token()
    async with running_service(collector_site, mosquitto, batch_linger_ms=200.0):
        healthy, sick = await make_device(), await make_device()
        await healthy.register(token)
        await sick.register(token)
        monkeypatch.setattr(Ingest, "_report", _poisoned(fault))
        await sick.send(sick.report_bytes({POISON: 1}))
        answer = await healthy.report({TAG: 2})
    letters = await collector_site.dead_letters()

    assert isinstance(answer, Authorization)
    assert [(int(ErrorCode.INTERNAL_ERROR), sick.device_id)] == [
        (d["code"], d["device_id"]) for d in letters
    ]


async def test_a_store_outage_while_burying_is_waited_out_and_the_message_still_buried(
    collector_site: Site,
    mosquitto: MosquittoBroker,
    make_device: MakeDevice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failures = 0

    async def add_dead_letters(tx: Any, letters: Any) -> None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise StoreError("database is locked")
        await original_add(tx, letters)

    await collector_site.deposit("PO-1", quantity=5)
    token = await collector_site.token()
    async with running_service(collector_site, mosquitto):
        healthy, sick = await make_device(), await make_device()
        await healthy.register(token)
        await sick.register(token)
        monkeypatch.setattr(Ingest, "_report", _poisoned(RuntimeError("a bug")))
        monkeypatch.setattr(service_module, "add_dead_letters", add_dead_letters)
        await sick.send(sick.report_bytes({POISON: 1}))
        async with asyncio.timeout(10):
            while not (letters := await collector_site.dead_letters()):
                await asyncio.sleep(0.1)
        answer = await healthy.report({TAG: 2})

    assert isinstance(answer, Authorization)
    assert 2 == failures
    assert [sick.device_id] == [d["device_id"] for d in letters]
