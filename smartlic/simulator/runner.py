"""One run, start to end: infrastructure, accounts, fleet, story, drain, checks, report.

1. **Infrastructure.** With no broker given: a broker of the run's own (``infra.py``), a new
   collector database and key in the run's folder, and ``smartlic-collector run`` as a child
   process at the run's time scale. With ``--broker``: someone else's collector, administered
   through ``--db`` (or registration tokens given on the command line, and then the collector's
   committed state cannot be checked).
2. **Clock.** At a time scale other than 1 the fleet's clock is aligned with the collector's
   (``clock.py``), and the collector's clock-skew window is widened by ten real seconds' worth of
   virtual time, so queueing under load is not mistaken for a wrong clock.
3. **Accounts** for the story (``setup.py``), then the **fleet** ramps up; the run waits until
   every device is registered and answered.
4. The **story** plays (``stories/``) for its duration.
5. **Drain**: no more changes; up to ``drain`` seconds for every report sent before to be
   answered and every device's latest usage to be committed.
6. **Checks** (``checks.py``, ``hostile.py``) against the committed state, read after the
   run's own collector has stopped cleanly; the **report** (``report.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from smartlic.agent import CoreSettings, LicenseState
from smartlic.mqtt.aio import Backoff
from smartlic.mqtt.url import parse_broker_url
from smartlic.protocol import Topics, parse_token
from smartlic.simulator.checks import Committed, DeviceFacts, judge
from smartlic.simulator.clock import VirtualClock
from smartlic.simulator.fleet import Fleet
from smartlic.simulator.hostile import HostileLedger
from smartlic.simulator.infra import (
    CollectorProcess,
    ExternalBroker,
    InfraError,
    own_broker,
    raise_open_files,
    read_clock,
)
from smartlic.simulator.metrics import Metrics
from smartlic.simulator.progress import Narrator, Progress
from smartlic.simulator.report import RunReport
from smartlic.simulator.setup import OPERATOR, Admin, create_site
from smartlic.simulator.stories import STORY_CLASSES, Run
from smartlic.simulator.stories.base import token_for

if TYPE_CHECKING:
    from collections.abc import Mapping

    from smartlic.mqtt.aio import ProtocolName
    from smartlic.simulator.device import VirtualDevice
    from smartlic.simulator.infra import Broker
    from smartlic.simulator.scenarios import Parameters, Scenario
    from smartlic.simulator.stories import Story

_READY: Final = frozenset({LicenseState.AUTHORIZED, LicenseState.OUT_OF_COMPLIANCE})
_DRAIN_POLL: Final = 0.1


@dataclass(kw_only=True)
class RunOptions:
    scenario: Scenario
    broker: str | None = None
    """An MQTT broker with a collector behind it; ``None``: start both."""
    broker_kind: str = "auto"
    """For a broker of our own: ``auto`` (Mosquitto if found, else amqtt), or either by name."""
    start_collector: bool | None = None
    """Run a collector of our own (default: when the broker is our own too)."""
    db: Path | None = None
    tokens: Mapping[str, str] = field(default_factory=dict)
    """VA -> registration token, when the collector cannot be administered (no ``db``)."""
    account: str | None = None
    holding: str | None = None
    operator: str = OPERATOR
    workdir: Path | None = None
    verbose: bool = False
    progress: bool = True
    stream: TextIO = sys.stderr


def collector_skew(scale: float) -> int:
    """The collector's clock-skew window for a run at ``scale``: 300 s + 10 real seconds."""
    return math.ceil(300 + 10 * scale)


def core_settings(params: Parameters) -> CoreSettings:
    scale = params.time_scale
    retry = params.retry_after * scale
    return CoreSettings(
        window=params.window,
        debounce=params.debounce,
        debounce_max=max(60.0, 12 * params.debounce),
        retry_base=retry,
        retry_cap=8 * retry,
        default_report_interval=params.report_interval,
        # No flash to spare here; a snapshot is kept whenever something changes anyway.
        checkpoint_interval=3600 * scale,
        max_clock_step=300 * scale,
    )


async def execute(options: RunOptions) -> RunReport:
    """Play ``options.scenario``; raises :class:`InfraError` when the run cannot be made."""
    raise_open_files()
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="smartlic-sim-"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            return await Runner(options, workdir, stack).run()
    finally:
        if options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


