"""The core under arbitrary input: it never crashes, never reuses a seq, never loses the latest.

Hypothesis drives one core with random interleavings of usage changes, clock steps (also
backwards), disconnections, collector outages, and answers delivered late, twice, out of order
or not at all, plus garbage and forged notices.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent_support import T0, Harness, new_core
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scripted_collector import collector_key
from smartlic.agent.actions import Persist, Publish, ReportQueued
from smartlic.agent.core import CoreSettings
from smartlic.agent.snapshot import decode_snapshot, encode_snapshot
from smartlic.agent.states import LicenseState
from smartlic.protocol import seal

if TYPE_CHECKING:
    from smartlic.agent.actions import Action

TAG = "network-advantage"
FORGER = collector_key(bytes(range(200, 232)))

operations = st.lists(
    st.one_of(
        st.tuples(st.just("usage"), st.integers(0, 20)),
        st.tuples(st.just("time"), st.integers(-7200, 200_000)),
        st.tuples(st.just("link"), st.booleans()),
        st.tuples(st.just("collector"), st.booleans()),
        st.tuples(st.just("deliver"), st.integers(0, 50)),
        st.tuples(st.just("replay"), st.integers(0, 50)),
        st.tuples(st.just("push"), st.booleans()),
        st.tuples(st.just("garbage"), st.binary(max_size=64)),
    ),
    max_size=60,
)


def apply(
    harness: Harness, op: str, arg: object, now: float, seen: list[tuple[str, bytes]]
) -> float:
    """Carry out one random operation; return the (possibly moved) clock."""
    device = harness.core.device_id
    if op == "usage" and isinstance(arg, int):
        harness.usage({TAG: arg}, now)
    elif op == "time" and isinstance(arg, int):
        now += arg
        harness.tick(now)
    elif op == "link":
        call = harness.core.connected if arg else harness.core.disconnected
        harness.run(call(now), now)
    elif op == "collector":
        harness.script.answer_reports = bool(arg)
    elif op == "deliver" and harness.held and isinstance(arg, int):
        message = harness.held.pop(arg % len(harness.held))
        seen.append(message)
        harness.receive(message, now)
    elif op == "replay" and seen and isinstance(arg, int):
        harness.receive(seen[arg % len(seen)], now)
    elif op == "push":
        topic, payload = harness.script.push(device, now)
        if not arg:
            notice = harness.script.compliance(device, int(now), in_reply_to=None)
            payload = seal(notice, FORGER)
        harness.receive((topic, payload), now)
    elif op == "garbage" and isinstance(arg, bytes):
        harness.receive((harness.core.downlink, arg), now)
    return now


def check_batch(batch: list[Action], outbox_limit: int, persisted: set[int]) -> None:
    """A report is on disk before its first transmission; the outbox stays in bounds."""
    for action in batch:
        if isinstance(action, Persist):
            persisted |= {r.seq for r in action.snapshot.outbox}
            assert len(action.snapshot.outbox) <= outbox_limit
        elif isinstance(action, Publish) and action.seq is not None and action.attempt == 1:
            assert action.seq in persisted


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations, st.sampled_from([1, 2, None]))
def test_the_core_survives_any_interleaving(
    ops: list[tuple[str, object]], window: int | None
) -> None:
    limit = 4
    harness = Harness(new_core(CoreSettings(outbox_limit=limit, window=window)))
    harness.ack = window is not None
    harness.script.entitled = {TAG: 10}
    harness.deliver = False
    now = T0
    harness.start(now)
    harness.register(now)
    harness.release(now)
    seen: list[tuple[str, bytes]] = []
    queued: list[int] = []
    persisted: set[int] = set()
    for op, arg in ops:
        before = len(harness.actions)
        now = apply(harness, op, arg, now + 1, seen)
        new = harness.actions[before:]
        check_batch(new, limit, persisted)
        queued += [a.seq for a in new if isinstance(a, ReportQueued)]
    assert sorted(set(queued)) == queued
    assert harness.core.state in LicenseState
    assert harness.core.outbox_depth <= limit
    snapshot = harness.core.snapshot()
    assert snapshot == decode_snapshot(encode_snapshot(snapshot))
    converge(harness, now)


def converge(harness: Harness, now: float) -> None:
    """Once the broker and the collector are back, the latest usage gets through."""
    harness.script.answer_reports = True
    harness.deliver = True
    harness.run(harness.core.connected(now), now)
    harness.release(now)
    for _ in range(10):
        now += 4000
        harness.tick(now)
    device = harness.core.device_id
    usage = {t: n for t, n in harness.core.snapshot().usage.items() if n}
    reported = {t: n for t, n in harness.script.latest_counts.get(device, {}).items() if n}
    assert (0, usage) == (harness.core.outbox_depth, reported)
