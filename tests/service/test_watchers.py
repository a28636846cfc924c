"""The change feed and the license terms: an outage is waited out, a fault is skipped.

A change the service cannot handle (a row a newer version wrote, a broken constraint, a bug)
fails the same way every time. Retried, it would hold back every later change for good; not
caught, it would stop the service. It is logged and skipped instead, and the feed goes on.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from smartlic.collector.changes import changes_since
from smartlic.collector.service import watchers
from smartlic.collector.service.outbox import set_service_mark
from smartlic.collector.service.pushes import pushes_for_changes
from smartlic.collector.store import ConstraintError, StoreError, open_store
from smartlic.protocol import Authorization, OutOfComplianceNotice
from structlog.testing import capture_logs

from .support import Device, Site, now

if TYPE_CHECKING:
    from collections.abc import Callable

    from smartlic.collector.service.service import CollectorService

    from .support import MakeDevice

pytestmark = [pytest.mark.usefixtures("service"), pytest.mark.timeout(60)]
TAG = "network-advantage"
OTHER_TAG = "dna-essentials"
PUSH_DEADLINE = 3.0


def _pushed(kind: type) -> Callable[[object], bool]:
    return lambda m: isinstance(m, kind) and getattr(m, "in_reply_to", 0) is None


async def _short_device(site: Site, make_device: MakeDevice) -> Device:
    """A device told it is out of compliance: it uses 2 licenses of a pool of 1."""
    await site.deposit("PO-1", quantity=1)
    device = await make_device()
    await device.register(await site.token())
    assert isinstance(await device.report({TAG: 2}), OutOfComplianceNotice)
    return device


async def _latest_change(site: Site) -> int:
    rows = await site.query("SELECT COALESCE(MAX(id), 0) AS id FROM changes")
    return int(rows[0]["id"])


async def _append_raw_change(site: Site, kind: str, detail: str) -> None:
    store = await open_store(site.db)
    try:
        async with store.write() as tx:
            await tx.execute(
                "INSERT INTO changes (at, kind, account_id, va_ids, detail) VALUES (?, ?, ?, ?, ?)",
                (now(), kind, None, "1", detail),
            )
    finally:
        await store.close()


def _failing_at(change_id: int, fault: Exception, *, times: int | None = None) -> Any:
    """``pushes_for_changes``, raising ``fault`` for any range that holds ``change_id``
    (only the first ``times`` times, when given)."""
    failures = 0

    async def pushes(tx: Any, last_seen: int, *, now: int, actor: str, limit: int = 1000) -> Any:
        nonlocal failures
        ids = [c.id for c in await changes_since(tx, last_seen, limit=limit)]
        if change_id in ids and (times is None or failures < times):
            failures += 1
            raise fault
        return await pushes_for_changes(tx, last_seen, now=now, actor=actor, limit=limit)

    return pushes


@pytest.mark.parametrize(
    ("kind", "detail"),
    [("order.split", '{"flips": [], "devices": []}'), ("order.deposit", "{not json")],
    ids=["unknown-kind", "unreadable-detail"],
)
async def test_a_change_this_version_cannot_read_is_skipped_and_the_next_is_pushed(
    collector_site: Site, make_device: MakeDevice, kind: str, detail: str
) -> None:
    device = await _short_device(collector_site, make_device)
    unreadable = await _latest_change(collector_site) + 1

    with capture_logs() as logs:
        await _append_raw_change(collector_site, kind, detail)
        await collector_site.deposit("PO-2", quantity=5)
        pushed = await device.expect(_pushed(Authorization), timeout=PUSH_DEADLINE)

    assert 6 == pushed.tags[TAG].entitled
    assert [unreadable] == [e["change"] for e in logs if e["event"] == "collector.change_skipped"]


@pytest.mark.parametrize(
    "fault",
    [ConstraintError("UNIQUE constraint failed"), RuntimeError("a bug")],
    ids=["constraint", "bug"],
)
async def test_a_change_whose_handling_fails_is_skipped_and_the_next_is_pushed(
    collector_site: Site,
    make_device: MakeDevice,
    monkeypatch: pytest.MonkeyPatch,
    fault: Exception,
) -> None:
    device = await _short_device(collector_site, make_device)
    poisoned = await _latest_change(collector_site) + 1
    monkeypatch.setattr(watchers, "pushes_for_changes", _failing_at(poisoned, fault))

    with capture_logs() as logs:
        await collector_site.deposit("PO-2", tag=OTHER_TAG, quantity=5)
        await collector_site.deposit("PO-3", quantity=5)
        pushed = await device.expect(_pushed(Authorization), timeout=PUSH_DEADLINE)

    assert 6 == pushed.tags[TAG].entitled
    assert [poisoned] == [e["change"] for e in logs if e["event"] == "collector.change_skipped"]


async def test_a_store_outage_while_handling_a_change_is_waited_out_not_skipped(
    collector_site: Site, make_device: MakeDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    device = await _short_device(collector_site, make_device)
    covering = await _latest_change(collector_site) + 1
    outage = StoreError("database is locked")
    monkeypatch.setattr(watchers, "pushes_for_changes", _failing_at(covering, outage, times=3))

    with capture_logs() as logs:
        await collector_site.deposit("PO-2", quantity=5)
        pushed = await device.expect(_pushed(Authorization), timeout=PUSH_DEADLINE)

    assert 6 == pushed.tags[TAG].entitled
    assert [] == [e for e in logs if e["event"] == "collector.change_skipped"]
    assert 3 == len([e for e in logs if e["event"] == "collector.store_failed"])


async def test_terms_whose_handling_fails_are_skipped_and_the_service_goes_on(
    collector_site: Site, make_device: MakeDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The term's end is not pushed, but the device's next report is decided without it."""

    async def failing(*_args: Any, **_kwargs: Any) -> Any:
        message = "a bug"
        raise RuntimeError(message)

    monkeypatch.setattr(watchers, "pushes_for_expiry", failing)
    ends = now() + 2
    await collector_site.deposit("PO-1", quantity=5, term=(now() - 100, ends))
    device = await make_device()
    await device.register(await collector_site.token())
    assert isinstance(await device.report({TAG: 2}), Authorization)

    with capture_logs() as logs:
        async with asyncio.timeout(10):
            while not any(e["event"] == "collector.license_terms_skipped" for e in logs):
                await asyncio.sleep(0.1)
        answer = await device.report({TAG: 2})

    assert now() >= ends
    assert isinstance(answer, OutOfComplianceNotice)
    assert 0 == answer.tags[TAG].entitled


