"""Two collectors in one shared-subscription group, on one database, split the load.

Each decides its batches against device records it may have kept from its last batch; the
other collector's commits must make it read them again, or a device's sequence numbers and
counts would be judged on stale records.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from smartlic.protocol import Authorization

from .conftest import running_service

if TYPE_CHECKING:
    from smartlic.mqtt.broker import MosquittoBroker

    from .support import Device, MakeDevice, Site

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
TAG = "network-advantage"
DEVICES = 8
REPORTS = 12


def _count(device: int, seq: int) -> int:
    return 1 + (device + seq) % 4


async def _reports(n: int, device: Device) -> list[object]:
    return [await device.report({TAG: _count(n, seq)}) for seq in range(1, REPORTS + 1)]


async def test_two_collectors_share_the_reports_and_count_each_once(
    collector_site: Site, mosquitto: MosquittoBroker, make_device: MakeDevice
) -> None:
    await collector_site.deposit("PO-1", quantity=1_000)
    token = await collector_site.token()
    async with (
        running_service(collector_site, mosquitto, client_id="collector-a") as first,
        running_service(collector_site, mosquitto, client_id="collector-b") as second,
    ):
        fleet = [await make_device() for _ in range(DEVICES)]
        for device in fleet:
            await device.register(token)
        # Each device waits for an answer before its next report. The group may hand
        # consecutive reports of one device to different collectors, and one overtaken by a
        # later report that the other collector accepted first is refused as stale (SPEC §4;
        # the counts stay right, the later report carries the latest), which is not what this
        # test is about.
        answers = await asyncio.gather(*(_reports(n, device) for n, device in enumerate(fleet)))
        handled = (first.processed, second.processed)
    accepted = await collector_site.query("SELECT COUNT(*) AS n FROM accepted_reports")
    assert all(isinstance(answer, Authorization) for each in answers for answer in each)
    assert DEVICES * REPORTS == accepted[0]["n"]
    assert sum(_count(n, REPORTS) for n in range(DEVICES)) == await collector_site.in_use(TAG)
    assert [] == await collector_site.dead_letters()
    assert all(handled), f"one collector got nothing: {handled}"
