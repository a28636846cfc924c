"""Pushes as term licenses start and end, whichever comes first: the clock, a batch, a change.

Time passes on a virtual clock. Term licenses start and end by it; devices report in
batches; an administrator deposits terms and transfers licenses; the service reads the change
feed and wakes for the terms at any moments, in any order. A small model keeps the licenses
(a transfer takes the lot the rules say, SPEC §3) and each device's usage. Afterwards, once the
feed is read and the terms applied, each device's newest notice must say what the model's pools
say at that time.
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from smartlic.collector.service.notices import number_notices
from smartlic.collector.service.pushes import pushes_for_expiry
from smartlic.collector.store import open_store
from smartlic.protocol import (
    Authorization,
    CollectorMessage,
    ComplianceNotice,
    OutOfComplianceNotice,
    open_message,
)

from . import ingest_support, support
from .ingest_support import changes_pushed, collector, devices, report
from .support import Device, Site

if TYPE_CHECKING:
    from smartlic.collector.service.ingest import Ingest

VAS = ("DEFAULT", "Engineering")
TAGS = ("a", "b")
FLEET = 3
START_LOTS = [
    ("DEFAULT", "a", 1, None),
    ("DEFAULT", "a", 1, (-100, 300)),
    ("DEFAULT", "b", 1, (-100, 600)),
    ("DEFAULT", "b", 1, (200, 900)),
    ("Engineering", "a", 1, (100, 500)),
]
"""(VA, tag, quantity, term from/to seconds after the start, or perpetual)."""

Step = tuple[Any, ...]
steps = st.one_of(
    st.tuples(st.just("time"), st.sampled_from([30, 120, 250])),
    st.tuples(st.just("poll")),
    st.tuples(st.just("expire")),
    st.tuples(
        st.just("report"),
        st.integers(0, FLEET - 1),
        st.dictionaries(st.sampled_from(TAGS), st.integers(0, 2), max_size=2),
    ),
    st.tuples(st.just("transfer"), st.sampled_from(TAGS), st.sampled_from(VAS)),
    st.tuples(
        st.just("term"),
        st.sampled_from(TAGS),
        st.sampled_from(VAS),
        st.sampled_from([-50, 60, 250]),
        st.sampled_from([60, 300]),
    ),
)


@dataclass
class Lot:
    va: str
    tag: str
    quantity: int
    term: tuple[int, int] | None

    def active(self, at: int) -> bool:
        return self.term is None or self.term[0] <= at < self.term[1]


@dataclass
class World:
    """The model, the clock, and what the devices were sent."""

    at: int
    lots: list[Lot]
    counts: list[dict[str, int]] = field(default_factory=lambda: [{} for _ in range(FLEET)])
    told: list[tuple[str, CollectorMessage]] = field(default_factory=list)

    def transfer(self, tag: str, source: str, target: str) -> bool:
        """Move one active license, the one the rules take first; whether there was one."""
        lots = [lot for lot in self.lots if lot.va == source and lot.tag == tag]
        lots = [lot for lot in lots if lot.quantity > 0 and lot.active(self.at)]
        if not lots:
            return False
        lot = min(lots, key=lambda lot: (lot.term is not None, -(lot.term or (0, 0))[1]))
        lot.quantity -= 1
        self.lots.append(Lot(va=target, tag=tag, quantity=1, term=lot.term))
        return True

    def short(self, tag: str) -> bool:
        """Whether the DEFAULT VA's pool of ``tag``, where the fleet is, is short now."""
        used = sum(c.get(tag, 0) for c in self.counts)
        entitled = sum(
            lot.quantity
            for lot in self.lots
            if lot.va == "DEFAULT" and lot.tag == tag and lot.active(self.at)
        )
        return used > entitled


async def _expire(site: Site, since: int, at: int) -> list[CollectorMessage]:
    """The expiry watcher, once and without its task: the notices the terms in (since, at]
    push (numbered, not signed)."""
    store = await open_store(site.db)
    try:
        async with store.write() as tx:
            requests = await pushes_for_expiry(tx, since, at, actor="collector")
            return await number_notices(tx, requests, now=at)
    finally:
        await store.close()


