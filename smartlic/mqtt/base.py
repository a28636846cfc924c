"""What both MQTT clients are: one session's settings and the rules they keep alike.

:class:`~smartlic.mqtt.aio.AsyncMqttClient` drives paho from asyncio; the collector's
:class:`~smartlic.mqtt.native.NativeMqttClient` speaks MQTT itself. Both take the same
settings and behave the same way where callers rely on it: which received messages may still
be acknowledged, when a paused connection reads anyway, how the publish window waits, and how
:meth:`run` stays connected. Each implements the transport underneath.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import random
import time
from typing import TYPE_CHECKING, Any, Final, TypeVar

from smartlic.mqtt.common import SESSION_EXPIRY_NEVER, Backoff, MqttError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from smartlic.mqtt.common import MqttMessage, ProtocolName
    from smartlic.mqtt.url import BrokerAddress

R = TypeVar("R")
STABLE_CONNECTION: Final = 5.0
"""Seconds a connection must last for the reconnection backoff to start over."""
_RECEIVE_MAXIMUM_LIMIT = 65535
"""MQTT 5 §3.1.2.11.3: Receive Maximum is 1 to 65,535."""


class MqttClient(abc.ABC):
    """One MQTT connection on the running asyncio loop.

    ``on_message`` is called on the loop for every message received (keep it quick: hand the
    message to a queue or a sans-I/O core). With ``manual_ack=True`` every QoS 1 message must
    be acknowledged with :meth:`ack`, in arrival order, once it is safely handled.
    ``subscriptions`` are made again on every connection: Mosquitto 2.0.11 (measured here)
    restores plain subscriptions from its persistence file after a restart but silently drops
    shared ones (``$share/...``) while still reporting the session as present; subscribing again
    to what exists is harmless (MQTT 3.1.1 §3.8.4). With ``resend_on_reconnect=False`` what was
    published and not acknowledged is dropped at every CONNACK instead of sent again (MQTT 3.1.1
    §4.4): for callers with a durable outbox of their own, such as the agent core.
    """

    def __init__(  # noqa: PLR0913 -- these are the knobs of an MQTT session
        self,
        *,
        client_id: str,
        broker: BrokerAddress,
        on_message: Callable[[MqttMessage], None],
        subscriptions: Iterable[tuple[str, int]] = (),
        protocol: ProtocolName = "5",
        clean_start: bool = False,
        session_expiry: int = SESSION_EXPIRY_NEVER,
        keepalive: int = 30,
        manual_ack: bool = False,
        max_pending: int = 1000,
        receive_maximum: int = _RECEIVE_MAXIMUM_LIMIT,
        resend_on_reconnect: bool = True,
        on_connect: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        on_published: Callable[[int], None] | None = None,
        on_refused: Callable[[int, int], None] | None = None,
    ) -> None:
        if not 1 <= receive_maximum <= _RECEIVE_MAXIMUM_LIMIT:
            raise ValueError(f"receive_maximum must be 1..65535, not {receive_maximum}")
        if broker.credentials_refused(v5=protocol == "5"):
            raise ValueError(
                f"{broker}: MQTT 3.1.1 cannot send a password without a user name (§3.1.2.9)"
            )
        self.client_id = client_id
        self.broker = broker
        self.protocol = protocol
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.subscriptions = list(subscriptions)
        self._on_message = on_message
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_published = on_published
        self._on_refused = on_refused
        self._manual_ack = manual_ack
        self._max_pending = max_pending
        self._receive_maximum = receive_maximum
        self._resend_on_reconnect = resend_on_reconnect
        self.generation = 0
        """Counts connections; :meth:`ack` refuses messages of an earlier one."""
        self._link_up = False
        """Between an accepting CONNACK and the end of that connection."""
        self._room = asyncio.Event()
        self._room.set()
        self._connected = asyncio.Event()
        self._lost: asyncio.Future[None] | None = None
        self._closing = False
        self._close_requested = asyncio.Event()
        self._window_released = False
        self._paused = False
        self._room_waiters = 0
        self._loop = asyncio.get_running_loop()
        self._setup()

    @abc.abstractmethod
    def _setup(self) -> None:
        """The implementation's own state, made at the end of ``__init__``."""

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def closing(self) -> bool:
        """True once :meth:`disconnect` was called (until the next :meth:`connect`)."""
        return self._closing

    def _begin_closing(self) -> None:
        """:meth:`disconnect` has begun: no more connecting, and no publish waits for room
        (what is published now waits for a next connection that may never come)."""
        self._closing = True
        self._close_requested.set()
        self._room.set()

    def _end_closing(self) -> None:
        """:meth:`connect` again: the client is in use once more."""
        self._closing = False
        self._close_requested.clear()

    @property
    @abc.abstractmethod
    def pending(self) -> int:
        """QoS 1 messages published and not yet acknowledged by the broker."""

    @property
    @abc.abstractmethod
    def reading(self) -> bool:
        """Whether the socket is being read now."""

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def wait_lost(self) -> None:
        """Until the current connection is gone."""
        lost = self._lost
        if lost is not None:
            await asyncio.shield(lost)

    @abc.abstractmethod
    async def connect(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109 -- a sane default
        """Connect once and subscribe; return whether the broker still had our session."""

    @abc.abstractmethod
    async def disconnect(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 -- a sane default
        """Disconnect cleanly (the session stays on the broker unless clean_start)."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Drop the connection without DISCONNECT: what a crash looks like to the broker."""

    async def _established(self, *, session_present: bool) -> bool:
        """After an accepting CONNACK: subscribe; then the connection is up."""
        try:
            await self._subscribe_all()
        except MqttError:
            self.abort()
            raise
        self._connected.set()
        self._sync_reading()
        if self._on_connect is not None:
            self._on_connect(session_present)
        return session_present

    @abc.abstractmethod
    async def _subscribe_all(self) -> None:
        """Subscribe to ``subscriptions`` and wait for the SUBACK (it must be stored)."""

    async def run(
        self,
        *,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        on_error: Callable[[MqttError, float], None] | None = None,
    ) -> None:
        """Stay connected until cancelled or :meth:`disconnect`: connect, and connect again
        with backoff whenever the connection is lost or refused."""
        backoff = backoff or Backoff()
        rng = rng or random.Random()  # noqa: S311 -- jitter, not cryptography
        attempt = 0
        while not self._closing:
            try:
                await self.connect()
            except MqttError as exc:
                problem: MqttError | None = exc
            else:
                up_since = time.monotonic()
                await self.wait_lost()
                if time.monotonic() - up_since >= STABLE_CONNECTION:
                    attempt = 0
                    continue
                # Accepted, then dropped at once (a message over the broker's packet limit
                # sent again on every connection, a client id taken by another): backing off
                # as after a refusal, or it would reconnect as fast as the broker drops it.
                problem = None if self.closing else MqttError("the connection was lost at once")
            if problem is None:
                continue
            delay = backoff.delay(attempt, rng)
            attempt += 1
            if on_error is not None:
                on_error(problem, delay)
            # A disconnect() ends the wait: backoff may have grown to its cap.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._close_requested.wait()

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Publish, waiting while ``max_pending`` are unacknowledged; the message id.

        QoS 1 messages given while disconnected go out on the next connection of this
        (persistent) session, unless ``resend_on_reconnect`` is False.
        """
        if self._bounded() and self.pending >= self._max_pending:
            # The room comes from PUBACKs: read them even while paused (see pause_reading).
            self._room_waiters += 1
            self._sync_reading()
            try:
                while self._bounded() and self.pending >= self._max_pending:
                    self._room.clear()
                    await self._room.wait()
            finally:
                self._room_waiters -= 1
                self._sync_reading()
        return self.publish_nowait(topic, payload, qos)

    def _bounded(self) -> bool:
        return not (self._closing or self._window_released)

    @abc.abstractmethod
    def publish_nowait(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Publish now, whatever the window: for callers that bound what is in flight
        themselves, and for callbacks, which cannot await."""

    def ack(self, message: MqttMessage) -> bool:
        """Acknowledge a received message (manual_ack mode); False when it is too late.

        A message received on an earlier connection cannot be acknowledged any more: the
        broker will deliver it again on this one (MQTT 3.1.1 §4.4), and its packet id may by
        now name another message.
        """
        if message.qos == 0 or message.generation != self.generation or not self._link_up:
            return False
        return self._send_ack(message)

    @abc.abstractmethod
    def _send_ack(self, message: MqttMessage) -> bool: ...

    def pause_reading(self) -> None:
        """Stop reading the socket: the broker sees TCP back-pressure.

        Except while connecting or while :meth:`publish` waits for room: those need the
        broker's acknowledgements (CONNACK, SUBACK, PUBACK), and messages that come with them
        are still delivered. Otherwise a caller that pauses its intake and then publishes
        would wait for itself.
        """
        self._paused = True
        self._sync_reading()

    def resume_reading(self) -> None:
        self._paused = False
        self._sync_reading()

    def _wants_reading(self) -> bool:
        return not self._paused or self._room_waiters > 0 or not self._connected.is_set()

    @abc.abstractmethod
    def _sync_reading(self) -> None:
        """Read the socket exactly when there is one and :meth:`_wants_reading` says so."""

    def _link_accepted(self) -> None:
        """An accepting CONNACK, before anything after it is read: what follows belongs to
        this connection, and what was published and unacknowledged goes again, or not."""
        self.generation += 1
        self._link_up = True
        if not self._resend_on_reconnect:
            self._drop_unacknowledged()
            self._room.set()

    @abc.abstractmethod
    def _drop_unacknowledged(self) -> None:
        """Forget every publish the broker has not acknowledged (``resend_on_reconnect``)."""

    def _link_ended(self, connack: asyncio.Future[Any] | None, reason: object) -> None:
        """The connection is gone (or never came up): wake whoever waits on it."""
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._link_up = False
        if connack is not None and not connack.done():
            connack.set_exception(MqttError(f"disconnected before CONNACK: {reason}"))
        lost = self._lost
        if lost is not None and not lost.done():
            lost.set_result(None)
        if was_connected and self._on_disconnect is not None:
            self._on_disconnect()

    def _acknowledged(self, mid: int, *, refused: int | None = None) -> None:
        """The broker is done with a published message: make room, and tell the caller
        whether it took it (``on_published``) or refused it with a reason code (MQTT 5
        PUBACK 0x80 and up: ``on_refused``)."""
        if self.pending < self._max_pending:
            self._room.set()
        if refused is None:
            if self._on_published is not None:
                self._on_published(mid)
        elif self._on_refused is not None:
            self._on_refused(mid, refused)

    async def _suback(self, waiting: dict[int, asyncio.Future[R]], mid: int, seconds: float) -> R:
        """Wait up to ``seconds`` for the SUBACK of SUBSCRIBE ``mid`` (its handler resolves
        ``waiting[mid]``)."""
        done: asyncio.Future[R] = self._loop.create_future()
        waiting[mid] = done
        try:
            async with asyncio.timeout(seconds):
                return await done
        except TimeoutError:
            raise MqttError("no SUBACK from the broker") from None
        finally:
            waiting.pop(mid, None)

    def _refused(self, failures: Iterable[bool]) -> None:
        """Raise when a SUBACK refused any of our subscriptions."""
        refused = [
            topic
            for (topic, _), failed in zip(self.subscriptions, failures, strict=False)
            if failed
        ]
        if refused:
            raise MqttError(f"broker refused subscriptions to {', '.join(refused)}")