async def test_terms_whose_skip_cannot_be_written_are_not_said_to_be_skipped(
    collector_site: Site, make_device: MakeDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store is down as well: the terms stay due, to be tried again."""

    async def failing(*_args: Any, **_kwargs: Any) -> Any:
        message = "a bug"
        raise RuntimeError(message)

    async def store_down_for_expiry(tx: Any, name: str, value: int) -> None:
        if name == watchers.EXPIRY_MARK:
            message = "disk I/O error"
            raise StoreError(message)
        await set_service_mark(tx, name, value)

    monkeypatch.setattr(watchers, "pushes_for_expiry", failing)
    monkeypatch.setattr(watchers, "set_service_mark", store_down_for_expiry)
    await collector_site.deposit("PO-1", quantity=5, term=(now() - 100, now() + 1))
    device = await make_device()
    await device.register(await collector_site.token())

    with capture_logs() as logs:
        async with asyncio.timeout(10):
            while not any(e["event"] == "collector.license_terms_failed" for e in logs):
                await asyncio.sleep(0.1)

    assert [] == [e for e in logs if e["event"] == "collector.license_terms_skipped"]
    assert ["expiry"] == [e["task"] for e in logs if e["event"] == "collector.store_failed"]


async def test_a_push_that_fails_to_publish_waits_in_the_outbox_and_no_change_is_blamed(
    collector_site: Site,
    make_device: MakeDevice,
    service: CollectorService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The change was handled and committed; only the publishing broke. Blamed on the change,
    the failure would send the feed one change at a time and could skip the next one."""
    device = await _short_device(collector_site, make_device)
    client = service._require_client()
    publish = client.publish
    failures: list[str] = []

    async def failing_once(topic: str, payload: bytes, qos: int = 1) -> int:
        if not failures:
            failures.append(topic)
            message = "the client broke"
            raise RuntimeError(message)
        return await publish(topic, payload, qos)

    monkeypatch.setattr(client, "publish", failing_once)

    with capture_logs() as logs:
        await collector_site.deposit("PO-2", quantity=5)
        async with asyncio.timeout(PUSH_DEADLINE):
            while not any(e["event"] == "collector.publish_failed" for e in logs):
                await asyncio.sleep(0.05)
    outbox = await collector_site.query("SELECT device_id FROM notice_outbox")

    assert [device.device_id] == [r["device_id"] for r in outbox]
    assert [] == [
        e for e in logs if e["event"] in {"collector.changes_failed", "collector.change_skipped"}
    ]
