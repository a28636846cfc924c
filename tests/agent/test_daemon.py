"""The daemon's loop on a fake clock, with paho replaced by a scripted stand-in where needed.

``FakeClock`` replaces the daemon module's ``time``: sleeping (or an idle ``loop()``) moves both
clocks at once, so minutes of the loop run in milliseconds, and the wall clock can be stepped
on its own as NTP would. ``FakeClient`` plays a broker that accepts or refuses the connection
and the subscription, and may drop each session some time after its SUBACK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
import pytest
from agent_support import T0, entropy, new_core
from paho.mqtt.client import ConnectFlags, DisconnectFlags
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from smartlic.agent import daemon
from smartlic.agent.config import AgentConfig
from smartlic.agent.daemon import MAX_WAIT, Daemon
from smartlic.agent.errors import LocalAgentError
from smartlic.agent.settings import DAY
from smartlic.agent.storage import MemoryStorage

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

TAG = "network-advantage"
HOUR = 3600.0
START = 1000.0
"""Where the fake monotonic clock starts."""


class FakeClock:
    """The daemon's ``time`` module: ``sleep`` advances wall and monotonic time together."""

    def __init__(self, wall: float = T0) -> None:
        self.wall = wall
        self.mono = START
        self.slept: list[float] = []
        self._events: list[tuple[float, Callable[[], object]]] = []

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds
        due = [e for e in self._events if e[0] <= self.mono]
        self._events = [e for e in self._events if e[0] > self.mono]
        for _, event in due:
            event()

    def after(self, seconds: float, event: Callable[[], object]) -> None:
        """Run ``event`` once ``seconds`` of monotonic time have passed since the start."""
        self._events.append((START + seconds, event))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(daemon, "time", fake)
    return fake


@dataclass
class FakeClient:
    """paho's ``Client`` as the daemon uses it, in front of a scripted broker."""

    clock: FakeClock
    connack: str = "Success"
    suback: str = "Granted QoS 1"
    up_for: float | None = None
    """Drop each session this long after its SUBACK (``None``: keep it)."""
    connects: int = 0
    gaps: list[float] = field(default_factory=list)
    """Seconds between each session's end and the next connection attempt."""
    on_connect: Any = None
    on_subscribe: Any = None
    on_message: Any = None
    on_publish: Any = None
    on_disconnect: Any = None
    _queue: list[Callable[[], None]] = field(default_factory=list)
    _drop_at: float | None = None
    _dropped_at: float | None = None

    def __call__(self, *_args: object, **_kwargs: object) -> FakeClient:
        """Stands in for the ``paho.Client`` class: the daemon's client is this one."""
        return self

    def connect(self, *_args: object, **_kwargs: object) -> MQTTErrorCode:
        self.connects += 1
        if self._dropped_at is not None:
            self.gaps.append(self.clock.mono - self._dropped_at)
        reason = ReasonCode(PacketTypes.CONNACK, self.connack)
        flags = ConnectFlags(session_present=False)
        self._queue.append(lambda: self.on_connect(self, None, flags, reason, None))
        if reason.is_failure:
            self._queue.append(lambda: self._drop("Unspecified error"))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def subscribe(self, *_args: object, **_kwargs: object) -> tuple[MQTTErrorCode, int]:
        reason = ReasonCode(PacketTypes.SUBACK, self.suback)
        self._queue.append(lambda: self._subscribed(reason))
        return MQTTErrorCode.MQTT_ERR_SUCCESS, 1

    def _subscribed(self, reason: ReasonCode) -> None:
        if self.up_for is not None and not reason.is_failure:
            self._drop_at = self.clock.mono + self.up_for
        self.on_subscribe(self, None, 1, [reason], None)

    def disconnect(self) -> MQTTErrorCode:
        self._queue.append(lambda: self._drop("Success"))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _drop(self, reason: str) -> None:
        self._drop_at = None
        self._dropped_at = self.clock.mono
        flags = DisconnectFlags(is_disconnect_packet_from_server=False)
        self.on_disconnect(self, None, flags, ReasonCode(PacketTypes.DISCONNECT, reason), None)

    def loop(self, timeout: float) -> MQTTErrorCode:
        if self._queue:
            self._queue.pop(0)()
        elif self._drop_at is not None and self.clock.mono >= self._drop_at:
            self._drop("Unspecified error")
        else:
            until_drop = timeout if self._drop_at is None else self._drop_at - self.clock.mono
            self.clock.sleep(min(timeout, until_drop))
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def drop_out_messages(self) -> None:
        pass

    def username_pw_set(self, *_args: object) -> None:
        pass


