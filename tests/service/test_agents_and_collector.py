"""Real agent cores against the real collector's batches, with the network in between lossy.

No broker: what the agents publish waits in a queue that the collector takes in batches of any
size (two collectors on one database take turns, as two members of a share group), and what
the collectors send waits per device until it is delivered, lost, or the report behind it is
delivered again (a broker redelivering what it saw no PUBACK for).
Meanwhile usage changes, time passes, an administrator moves licenses and devices between VAs,
deposits term licenses and deregisters devices, the expiry watcher looks at any moments, a
collector restarts (forgetting what it kept in memory, and catching up on the terms), the store
fails in the middle of a batch, and an agent crashes and starts again from what it persisted
(or from an older copy of it). Once the network is fair again and every agent has reported
once more, every agent must end where the collector's records say it is: the same counts, and
authorized exactly when none of the pools of the tags it uses is short.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import aiosqlite
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from smartlic.agent.actions import Persist, Publish
from smartlic.agent.core import AgentCore
from smartlic.agent.states import LicenseState
from smartlic.collector.service.notices import number_notices
from smartlic.collector.service.pushes import pushes_after_downtime, pushes_for_expiry
from smartlic.collector.store import StoreError
from smartlic.protocol import KeyType, SigningKey, Udi, seal

from . import support
from .ingest_support import changes_pushed, collector, uplink_message
from .support import Site, now

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from smartlic.agent.actions import Action
    from smartlic.agent.snapshot import Snapshot
    from smartlic.collector.service.ingest import Ingest
    from smartlic.mqtt.common import MqttMessage

TAGS = ("a", "b")
AGENTS = 3
LICENSES = {"a": 2, "b": 1}
HOUR = 3600.0

transfers = st.tuples(st.just("transfer"), st.integers(0, 1), st.just(0), st.sampled_from(TAGS))
steps = st.one_of(
    transfers,
    st.tuples(
        st.just("usage"), st.integers(0, AGENTS - 1), st.integers(0, 3), st.sampled_from(TAGS)
    ),
    st.tuples(
        st.just("time"),
        st.integers(1, 4),
        st.sampled_from([1.0, 60.0, HOUR, 10 * HOUR]),
        st.just(""),
    ),
    st.tuples(st.just("collect"), st.integers(1, 8), st.sampled_from([0, 1]), st.just("")),
    st.tuples(st.just("leave"), st.integers(0, AGENTS - 1), st.just(0), st.just("")),
    st.tuples(st.just("join"), st.integers(0, AGENTS - 1), st.just(0), st.just("")),
    st.tuples(
        st.just("outage"), st.integers(0, AGENTS - 1), st.sampled_from([60.0, HOUR]), st.just("")
    ),
    st.tuples(st.just("deliver"), st.integers(0, AGENTS - 1), st.just(0), st.just("")),
    st.tuples(st.just("lose"), st.integers(0, AGENTS - 1), st.just(0), st.just("")),
    st.tuples(st.just("redeliver"), st.integers(0, 20), st.just(0), st.just("")),
    st.tuples(st.just("transfer"), st.integers(0, 1), st.just(0), st.sampled_from(TAGS)),
    st.tuples(
        st.just("term"), st.integers(0, 2), st.sampled_from([HOUR, 5 * HOUR]), st.sampled_from(TAGS)
    ),
    st.tuples(st.just("expire"), st.just(0), st.just(0), st.just("")),
    st.tuples(st.just("move"), st.integers(0, AGENTS - 1), st.just(0), st.just("")),
    st.tuples(st.just("drop"), st.integers(0, AGENTS - 1), st.just(0), st.just("")),
    st.tuples(st.just("restart"), st.integers(0, 1), st.just(0), st.just("")),
    st.tuples(st.just("fail"), st.integers(1, 8), st.integers(1, 16), st.just("")),
    st.tuples(
        st.just("crash"), st.integers(0, AGENTS - 1), st.sampled_from([0, 0, 1]), st.just("")
    ),
)
VAS = ("DEFAULT", "Engineering")
TERM_STARTS = (-60.0, 600.0, 2 * HOUR)
"""When a term license deposited by a ``term`` step starts, from the network's now."""
Step = tuple[str, int, float, str]


