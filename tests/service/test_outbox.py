"""The outbox of pushed notices: a row is deleted once the broker has the push, whatever fails.

A push is written to the outbox in the transaction that decided it and deleted once the broker
acknowledged it, so that a crash in between sends it again rather than losing it. A store
outage at the moment of deleting must not leave the row behind: it would be sent again at the
next reconnect or restart, long after it was delivered.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from smartlic.collector.service import service as service_module
from smartlic.collector.service.outbox import forget_pushes
from smartlic.collector.store import StoreError
from smartlic.protocol import Authorization, OutOfComplianceNotice
from structlog.testing import capture_logs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from smartlic.collector.store import Transaction

    from .support import MakeDevice, Site

pytestmark = [pytest.mark.usefixtures("service"), pytest.mark.timeout(60)]
TAG = "network-advantage"


def _failing(times: int) -> Any:
    """``forget_pushes``, failing as an outage the first ``times`` times."""
    failures = 0

    async def forget(tx: Transaction, outbox_ids: Sequence[int]) -> None:
        nonlocal failures
        if failures < times:
            failures += 1
            raise StoreError("database is locked")
        await forget_pushes(tx, outbox_ids)

    return forget


async def _outbox_rows(site: Site) -> int:
    (row,) = await site.query("SELECT COUNT(*) AS n FROM notice_outbox")
    return int(row["n"])


async def test_a_push_delivered_during_a_store_outage_leaves_the_outbox_once_the_store_is_back(
    collector_site: Site, make_device: MakeDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    await collector_site.deposit("PO-1", quantity=1)
    device = await make_device()
    await device.register(await collector_site.token())
    assert isinstance(await device.report({TAG: 2}), OutOfComplianceNotice)
    monkeypatch.setattr(service_module, "forget_pushes", _failing(times=2))

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