def broker(monkeypatch: pytest.MonkeyPatch, client: FakeClient) -> AgentConfig:
    """A configuration whose broker is ``client``."""
    monkeypatch.setattr(paho, "Client", client)
    return AgentConfig(broker="mqtt://127.0.0.1:9", keepalive=5)


def test_an_offline_daemon_sleeps_a_whole_max_wait_per_step(clock: FakeClock) -> None:
    offline = Daemon(AgentConfig(), new_core(), MemoryStorage(), entropy=entropy())
    offline.run(timeout=10 * MAX_WAIT)
    assert [MAX_WAIT] * 10 == clock.slept


@pytest.mark.usefixtures("clock")
def test_an_offline_daemon_counts_every_second_it_runs_as_evaluation() -> None:
    """Ticked only when the core's timer asks: each step must be one the use clock credits."""
    core = new_core()
    Daemon(AgentConfig(), core, MemoryStorage(), entropy=entropy()).run(timeout=HOUR)
    assert pytest.approx(HOUR) == core.snapshot().evaluation_used


def test_the_core_is_still_ticked_after_the_wall_clock_is_set_back(clock: FakeClock) -> None:
    """Set back a day ten minutes in: the use clock keeps counting, losing at most the step
    the set-back fell in (half max_clock_step), not the day the timers would wait for."""
    clock.after(600, lambda: setattr(clock, "wall", clock.wall - DAY))
    core = new_core()
    Daemon(AgentConfig(), core, MemoryStorage(), entropy=entropy()).run(timeout=HOUR)
    assert HOUR - 150 <= core.snapshot().evaluation_used


def test_usage_is_still_polled_after_the_wall_clock_steps_back(
    clock: FakeClock, tmp_path: Path
) -> None:
    usage = tmp_path / "usage.toml"
    usage.write_text(f"[usage]\n{TAG} = 3\n")
    clock.after(5, lambda: setattr(clock, "wall", clock.wall - 3600))
    clock.after(6, lambda: usage.write_text(f"[usage]\n{TAG} = 14\n"))
    core = new_core()
    Daemon(AgentConfig(usage_file=usage), core, MemoryStorage(), entropy=entropy()).run(timeout=20)
    assert 14 == core.snapshot().usage[TAG]


@pytest.mark.usefixtures("clock")
def test_a_first_request_refused_locally_still_ends_the_run_cleanly() -> None:
    core = new_core()
    storage = MemoryStorage(encode=True)
    offline = Daemon(AgentConfig(), core, storage, entropy=entropy())
    with pytest.raises(LocalAgentError, match="malformed registration token"):
        offline.run(first=lambda now: core.register("slt1_garbage", now))
    snapshot = storage.load()
    assert snapshot is not None
    assert snapshot.clean


def test_a_refused_connection_is_the_last_error_not_the_disconnection_after_it(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = broker(monkeypatch, FakeClient(clock, connack="Not authorized"))
    agent = Daemon(config, new_core(), MemoryStorage(), entropy=entropy(), require_broker=True)
    outcome = agent.run(timeout=10)
    assert "the broker refused the connection: Not authorized" == outcome.last_error


def test_a_refused_subscription_is_the_last_error_not_the_disconnection_after_it(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = broker(monkeypatch, FakeClient(clock, suback="Unspecified error"))
    core = new_core()
    agent = Daemon(config, core, MemoryStorage(), entropy=entropy(), require_broker=True)
    outcome = agent.run(timeout=10)
    assert f"the broker refused the subscription to {core.downlink}" == outcome.last_error


def test_a_later_lost_connection_is_the_last_error_again(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = FakeClient(clock, connack="Not authorized", up_for=2)
    clock.after(3, lambda: setattr(client, "connack", "Success"))
    agent = Daemon(broker(monkeypatch, client), new_core(), MemoryStorage(), entropy=entropy())
    outcome = agent.run(timeout=20)
    assert "connection to mqtt://127.0.0.1:9 lost: Unspecified error" == outcome.last_error


def test_sessions_dropped_right_after_the_suback_are_retried_ever_less_often(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = FakeClient(clock, up_for=0.1)
    agent = Daemon(broker(monkeypatch, client), new_core(), MemoryStorage(), entropy=entropy())
    agent.run(timeout=60)
    # Backoff 1, 2, 4, 8, 16, 32 s (each at least half that): at most 7 attempts in a minute.
    assert client.connects <= 7
    assert client.gaps == sorted(client.gaps)


def test_a_session_that_stayed_up_a_keepalive_resets_the_backoff(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = FakeClient(clock, up_for=6)  # keepalive 5
    agent = Daemon(broker(monkeypatch, client), new_core(), MemoryStorage(), entropy=entropy())
    agent.run(timeout=60)
    assert client.connects >= 5
    assert max(client.gaps) <= daemon.RECONNECT_BASE
