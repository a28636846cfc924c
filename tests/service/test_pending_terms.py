"""A term license that started or ended since its pool was last evaluated, met by a batch
or a read of the change feed before the expiry watcher comes.

A device is pushed when its status now is not the one it was last told; judged from the
flips alone, a device short on two pools at once, one by a report or an administrator and
one by the clock, was told by none of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartlic.protocol import Authorization, OutOfComplianceNotice, open_message

from .ingest_support import changes_pushed, collector, decide, devices, report
from .support import now

if TYPE_CHECKING:
    from smartlic.collector.service.outbox import Outgoing

    from .support import Device, Site

TERM = 60


async def latest_change(site: Site) -> int:
    (row,) = await site.query("SELECT COALESCE(MAX(id), 0) AS id FROM changes")
    return int(row["id"])


def _told(device: Device, sent: list[Outgoing]) -> list[type]:
    return [type(open_message(o.payload).message) for o in sent if o.device_id == device.device_id]


async def test_a_batch_after_a_term_ended_pushes_to_a_device_it_made_short_on_both_pools(
    collector_site: Site,
) -> None:
    start = now()
    await collector_site.deposit("PO-A", tag="a", quantity=1)
    await collector_site.deposit("PO-B", tag="b", quantity=1, term=(start - 100, start + TERM))
    quiet, busy = await devices(collector_site, "T1", "T2")
    async with collector(collector_site) as ingest:
        first = await decide(ingest, [report(quiet, {"a": 1, "b": 1})])
        later = start + 2 * TERM
        prepared = await ingest.prepare([report(busy, {"a": 1}, issued_at=later)])
        sent = await ingest.commit(prepared, later)

    assert Authorization is type(open_message(first.items[0].answer or b"").message)
    assert [OutOfComplianceNotice] == _told(quiet, sent)


async def test_a_batch_after_a_term_ended_records_that_pool_too(collector_site: Site) -> None:
    """So the expiry watcher, when it comes, finds nothing left to push."""
    start = now()
    await collector_site.deposit("PO-A", tag="a", quantity=1)
    await collector_site.deposit("PO-B", tag="b", quantity=1, term=(start - 100, start + TERM))
    quiet, busy = await devices(collector_site, "T3", "T4")
    async with collector(collector_site) as ingest:
        await decide(ingest, [report(quiet, {"b": 1})])
        later = start + 2 * TERM
        prepared = await ingest.prepare([report(busy, {"a": 1}, issued_at=later)])
        sent = await ingest.commit(prepared, later)
    rows = await collector_site.query("SELECT tag, status FROM pool_usage ORDER BY tag")

    assert [OutOfComplianceNotice] == _told(quiet, sent)
    assert [("a", 0), ("b", 1)] == [(r["tag"], r["status"]) for r in rows]


async def test_a_change_read_after_a_term_ended_pushes_to_a_device_short_on_both_pools(
    collector_site: Site,
) -> None:
    """The administrator's change was evaluated before the term ended, the feed is read
    after: the device was told what the recorded statuses said, so it is judged from them."""
    start = now()
    await collector_site.deposit("PO-A", tag="a", quantity=1)
    await collector_site.deposit("PO-B", tag="b", quantity=1, term=(start - 100, start + TERM))
    (quiet,) = await devices(collector_site, "T5")
    async with collector(collector_site) as ingest:
        await decide(ingest, [report(quiet, {"a": 1, "b": 1})])
        since = await latest_change(collector_site)
        await collector_site.transfer(1, from_va="DEFAULT", to_va="Engineering", tag="a")
        _, pushed = await changes_pushed(ingest.store, since, at=start + 2 * TERM)

    assert [(quiet.device_id, OutOfComplianceNotice)] == [(m.device_id, type(m)) for m in pushed]


async def test_a_change_judged_before_its_term_started_and_read_after_pushes_the_start(
    collector_site: Site,
) -> None:
    """The command took its clock before it waited for the store's lock (or on another
    host): the term started between that clock and the expiry watcher's mark, which would
    never look back at it, and the device stayed out of compliance until it next reported."""
    start = now()
    (short,) = await devices(collector_site, "T6")
    async with collector(collector_site) as ingest:
        first = await decide(ingest, [report(short, {"a": 2})])
        since = await latest_change(collector_site)
        await collector_site.deposit("PO-A", tag="a", quantity=5, term=(start + 2, start + TERM))
        _, pushed = await changes_pushed(ingest.store, since, at=start + 4)

    assert OutOfComplianceNotice is type(open_message(first.items[0].answer or b"").message)
    assert [(short.device_id, Authorization)] == [(m.device_id, type(m)) for m in pushed]