@dataclass
class Network:
    """The broker, as far as delivery goes: QoS 1, in order, at least once."""

    agents: list[AgentCore]
    collectors: list[Ingest]
    """Two collectors on one database, as two members of a share group."""
    stack: contextlib.AsyncExitStack
    site: Site
    token: str
    now: float
    up: list[MqttMessage] = field(default_factory=list)
    taken: list[MqttMessage] = field(default_factory=list)
    """Every message the collector took, so any may be redelivered, even after newer ones (as
    with several collectors in one share group)."""
    down: dict[str, list[bytes]] = field(default_factory=dict)
    keys: list[SigningKey] = field(default_factory=list)
    draw: random.Random = field(default_factory=random.Random)
    saved: dict[str, list[Snapshot]] = field(default_factory=dict)
    """What each agent persisted, oldest first: what a crash or a restore starts from."""
    mark: int = 0
    expired_until: int = 0

    def run(self, agent: AgentCore, actions: list[Action]) -> None:
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            if isinstance(action, Persist):
                self.saved.setdefault(agent.device_id, []).append(action.snapshot)
            elif isinstance(action, Publish):
                self.up.append(uplink_message(action.topic, action.payload))
                queue += agent.publish_acked(action, self.now)

    def crash(self, n: int, back: int, usage: dict[str, int]) -> None:
        """Agent ``n`` dies and starts again from what it persisted, ``back`` saves ago (a
        restore from an older copy), and reads its usage again.

        An older copy is restored only while it holds the registration and the pending
        request the latest one holds: one from before a (de)registration request went out
        knows nothing of it, and the answer, to a request the device has no record of, is
        rightly ignored (for a registration it could not even be verified), so the device and
        the collector part ways until an operator registers it again.
        """
        saved = self.saved.get(self.agents[n].device_id, [])
        if len(saved) <= back or _registration_of(saved[-1 - back]) != _registration_of(saved[-1]):
            return
        agent = AgentCore.restore(saved[-1 - back], key=self.keys[n], entropy=self.draw.randbytes)
        self.agents[n] = agent
        self.run(agent, agent.start(self.now) + agent.connected(self.now))
        self.run(agent, agent.usage_changed(usage, self.now))
        event("an agent crashed" if back == 0 else "an agent restored from an older copy")

    async def collect(self, count: int, by: int = 0, *, failing_at: int | None = None) -> None:
        """A collector takes ``count`` messages as one batch; with ``failing_at``, the store
        fails at that SQL statement of it (BEGIN and COMMIT count), and the batch, never
        acknowledged, is delivered again first."""
        batch, self.up = self.up[:count], self.up[count:]
        if not batch:
            return
        self.taken += batch
        try:
            with _store_failing_at(failing_at):
                sent = await self.collectors[by].process(batch, int(self.now))
        except StoreError:
            self.up[:0] = batch
            event("a batch failed in the store")
            return
        for outgoing in sent:
            self.down.setdefault(outgoing.device_id, []).append(outgoing.payload)

    def deliver(self, n: int) -> None:
        agent = self.agents[n]
        for payload in self.down.pop(agent.device_id, []):
            self.run(agent, agent.received(agent.downlink, payload, self.now))

    def tick(self, seconds: float) -> None:
        self.now += seconds
        for agent in self.agents:
            self.run(agent, agent.tick(self.now))

    async def poll_changes(self) -> None:
        """The service's change-feed loop, without its task: push what the changes call for."""
        store = self.collectors[0].store
        self.mark, built = await changes_pushed(store, self.mark, at=int(self.now))
        for message in built:
            self.down.setdefault(message.device_id, []).append(seal(message, self.site.key))

    async def expire(self) -> None:
        """The service's expiry watcher, without its task: push for the terms that started
        or ended since it last looked."""
        at = int(self.now)
        async with self.collectors[0].store.write() as tx:
            requests = await pushes_for_expiry(tx, self.expired_until, at, actor="collector")
            built = await number_notices(tx, requests, now=at)
        self.expired_until = at
        for message in built:
            self.down.setdefault(message.device_id, []).append(seal(message, self.site.key))

    async def restart(self, by: int) -> None:
        """A collector stops and starts again: a fresh ingest, with nothing in memory, that
        catches up on the terms that started or ended while it was down, as the service's
        startup does; the expiry watcher then looks from its start on."""
        self.collectors[by] = await self.stack.enter_async_context(collector(self.site))
        at = int(self.now)
        async with self.collectors[by].store.write() as tx:
            requests = await pushes_after_downtime(tx, now=at, actor="collector")
            built = await number_notices(tx, requests, now=at)
        self.expired_until = at
        for message in built:
            self.down.setdefault(message.device_id, []).append(seal(message, self.site.key))

    async def settle(self, *, through: float = HOUR) -> None:
        """A fair network until nothing moves for ``through``: everything sent is taken and
        delivered, and the terms are applied up to the end."""
        quiet = 0.0
        for _ in range(80):
            await self.expire()
            await self.collect(len(self.up))
            for n in range(len(self.agents)):
                self.deliver(n)
            if self.up or self.down:
                quiet = 0.0
                continue
            if quiet >= through:
                return
            self.tick(HOUR)
            quiet += HOUR
        raise AssertionError("the network did not settle")