class Runner:
    """The steps of one run, in order (see the module docstring)."""

    def __init__(
        self, options: RunOptions, workdir: Path, stack: contextlib.AsyncExitStack
    ) -> None:
        self.options = options
        self.params = params = options.scenario.parameters
        self.workdir = workdir
        self.stack = stack
        self.started = time.monotonic()
        self.run_id = secrets.token_hex(3)
        scale = params.time_scale
        self.clock = VirtualClock(scale=scale, origin=None if scale == 1 else time.time())
        self.metrics = Metrics(scale=scale, now=self.started)
        self.topics = Topics()
        self.skew = collector_skew(scale)
        self.collector: CollectorProcess | None = None
        self.admin: Admin | None = None

    async def run(self) -> RunReport:
        broker, protocol = await self._broker()
        fingerprint = await self._collector(broker, protocol)
        if self.params.time_scale != 1:
            reading = await read_clock(
                parse_broker_url(broker.url),
                topics=self.topics,
                protocol=protocol,
                fingerprint=fingerprint,
                clock=self.clock,
                probe_id=self.run_id,
            )
            self.clock.align(reading)
        run, story = await self._prepare(broker, protocol)
        ready = await self._ramp(run)
        if ready:
            self.metrics.begin("main", time.monotonic())
            await story.play(run)
        return await self._finish(run, broker)

    async def _broker(self) -> tuple[Broker, ProtocolName]:
        options = self.options
        broker: Broker
        if options.broker is None:
            broker = own_broker(self.workdir, options.broker_kind)
            starting = asyncio.ensure_future(asyncio.to_thread(broker.start))

            async def kill_broker() -> None:
                # A run stopped while the broker starts cannot stop its thread: wait for the
                # start to end, then kill what it started, or the broker outlives the run.
                with contextlib.suppress(Exception):
                    await starting
                broker.kill()

            self.stack.push_async_callback(kill_broker)
            await asyncio.shield(starting)
        else:
            broker = ExternalBroker(options.broker)
        protocol: ProtocolName = broker.protocol or (
            "5" if self.params.protocol == "5" else "3.1.1"
        )
        return broker, protocol

    async def _collector(self, broker: Broker, protocol: ProtocolName) -> bytes:
        """Start our collector if asked; open its store; the collector key's fingerprint."""
        options, stack = self.options, self.stack
        own = options.broker is None if options.start_collector is None else options.start_collector
        db, fingerprint = options.db, None
        if own:
            db = db or self.workdir / "collector.db"
            key = db.with_name(db.name + ".key")
            if not db.exists():
                now = int(self.clock.now())
                fingerprint = await create_site(db, key, operator=options.operator, now=now)
            scale = self.params.time_scale
            self.collector = CollectorProcess.command(
                db=db,
                key=key,
                broker=broker.url,
                protocol=protocol,
                share_group=None if broker.shared_subscriptions else "",
                time_scale=scale,
                time_origin=None if scale == 1 else int(self.clock.origin),
                clock_skew=self.skew,
                intake_limit=self.params.intake_limit or None,
                client_id=f"smartlic-sim-collector-{self.run_id}",
                log_path=self.workdir / "collector.log",
            )
            # Before the start: a run stopped while the collector starts must stop it too.
            stack.push_async_callback(self.collector.stop)
            await self.collector.start()
        if options.verbose:
            store = f"; collector database {db}" if db is not None else ""
            options.stream.write(f"broker: {broker.kind} at {broker.url}, MQTT {protocol}{store}\n")
        if db is not None:
            self.admin = await Admin.open(db, clock=self.clock, operator=options.operator)
            stack.push_async_callback(self.admin.close)
            return fingerprint or await self.admin.fingerprint()
        if options.tokens:
            return parse_token(next(iter(options.tokens.values()))).collector_fingerprint
        raise InfraError("with --broker, pass --db (the collector's database) or --token")

    async def _prepare(self, broker: Broker, protocol: ProtocolName) -> tuple[Run, Story]:
        """The story's accounts, the fleet (not connected yet), the live display."""
        options, params = self.options, self.params
        rng = random.Random(params.seed)  # noqa: S311 -- a reproducible story, not cryptography
        account = options.account or f"SIM-{self.run_id}"
        holding = options.holding or f"PARTNER-{self.run_id}"
        story: Story = STORY_CLASSES[options.scenario.story](
            params, rng, account=account, holding=holding
        )
        if self.admin is not None:
            tokens = await self.admin.setup(story.plan(), token_vas=story.token_vas())
        else:
            tokens = dict(options.tokens)
        fleet = Fleet(
            broker=parse_broker_url(broker.url),
            clock=self.clock,
            settings=core_settings(params),
            metrics=self.metrics,
            run_id=self.run_id,
            protocol=protocol,
            keepalive=params.keepalive,
            backoff=Backoff(base=min(0.2, params.reconnect_max), cap=params.reconnect_max),
            seed=params.seed,
        )
        for va, usage in story.initial():
            fleet.add(va=va, token=token_for(tokens, va), usage=usage)
        progress = Progress(fleet, self.metrics, options.stream, tty=options.stream.isatty())
        shown = progress if options.progress else None
        if options.progress:
            progress.start()
            self.stack.push_async_callback(progress.stop)
        self.stack.push_async_callback(fleet.close)
        self.progress = progress
        run = Run(
            params=params,
            fleet=fleet,
            clock=self.clock,
            rng=rng,
            run_id=self.run_id,
            account=account,
            holding=holding,
            tokens=tokens,
            admin=self.admin,
            broker=broker,
            ledger=HostileLedger(),
            topics=self.topics,
            clock_skew=self.skew,
            narrator=Narrator(options.stream, verbose=options.verbose, progress=shown),
            metrics=self.metrics,
        )
        return run, story

    async def _ramp(self, run: Run) -> bool:
        """Connect the initial devices; whether every one was registered and answered."""
        fleet, params = run.fleet, self.params
        initial = list(fleet.devices)
        self.metrics.begin("ramp", time.monotonic())
        fleet.start()
        started = time.monotonic()
        await fleet.ramp(initial, rate=params.rate, jitter=params.jitter)
        ready = await fleet.wait_for(
            lambda: all(d.core.state in _READY for d in initial),
            timeout=params.ready_timeout + len(initial) / params.rate,
        )
        connected = [d.first_connected for d in initial if d.first_connected is not None]
        self.connected = len(connected)
        self.connect_seconds = max(connected, default=started) - started
        return run.expect(
            "every device registers and gets its first answer", ready, str(fleet.states(initial))
        )

    async def _finish(self, run: Run, broker: Broker) -> RunReport:
        """Drain, stop everything, read the committed state, judge."""
        fleet, params, metrics = run.fleet, self.params, self.metrics
        metrics.begin("drain", time.monotonic())
        marks = {d.device_id: max(d.sent, default=0) for d in fleet.devices}
        drained = await fleet.wait_for(
            lambda: all(_drained(d, marks[d.device_id]) for d in fleet.devices),
            timeout=params.drain,
            poll=_DRAIN_POLL,
        )
        if not drained:
            run.narrator.line(f"the drain ended after {params.drain:g} s with work outstanding")
        metrics.finish(time.monotonic())
        # Facts only once every connection is closed: until then a PUBACK or an answer can
        # still make a core publish a report that was due, and the collector would accept it.
        await fleet.close()
        await self.progress.stop()
        states = dict(fleet.states())
        notice_seqs = {d.device_id: d.core.snapshot().last_notice_seq for d in fleet.devices}
        facts = [_facts(d, marks[d.device_id]) for d in fleet.devices]
        if self.collector is not None:
            await self.collector.stop()
        committed: Committed | None = None
        if self.admin is not None:
            device_ids = [d.device_id for d in fleet.devices]
            committed = await self.admin.committed(run.account, device_ids)
        letters = committed.dead_letters if committed is not None else []
        hostile = {
            str(kind): counts
            for kind, counts in run.ledger.verdicts(letters, notice_seqs=notice_seqs).items()
        }
        now = time.monotonic()
        main = metrics.phase_named("main")
        seconds = main.duration(now) if main is not None else 0.0
        counters = metrics.counters
        return RunReport(
            scenario=self.options.scenario.name,
            story=self.options.scenario.story,
            parameters=params.as_dict(),
            broker=broker.kind,
            protocol=fleet.protocol,
            devices=len(fleet.devices),
            connect_seconds=self.connect_seconds,
            connected=self.connected,
            reports_sent=counters.reports_sent,
            reports_answered=counters.reports_answered,
            verdict=judge(facts, committed),
            checked_committed=committed is not None,
            throughput_rps=main.reports_answered / seconds if main and seconds > 0 else 0.0,
            latency=metrics.summary(),
            phases={p.name: p.as_dict(now) for p in metrics.phases},
            states=states,
            hostile=hostile,
            expectations=run.expectations,
            duration_s=now - self.started,
            extra={
                "run_id": self.run_id,
                "pushes": dict(counters.pushes),
                "refused": dict(counters.refused),
                "reports_superseded": counters.reports_superseded,
                "reports_compacted": counters.reports_compacted,
                "reports_abandoned": counters.reports_abandoned,
                "publishes": counters.publishes,
                "notices_applied": counters.notices_applied,
                "notices_ignored": counters.notices_ignored,
                "registrations": counters.registrations,
                "deregistrations": counters.deregistrations,
                "connects": counters.connects,
                "connect_errors": dict(fleet.connect_errors),
                "drained": drained,
                "collector_log_events": self.collector.events if self.collector else None,
            },
        )


def _drained(device: VirtualDevice, mark: int) -> bool:
    if device.client is None:
        return True
    if any(
        seq <= mark and seq not in device.abandoned
        for seq in device.sent
        if seq > device.max_answered
    ):
        return False
    return device.settled()


def _facts(device: VirtualDevice, mark: int) -> DeviceFacts:
    return DeviceFacts(
        device_id=device.device_id,
        registered=device.client is not None and device.registered,
        va=device.va,
        usage=dict(device.usage),
        sent=dict(device.sent),
        answered=frozenset(device.answered),
        max_answered=device.max_answered,
        abandoned=frozenset(device.abandoned),
        mark=mark,
    )


__all__ = ["RunOptions", "collector_skew", "core_settings", "execute"]
