"""Thousands of agent cores and MQTT connections on one asyncio loop.

Theory of operation. Each :class:`~smartlic.simulator.device.VirtualDevice` is an agent core
plus an :class:`~smartlic.mqtt.aio.AsyncMqttClient` (paho on the loop through its socket
callbacks: no thread per connection). Everything that happens to a device becomes one input of
its core, with the fleet's virtual ``now``:

=====================================  =====================================
event                                  core input
=====================================  =====================================
launched                               ``start``, ``usage_changed``
CONNACK (+ SUBACK of the downlink)     ``connected``, then ``register(token)`` once
PUBLISH on the downlink                ``received``
PUBACK of a report or request          ``publish_acked``
connection lost                        ``disconnected``
its timer is due                       ``tick``
the scenario changes its usage         ``usage_changed``
=====================================  =====================================

and :meth:`Fleet.execute` carries out the actions that come back, in order, synchronously, on
the loop (``Persist`` to memory, ``Publish`` to paho; the rest are counted). Then the device's
:meth:`~smartlic.agent.AgentCore.next_timer` goes into one heap for the whole fleet; a single
task sleeps until the earliest and ticks what is due (entries a later reschedule superseded are
skipped when popped).

Connections ramp up at a chosen rate with random jitter: a broker's listen backlog overflows
when thousands of SYNs arrive at once, and a lost SYN costs the client a 1 s (then 3 s, 7 s)
TCP retransmission.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import random
import time
from collections import Counter
from typing import TYPE_CHECKING, Final

from smartlic.agent.actions import (
    Deregistered,
    NoticeApplied,
    NoticeIgnored,
    Persist,
    Publish,
    RegistrationRefused,
    RegistrationSucceeded,
    ReportAnswered,
    ReportDropped,
    ReportQueued,
)
from smartlic.mqtt.aio import AsyncMqttClient, Backoff, MqttError
from smartlic.protocol import KeyType, SigningKey, Udi
from smartlic.simulator.device import VirtualDevice, digest64, nonzero

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from smartlic.agent import CoreSettings
    from smartlic.agent.actions import Action
    from smartlic.mqtt.aio import MqttMessage, ProtocolName
    from smartlic.mqtt.url import BrokerAddress
    from smartlic.simulator.clock import VirtualClock
    from smartlic.simulator.metrics import Metrics

_TICKS_PER_TURN: Final = 256
"""Timers handled before yielding to the loop, so sockets are read between batches."""
_MIN_STEP_REAL: Final = 0.001
"""A core asking to be ticked again at once is ticked after 1 ms of real time instead."""
_DISCONNECT_CHUNK: Final = 500


class Fleet:
    def __init__(  # noqa: PLR0913 -- the knobs of a fleet
        self,
        *,
        broker: BrokerAddress,
        clock: VirtualClock,
        settings: CoreSettings,
        metrics: Metrics,
        run_id: str,
        protocol: ProtocolName = "5",
        keepalive: int = 60,
        backoff: Backoff | None = None,
        seed: int = 1,
        product: str = "C9300-SIM",
    ) -> None:
        self.broker = broker
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.counters = metrics.counters
        self.run_id = run_id
        self.protocol: ProtocolName = protocol
        self.keepalive = keepalive
        self.backoff = backoff or Backoff(base=0.2, cap=2.0)
        self.seed = seed
        self.product = product
        self.rng = random.Random(seed)  # noqa: S311 -- jitter and usage, not cryptography
        self.devices: list[VirtualDevice] = []
        self.by_id: dict[str, VirtualDevice] = {}
        self.observer: Callable[[str, bytes], None] | None = None
        """Sees every downlink message of the devices in :attr:`watched` (hostile checks)."""
        self.watched: frozenset[str] = frozenset()
        self.connect_errors: Counter[str] = Counter()
        self._heap: list[tuple[float, int, VirtualDevice]] = []
        self._order = itertools.count()
        self._wake = asyncio.Event()
        self._timers: asyncio.Task[None] | None = None
        self._closing = False

    # ---- building -----------------------------------------------------------------------

    def add(self, *, va: str, token: str | None, usage: Mapping[str, int]) -> VirtualDevice:
        """A new device (not connected yet); its key derives from the seed and its index."""
        index = len(self.devices)
        seed = hashlib.sha256(f"smartlic-sim/{self.seed}/{self.run_id}/{index}".encode()).digest()
        device = VirtualDevice(
            index=index,
            udi=Udi(product_id=self.product, serial=f"{self.run_id}-{index:06d}"),
            key=SigningKey.from_seed(KeyType.ED25519, seed),
            entropy=self.rng.randbytes,
            settings=self.settings,
            va=va,
            token=token,
            usage=usage,
        )
        self.devices.append(device)
        self.by_id[device.device_id] = device
        return device

    def start(self) -> None:
        if self._timers is None:
            self._timers = asyncio.create_task(self._run_timers(), name="fleet-timers")

    def launch(self, device: VirtualDevice) -> None:
        """Start the device's core and its connection (reconnecting until stopped)."""
        now = self.clock.now()
        actions = device.core.start(now)
        if device.usage:
            actions += device.core.usage_changed(device.usage, now)
        self.execute(device, actions)
        self._run(device)

    def _run(self, device: VirtualDevice) -> None:
        # A fresh client each time: a closed AsyncMqttClient's run() would not start again.
        # The agent daemon's session rules (agent/daemon.py): the core re-sends what is still
        # unanswered and its window bounds what is in flight, so paho must not re-send too.
        client = device.client = AsyncMqttClient(
            client_id=device.device_id,
            broker=self.broker,
            on_message=lambda message: self._received(device, message),
            subscriptions=[(device.core.downlink, 1)],
            protocol=self.protocol,
            keepalive=self.keepalive,
            on_connect=lambda present: self._connected(device, present=present),
            on_disconnect=lambda: self._disconnected(device),
            on_published=lambda mid: self._published(device, mid),
            resend_on_reconnect=False,
        )
        device.task = asyncio.create_task(
            client.run(backoff=self.backoff, rng=self.rng, on_error=self._connect_failed),
            name=f"device-{device.index}",
        )

    async def ramp(
        self, devices: Sequence[VirtualDevice], *, rate: float, jitter: float = 0.0
    ) -> None:
        """Launch ``devices`` at ``rate`` per second, each up to ``jitter`` seconds late."""
        loop = asyncio.get_running_loop()
        begin = loop.time()
        schedule = sorted(
            (begin + i / rate + self.rng.uniform(0, jitter), i) for i in range(len(devices))
        )
        for at, i in schedule:
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.launch(devices[i])

    async def disconnect(self, devices: Iterable[VirtualDevice]) -> None:
        """Close the devices' connections cleanly (their cores learn it through the callback)."""
        chosen = [d for d in devices if d.client is not None]
        for start in range(0, len(chosen), _DISCONNECT_CHUNK):
            chunk = chosen[start : start + _DISCONNECT_CHUNK]
            await asyncio.gather(*(self._close(d) for d in chunk))

    async def _close(self, device: VirtualDevice) -> None:
        client, task = device.client, device.task
        if client is None:
            return
        await client.disconnect()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            device.task = None

    def reconnect(self, devices: Iterable[VirtualDevice]) -> None:
        """Connect closed devices again, all at once."""
        for device in devices:
            if device.task is None and device.client is not None:
                self._run(device)

    async def close(self) -> None:
        """Stop every core cleanly and disconnect; the timer task ends. Idempotent."""
        if self._closing:
            return
        self._closing = True
        now = self.clock.now()
        for device in self.devices:
            if device.client is not None:
                self.execute(device, device.core.stop(now))
        await self.disconnect(self.devices)
        self._wake.set()
        if self._timers is not None:
            self._timers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timers

    # ---- driving the cores ------------------------------------------------------------

    def set_usage(self, device: VirtualDevice, counts: Mapping[str, int]) -> None:
        device.usage = dict(counts)
        self.execute(device, device.core.usage_changed(device.usage, self.clock.now()))

    def deregister(self, device: VirtualDevice) -> None:
        """The device asks the collector to deregister it (``smartlic-agent deregister``)."""
        self.execute(device, device.core.deregister(self.clock.now()))

    def send_raw(self, device: VirtualDevice, topic: str, payload: bytes) -> None:
        """Publish bytes the core did not make (hostile messages) on the device's connection."""
        if device.client is not None:
            device.client.publish_nowait(topic, payload)

    def execute(self, device: VirtualDevice, actions: list[Action]) -> None:  # noqa: C901, PLR0912 -- one branch per action type
        counters = self.counters
        for action in actions:
            if isinstance(action, Persist):
                device.storage.save(action.snapshot)
            elif isinstance(action, Publish):
                self._publish(device, action)
            elif isinstance(action, ReportQueued):
                counters.reports_queued += 1
                device.queued[action.seq] = action.counts
                stated = nonzero(action.counts)
                if device.change_seq is None or stated != device.last_queued:
                    device.change_seq = action.seq
                device.last_queued = stated
            elif isinstance(action, ReportAnswered):
                self.metrics.answered(action.first_sent_at, action.answered_at)
                device.max_answered = max(device.max_answered, action.seq)
                if action.code is None:
                    device.answered.add(action.seq)
                else:
                    counters.refused[action.code.name] += 1
                    if device.change_seq is not None and action.seq >= device.change_seq:
                        device.change_seq = None  # refused: the core reports the usage afresh
            elif isinstance(action, ReportDropped):
                device.queued.pop(action.seq, None)
                if action.reason.startswith("superseded"):
                    counters.reports_superseded += 1
                elif action.reason.startswith("compacted"):
                    counters.reports_compacted += 1
                else:
                    counters.reports_abandoned += 1
                    device.abandoned.add(action.seq)
            elif isinstance(action, NoticeApplied):
                counters.notices_applied += 1
                if action.in_reply_to is None:
                    counters.pushes[action.kind.name] += 1
            elif isinstance(action, NoticeIgnored):
                counters.notices_ignored += 1
                counters.ignored_reasons[action.reason.split(":")[0][:60]] += 1
            elif isinstance(action, RegistrationSucceeded):
                counters.registrations += 1
            elif isinstance(action, RegistrationRefused):
                counters.registrations_refused += 1
                counters.refused[f"registration:{action.code.name}"] += 1
            elif isinstance(action, Deregistered):
                counters.deregistrations += 1
        self._schedule(device)

    def _publish(self, device: VirtualDevice, action: Publish) -> None:
        client = device.client
        if client is None:
            return
        try:
            mid = client.publish_nowait(action.topic, action.payload)
        except MqttError:
            self.counters.publish_errors += 1
            return
        self.counters.publishes += 1
        device.mids[mid] = action
        seq = action.seq
        if seq is not None and seq not in device.sent:
            self.counters.reports_sent += 1
            device.sent[seq] = (digest64(action.payload), device.queued.pop(seq, {}))

    def _schedule(self, device: VirtualDevice) -> None:
        due = device.core.next_timer()
        if due is None or due == device.timer:
            return
        # A core that wants a tick at once gets it a moment later, never in a busy loop.
        floor = self.clock.now() + self.clock.virtual_seconds(_MIN_STEP_REAL)
        due = max(due, floor)
        device.timer = due
        if not self._heap or due < self._heap[0][0]:
            self._wake.set()
        heapq.heappush(self._heap, (due, next(self._order), device))
        if len(self._heap) > 4 * len(self.devices) + 1024:
            self._compact()

    def _compact(self) -> None:
        self._heap = [(d.timer, next(self._order), d) for d in self.devices if d.timer is not None]
        heapq.heapify(self._heap)

    async def _run_timers(self) -> None:
        # self._heap, never a local alias: a reschedule may compact it into a new list.
        while not self._closing:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self.clock.real_delay(self._heap[0][0])
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                continue
            now = self.clock.now()
            for _ in range(_TICKS_PER_TURN):
                if not self._heap or self._heap[0][0] > now:
                    break
                due, _, device = heapq.heappop(self._heap)
                if device.timer != due:
                    continue
                device.timer = None
                self.execute(device, device.core.tick(now))
            await asyncio.sleep(0)

    # ---- MQTT callbacks -----------------------------------------------------------------

    def _connected(self, device: VirtualDevice, *, present: bool) -> None:
        del present  # the core re-sends what is unanswered either way
        device.connected = True
        self.counters.connects += 1
        if device.first_connected is None:
            device.first_connected = time.monotonic()
        now = self.clock.now()
        self.execute(device, device.core.connected(now))
        core = device.core
        if device.wants_registration and device.token and not core.state.registered:
            device.wants_registration = False
            if core.pending is None:
                self.execute(device, core.register(device.token, now))

    def _disconnected(self, device: VirtualDevice) -> None:
        device.connected = False
        device.mids.clear()
        self.counters.disconnects += 1
        self.execute(device, device.core.disconnected(self.clock.now()))

    def _received(self, device: VirtualDevice, message: MqttMessage) -> None:
        observer = self.observer
        if observer is not None and device.device_id in self.watched:
            observer(device.device_id, message.payload)
        self.execute(device, device.core.received(message.topic, message.payload, self.clock.now()))

    def _published(self, device: VirtualDevice, mid: int) -> None:
        publish = device.mids.pop(mid, None)
        if publish is not None:
            self.execute(device, device.core.publish_acked(publish, self.clock.now()))

    def _connect_failed(self, error: MqttError, _delay: float) -> None:
        self.connect_errors[str(error)[:80]] += 1

    # ---- looking at the fleet -----------------------------------------------------------

    @property
    def connected(self) -> int:
        return sum(d.connected for d in self.devices)

    def states(self, devices: Iterable[VirtualDevice] | None = None) -> Counter[str]:
        return Counter(d.core.state.name for d in (self.devices if devices is None else devices))

    def quiet(self) -> bool:
        return all(d.quiet() for d in self.devices if d.client is not None)

    async def wait_for(
        self,
        condition: Callable[[], bool],
        *,
        timeout: float,  # noqa: ASYNC109 -- real seconds, from the scenario's parameters
        poll: float = 0.05,
    ) -> bool:
        """Poll ``condition`` until it holds (True) or ``timeout`` real seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(poll)
        return True