def _registration_of(snapshot: Snapshot) -> tuple[bool, bytes | None]:
    pending = snapshot.pending
    return snapshot.state.registered, None if pending is None else pending.request_id


@contextlib.contextmanager
def _store_failing_at(statement: int | None) -> Iterator[None]:
    """SQLite failing (a disk I/O error) at the ``statement``-th call any connection makes."""
    if statement is None:
        yield
        return
    calls = 0

    def failing(name: str) -> Callable[..., Any]:
        original = getattr(aiosqlite.Connection, name)

        def call(self: aiosqlite.Connection, *args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == statement:
                raise sqlite3.OperationalError("disk I/O error")
            return original(self, *args, **kwargs)

        return call

    names = ("execute", "executemany", "execute_fetchall")
    with contextlib.ExitStack() as patches:
        for name in names:
            patches.enter_context(mock.patch.object(aiosqlite.Connection, name, failing(name)))
        yield


def _device_step(net: Network, step: Step, usage: list[dict[str, int]]) -> None:
    """What one device does: its usage changes, it leaves or joins, its link drops."""
    kind, n, amount, tag = step
    agent = net.agents[n]
    if kind == "usage":
        usage[n] = {**usage[n], tag: int(amount)}
        net.run(agent, agent.usage_changed(usage[n], net.now))
    elif kind == "leave" and agent.state.registered and agent.pending is None:
        net.run(agent, agent.deregister(net.now))
    elif kind == "join" and not agent.state.registered and agent.pending is None:
        net.run(agent, agent.register(net.token, net.now))
    elif kind == "outage":
        net.run(agent, agent.disconnected(net.now))
        net.tick(amount)
        net.run(agent, agent.connected(net.now))
    elif kind == "crash":
        net.crash(n, int(amount), usage[n])


def _network_step(net: Network, step: Step) -> None:
    """What the network does: time passes, messages are delivered, lost or redelivered."""
    kind, n, amount, _ = step
    if kind == "time":
        for _ in range(n):
            net.tick(amount)
    elif kind == "deliver":
        net.deliver(n)
    elif kind == "lose":
        net.down.pop(net.agents[n].device_id, None)
    elif kind == "redeliver" and net.taken:
        net.up.append(net.taken[n % len(net.taken)])


async def _apply(net: Network, step: Step, usage: list[dict[str, int]]) -> None:
    kind, n, amount, _ = step
    if kind in {"usage", "leave", "join", "outage", "crash"}:
        _device_step(net, step, usage)
    elif kind in {"time", "deliver", "lose", "redeliver"}:
        _network_step(net, step)
    elif kind == "collect":
        await net.collect(n, by=int(amount))
    elif kind == "fail":
        await net.collect(n, by=int(amount) % 2, failing_at=int(amount))
    elif kind in {"transfer", "term", "move", "drop"}:
        await _admin_step(net, step)
    elif kind == "restart":
        await net.restart(n)
        event("a collector restarted")
    elif kind == "expire":
        await net.expire()


async def _admin_step(net: Network, step: Step) -> None:
    """What the administrator does: move a license or a device between VAs, deposit a term
    license, deregister a device."""
    kind, n, amount, tag = step
    if kind in {"move", "drop"}:
        await _device_admin_step(net, kind, net.agents[n])
    elif kind == "transfer":
        vas = VAS
        at = int(net.now)
        rows = await net.site.query(
            "SELECT COALESCE(SUM(l.quantity), 0) AS n FROM licenses l JOIN virtual_accounts v"
            " ON v.id = l.va_id WHERE v.name = ? AND l.tag = ? AND (l.starts_at IS NULL"
            " OR (l.starts_at <= ? AND ? < l.ends_at))",
            (vas[n], tag, at, at),
        )
        if int(rows[0]["n"]) > 0:
            await net.site.transfer(1, from_va=vas[n], to_va=vas[1 - n], tag=tag)
            await net.poll_changes()
            event("licenses transferred")
    elif kind == "term":
        starts = int(net.now + TERM_STARTS[n])
        (row,) = await net.site.query("SELECT COUNT(*) AS n FROM orders")
        await net.site.deposit(
            f"PO-TERM-{row['n']}", tag=tag, quantity=1, term=(starts, starts + int(amount))
        )
        await net.poll_changes()
        event("a term license deposited")


async def _device_admin_step(net: Network, kind: str, agent: AgentCore) -> None:
    """Move a registered device to the other VA, or deregister it."""
    rows = await net.site.query(
        "SELECT v.name FROM devices d JOIN virtual_accounts v ON v.id = d.va_id"
        " WHERE d.device_id = ? AND d.state = 'registered'",
        (agent.device_id,),
    )
    if not rows:
        return
    udi = str(agent.udi)
    if kind == "move":
        await net.site.move(udi, VAS[1 - VAS.index(str(rows[0]["name"]))])
        event("a device moved")
    else:
        await net.site.deregister(udi)
        event("a device deregistered by the administrator")
    await net.poll_changes()


async def _final_state(
    site: Site, at: int
) -> tuple[set[str], dict[str, dict[str, int]], dict[str, bool]]:
    """The devices registered in the store, their counts, and whether each is authorized
    with the licenses active ``at`` that time."""
    registered = {
        str(r["device_id"])
        for r in await site.query("SELECT device_id FROM devices WHERE state = 'registered'")
    }
    usage = await site.query(
        "SELECT d.device_id, d.va_id, u.tag, u.count FROM device_usage u"
        " JOIN devices d ON d.id = u.device_id"
    )
    pools = await site.query(
        "SELECT p.va_id, p.tag, p.in_use, COALESCE((SELECT SUM(quantity) FROM licenses l"
        " WHERE l.va_id = p.va_id AND l.tag = p.tag AND (l.starts_at IS NULL OR"
        " (l.starts_at <= ? AND ? < l.ends_at))), 0) AS entitled FROM pool_usage p",
        (at, at),
    )
    short = {(r["va_id"], r["tag"]) for r in pools if int(r["in_use"]) > int(r["entitled"])}
    counts: dict[str, dict[str, int]] = {}
    authorized: dict[str, bool] = {}
    for row in usage:
        device = str(row["device_id"])
        counts.setdefault(device, {})[str(row["tag"])] = int(row["count"])
        if int(row["count"]) and (row["va_id"], row["tag"]) in short:
            authorized[device] = False
        authorized.setdefault(device, True)
    return registered, counts, authorized


async def _run(steps_taken: Sequence[Step], seed: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        site = await Site.create(Path(folder))
        await site.account("ACME", "Engineering")
        for n, (tag, quantity) in enumerate(LICENSES.items()):
            await site.deposit(f"PO-{n}", tag=tag, quantity=quantity)
        token = await site.token()
        draw = random.Random(seed)  # noqa: S311 -- reproducible entropy for the agents
        keys = [SigningKey.from_seed(KeyType.ED25519, draw.randbytes(32)) for _ in range(AGENTS)]
        agents = [
            AgentCore.new(
                Udi(product_id="ISR4331", serial=f"E{n}"), key=key, entropy=draw.randbytes
            )
            for n, key in enumerate(keys)
        ]
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(collector(site))
            second = await stack.enter_async_context(collector(site))
            (row,) = await site.query("SELECT COALESCE(MAX(id), 0) AS id FROM changes")
            net = Network(
                agents=agents,
                collectors=[first, second],
                stack=stack,
                keys=keys,
                draw=draw,
                site=site,
                token=token,
                now=float(now()),
                mark=int(row["id"]),
                expired_until=now(),
            )
            usage: list[dict[str, int]] = [{} for _ in agents]
            # The administrator's commands run on the network's clock, as the service's do.
            with mock.patch.object(support, "now", side_effect=lambda: int(net.now)):
                for agent in agents:
                    net.run(agent, agent.start(net.now) + agent.connected(net.now))
                    net.run(agent, agent.register(token, net.now))
                await net.settle()
                for step in steps_taken:
                    await _apply(net, step, usage)
                # Long enough for every agent to report once: one whose push was lost learns
                # from the answer to its next report.
                await net.settle(through=25 * HOUR)
        registered, counts, authorized = await _final_state(site, int(net.now))
    for agent, used in zip(agents, usage, strict=True):
        stored = counts.get(agent.device_id, {})
        assert (agent.device_id in registered) is agent.state.registered, agent.device_id
        if not agent.state.registered:
            assert {} == stored
            event("an agent ends deregistered")
            continue
        assert {t: c for t, c in used.items() if c} == stored, agent.device_id
        expected = (
            LicenseState.AUTHORIZED
            if authorized.get(agent.device_id, True)
            else LicenseState.OUT_OF_COMPLIANCE
        )
        assert expected is agent.state, agent.device_id
        event(f"an agent ends {expected.name}")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_taken=st.lists(steps, max_size=25), seed=st.integers(0, 2**32 - 1))
# Found by this test: a stale copy's refusal taken for the fresh copy's answer (twice: after
# an outage, and behind several retries); a request whose answer was lost never sent again; a
# registration redelivered after the deregistration.
@example(steps_taken=[("leave", 0, 0, ""), ("time", 1, 1.0, ""), ("outage", 0, HOUR, "")], seed=0)
@example(steps_taken=[("leave", 0, 0, ""), ("time", 4, HOUR, "")], seed=0)
@example(steps_taken=[("leave", 0, 0, ""), ("collect", 1, 0, ""), ("lose", 0, 0, "")], seed=0)
@example(steps_taken=[("leave", 0, 0, ""), ("redeliver", 0, 0, "")], seed=0)
# And, once agents crashed: a clock-skew refusal of a copy sent before the crash taken as final.
@example(
    steps_taken=[
        ("drop", 2, 0, ""),
        ("deliver", 2, 0, ""),
        ("join", 2, 0, ""),
        ("time", 1, 1.0, ""),
        ("time", 1, HOUR, ""),
        ("crash", 2, 0, ""),
    ],
    seed=0,
)
def test_agents_end_where_the_collector_has_them_whatever_the_network_did(
    steps_taken: list[Step], seed: int
) -> None:
    asyncio.run(_run(steps_taken, seed))