def _note(world: World, payloads: list[bytes]) -> None:
    for payload in payloads:
        message = open_message(payload).message
        assert isinstance(message, CollectorMessage)
        world.told.append((message.device_id, message))


async def _step(
    site: Site, ingest: Ingest, world: World, fleet: list[Device], step: Step, marks: list[int]
) -> None:
    kind = step[0]
    if kind == "time":
        world.at += step[1]
    elif kind == "poll":
        marks[0], built = await changes_pushed(ingest.store, marks[0], at=world.at)
        world.told += [(m.device_id, m) for m in built]
    elif kind == "expire":
        world.told += [(m.device_id, m) for m in await _expire(site, marks[1], world.at)]
        marks[1] = world.at
    elif kind == "report":
        n, counts = step[1], step[2]
        prepared = await ingest.prepare([report(fleet[n], counts, issued_at=world.at)])
        _note(world, [o.payload for o in await ingest.commit(prepared, world.at)])
        world.counts[n] = {t: c for t, c in {**world.counts[n], **counts}.items() if c}
    elif kind == "transfer":
        tag, source = step[1], step[2]
        target = VAS[1 - VAS.index(source)]
        if world.transfer(tag, source, target):
            await site.transfer(1, from_va=source, to_va=target, tag=tag)
    elif kind == "term":
        tag, va, offset, length = step[1:]
        term = (world.at + offset, world.at + offset + length)
        await site.deposit(f"PO-{len(world.lots)}", tag=tag, quantity=1, va=va, term=term)
        world.lots.append(Lot(va=va, tag=tag, quantity=1, term=term))


async def _run(plan: list[Step], start: int) -> tuple[World, list[Device]]:
    world = World(
        at=start,
        lots=[
            Lot(va=va, tag=tag, quantity=q, term=(start + t[0], start + t[1]) if t else None)
            for va, tag, q, t in START_LOTS
        ],
    )
    clock = mock.Mock(side_effect=lambda: world.at)
    with (
        tempfile.TemporaryDirectory() as folder,
        mock.patch.object(support, "now", clock),
        mock.patch.object(ingest_support, "now", clock),
    ):
        site = await Site.create(Path(folder))
        await site.account("ACME", "Engineering")
        for n, lot in enumerate(world.lots):
            await site.deposit(
                f"PO-START-{n}", tag=lot.tag, quantity=lot.quantity, va=lot.va, term=lot.term
            )
        fleet = await devices(site, *(f"W{n}" for n in range(FLEET)))
        (row,) = await site.query("SELECT COALESCE(MAX(id), 0) AS id FROM changes")
        marks = [int(row["id"]), start]
        async with collector(site) as ingest:
            for step in [*plan, ("poll",), ("expire",)]:
                await _step(site, ingest, world, fleet, step, marks)
    return world, fleet


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(steps, max_size=14))
@example(  # found by this test: the clock ended a term of b, then transfers of a and b
    plan=[
        ("transfer", "b", "DEFAULT"),
        ("report", 0, {"a": 0, "b": 1}),
        ("time", 250),
        ("transfer", "a", "DEFAULT"),
        ("report", 0, {}),
        ("transfer", "b", "DEFAULT"),
    ]
)
def test_every_device_is_left_told_its_status_whatever_the_clock_did(plan: list[Step]) -> None:
    world, fleet = asyncio.run(_run(plan, support.now()))
    for n, device in enumerate(fleet):
        notices = [
            m for d, m in world.told if d == device.device_id and isinstance(m, ComplianceNotice)
        ]
        if not notices:
            assert not world.counts[n]
            continue
        newest = max(notices, key=lambda m: m.notice_seq)
        short = any(world.short(tag) for tag in world.counts[n])
        expected = OutOfComplianceNotice if short else Authorization
        event(expected.__name__)
        assert expected is type(newest), (device.device_id, world.counts[n])
