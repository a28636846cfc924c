"""The collector's own MQTT client: asyncio streams over the sans-I/O codec in ``packets.py``.

paho costs the collector about half of its event loop (measured with py-spy in
``bench/collector_bench.py``): it reads each packet's header a byte at a time with a system
call per read, builds an MQTT 5 ``Properties`` object per PUBACK, and writes every packet
separately. This client reads whatever the socket has (hundreds of packets per ``recv``),
parses them in one pass, and writes what a turn of the event loop produced — acknowledgements
of a whole batch, its notices — in one ``send``.

It offers what :class:`~smartlic.mqtt.aio.AsyncMqttClient` offers the collector, with the same
meaning: manual acknowledgement bound to the connection a message came on, read pausing (that
still reads while connecting and while a publish waits for window room), a bounded publish
window, MQTT 5 Receive Maximum both ways (MQTT 5 §4.9), the persistent session resumed on
reconnection with unacknowledged publishes sent again with DUP set (MQTT 3.1.1 §4.4), and
subscriptions made on every connection. QoS 0 and 1 only: the collector uses nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import TYPE_CHECKING, Final

from smartlic.mqtt import packets
from smartlic.mqtt.common import (
    SESSION_EXPIRY_NEVER,
    MqttError,
    MqttMessage,
    ProtocolName,
    stay_connected,
)
from smartlic.mqtt.outgoing import MAX_PACKET_ID, Outgoing, OutgoingQueue
from smartlic.mqtt.packets import MalformedPacket, Packet, PacketReader, PacketType

if TYPE_CHECKING:
    import random
    from collections.abc import Callable, Iterable

    from smartlic.mqtt.common import Backoff
    from smartlic.mqtt.url import BrokerAddress

_TICK: Final = 1.0


class _Link(asyncio.Protocol):
    """One TCP (or TLS) connection; it hands everything to its client."""

    def __init__(self, client: NativeMqttClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):  # TCP and TLS transports both are
            self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.client._data(self, data)  # noqa: SLF001 -- the link is the client's own part

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._link_lost(self, exc)  # noqa: SLF001 -- the link is the client's own part


class NativeMqttClient:
    """One MQTT connection on the running asyncio loop, without paho (see the module doc).

    ``on_message`` is called on the loop for every message received (keep it quick). With
    ``manual_ack=True`` every QoS 1 message must be acknowledged with :meth:`ack`, in arrival
    order, once it is safely handled.
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
        receive_maximum: int = 65535,
        on_connect: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        on_published: Callable[[int], None] | None = None,
    ) -> None:
        if not 1 <= receive_maximum <= MAX_PACKET_ID:  # MQTT 5 §3.1.2.11.3
            raise ValueError(f"receive_maximum must be 1..65535, not {receive_maximum}")
        self.client_id = client_id
        self.broker = broker
        self.protocol = protocol
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.subscriptions = list(subscriptions)
        self._v5 = protocol == "5"
        self._tls = broker.tls.context() if broker.tls is not None else None
        """Built once, so unusable TLS files are an error at once, not at each connection."""
        self._manual_ack = manual_ack
        self._max_pending = min(max_pending, MAX_PACKET_ID - 16)  # ids left for SUBSCRIBE
        self._receive_maximum = receive_maximum
        self._on_message = on_message
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_published = on_published
        self.generation = 0
        """Counts connections; :meth:`ack` refuses messages of an earlier one."""
        self._loop = asyncio.get_running_loop()
        self._link: _Link | None = None
        self._link_up = False
        self._reader = PacketReader()
        self._outgoing = OutgoingQueue()
        self._send_quota = MAX_PACKET_ID
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._room = asyncio.Event()
        self._room.set()
        self._connected = asyncio.Event()
        self._connack: asyncio.Future[packets.ConnAck] | None = None
        self._lost: asyncio.Future[None] | None = None
        self._closing = False
        self._paused = False
        self._room_waiters = 0
        self._writes: list[bytes] = []
        self._flush_scheduled = False
        self._last_write = 0.0
        self._ping_sent: float | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._keepalive_now = keepalive

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def pending(self) -> int:
        """QoS 1 messages published and not yet acknowledged by the broker."""
        return len(self._outgoing)

    @property
    def reading(self) -> bool:
        """Whether the socket is being read now."""
        link = self._link
        return link is not None and link.transport is not None and link.transport.is_reading()

    @property
    def closing(self) -> bool:
        return self._closing

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def wait_lost(self) -> None:
        lost = self._lost
        if lost is not None:
            await asyncio.shield(lost)

    async def connect(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109 -- a sane default
        """Connect once; return whether the broker still had our session."""
        self._closing = False
        self._connack = self._loop.create_future()
        self._lost = self._loop.create_future()
        self._reader = PacketReader()
        broker = self.broker
        try:
            context = self._tls
            async with asyncio.timeout(timeout):
                _, link = await self._loop.create_connection(
                    lambda: _Link(self),
                    broker.host,
                    broker.port,
                    ssl=context,
                    server_hostname=broker.host if context is not None else None,
                )
                self._link = link
                self._send(self._connect_packet())
                ack = await self._connack
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            self._give_up_connecting()
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise MqttError(f"cannot connect to {broker}: {reason}") from None
        except MqttError:
            self._give_up_connecting()
            raise
        # MQTT 5 §3.2.2.3.14: the broker's Server Keep Alive replaces ours.
        self._keepalive_now = (
            ack.server_keepalive if ack.server_keepalive is not None else self.keepalive
        )
        self._send_quota = ack.receive_maximum
        self._resend()
        self._ticker = self._loop.create_task(self._tick(), name=f"mqtt-keepalive-{self.client_id}")
        try:
            await self._subscribe_all()
        except MqttError:
            self._drop_link()
            raise
        self._connected.set()
        self._sync_reading()
        if self._on_connect is not None:
            self._on_connect(ack.session_present)
        return ack.session_present

    def _connect_packet(self) -> bytes:
        return packets.connect(
            client_id=self.client_id,
            v5=self._v5,
            clean_start=self.clean_start,
            keepalive=self.keepalive,
            session_expiry=self.session_expiry,
            receive_maximum=self._receive_maximum,
            username=self.broker.username,
            password=self.broker.password,
        )

    async def _subscribe_all(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 -- default
        """Subscribe on every connection, even to a resumed session: Mosquitto 2.0.11 drops
        shared subscriptions when it restarts (see ``aio.py``). Waits for the SUBACK."""
        if not self.subscriptions:
            return
        packet_id = self._outgoing.allocate_id(busy=self._subacks)
        done = self._subacks[packet_id] = self._loop.create_future()
        self._send(packets.subscribe(packet_id, self.subscriptions, v5=self._v5))
        try:
            async with asyncio.timeout(timeout):
                reasons = await done
        except TimeoutError:
            raise MqttError("no SUBACK from the broker") from None
        finally:
            self._subacks.pop(packet_id, None)
        refused = [
            topic
            for (topic, _), reason in zip(self.subscriptions, reasons, strict=False)
            if reason >= 0x80  # MQTT 5 §3.9.3: 0x80 and above refuse
        ]
        if refused:
            raise MqttError(f"broker refused subscriptions to {', '.join(refused)}")

    async def run(
        self,
        *,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
        on_error: Callable[[MqttError, float], None] | None = None,
    ) -> None:
        """Stay connected until cancelled or :meth:`disconnect`: reconnect with backoff."""
        await stay_connected(self, backoff=backoff, rng=rng, on_error=on_error)

    async def disconnect(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 -- a sane default
        """Disconnect cleanly (the session stays on the broker unless clean_start)."""
        self._closing = True
        link = self._link
        if link is not None and link.transport is not None:
            if self._link_up:
                self._send(packets.DISCONNECT)
                self._flush()
            link.transport.close()
            lost = self._lost
            if lost is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await asyncio.shield(lost)
        self._drop_link()

    def abort(self) -> None:
        """Drop the connection without DISCONNECT: what a crash looks like to the broker."""
        self._drop_link()

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        """Queue a message, waiting while ``max_pending`` are unacknowledged; its packet id.

        QoS 1 messages given while disconnected go out on the next connection.
        """
        if qos == 0:
            if not self._link_up:
                raise MqttError("publish failed: not connected")
            self._send(packets.publish(topic, payload, qos=0, packet_id=0, v5=self._v5))
            return 0
        if len(self._outgoing) >= self._max_pending:
            # The room comes from PUBACKs: read them even while paused (see the module doc).
            self._room_waiters += 1
            self._sync_reading()
            try:
                while len(self._outgoing) >= self._max_pending:
                    self._room.clear()
                    await self._room.wait()
            finally:
                self._room_waiters -= 1
                self._sync_reading()
        packet_id = self._outgoing.allocate_id(busy=self._subacks)
        self._outgoing.add(packet_id, Outgoing(topic, payload, qos))
        self._pump()
        return packet_id

    def ack(self, message: MqttMessage) -> bool:
        """Acknowledge a received message (manual_ack mode); False when it is too late.

        A message received on an earlier connection cannot be acknowledged any more: the
        broker will deliver it again on this one (MQTT 3.1.1 §4.4), and its packet id may by
        now name another message.
        """
        if message.qos == 0 or message.generation != self.generation or not self._link_up:
            return False
        self._send(packets.puback(message.mid))
        return True

    def pause_reading(self) -> None:
        """Stop reading the socket: the broker sees TCP back-pressure.

        Except while connecting or while :meth:`publish` waits for room: those need the
        broker's acknowledgements, and messages that come with them are still delivered.
        """
        self._paused = True
        self._sync_reading()

    def resume_reading(self) -> None:
        self._paused = False
        self._sync_reading()

    def _sync_reading(self) -> None:
        link = self._link
        if link is None or link.transport is None or link.transport.is_closing():
            return
        wanted = not self._paused or self._room_waiters > 0 or not self._connected.is_set()
        if wanted and not link.transport.is_reading():
            link.transport.resume_reading()
        elif not wanted and link.transport.is_reading():
            link.transport.pause_reading()

    def _resend(self) -> None:
        """After a CONNACK: everything unacknowledged goes out again, in its order."""
        self._outgoing.restart()
        self._pump()

    def _pump(self) -> None:
        """Send queued publishes while the broker's Receive Maximum allows."""
        if not self._link_up:
            return
        for packet_id, message, dup in self._outgoing.due(self._send_quota):
            self._send(
                packets.publish(
                    message.topic,
                    message.payload,
                    qos=message.qos,
                    packet_id=packet_id,
                    v5=self._v5,
                    dup=dup,
                )
            )

    def _send(self, data: bytes) -> None:
        """Write at the end of this turn of the event loop, together with whatever else."""
        self._writes.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        writes, self._writes = self._writes, []
        link = self._link
        if writes and link is not None and link.transport is not None:
            link.transport.write(b"".join(writes))
            self._last_write = time.monotonic()

    def _data(self, link: _Link, data: bytes) -> None:
        if link is not self._link:
            return
        try:
            for packet in self._reader.feed(data):
                self._handle(packet)
                if link is not self._link:
                    return  # the packet ended the connection
        except MalformedPacket as exc:
            self._abort(f"the broker sent a malformed packet: {exc}")

    def _handle(self, packet: Packet) -> None:
        kind = packet.type
        if kind is PacketType.PUBLISH:
            self._deliver(packet)
        elif kind is PacketType.PUBACK:
            self._acknowledged(packets.read_packet_id(packet))
        elif kind is PacketType.CONNACK:
            self._connack_received(packets.read_connack(packet, v5=self._v5))
        elif kind is PacketType.SUBACK:
            packet_id, reasons = packets.read_suback(packet, v5=self._v5)
            future = self._subacks.get(packet_id)
            if future is not None and not future.done():
                future.set_result(reasons)
        elif kind is PacketType.PINGRESP:
            self._ping_sent = None
        elif kind is PacketType.DISCONNECT:
            reason = packets.read_disconnect_reason(packet)
            self._abort(f"the broker disconnected us (reason 0x{reason:02x})")
        else:
            raise MalformedPacket(f"unexpected {kind.name} from the broker")

    def _deliver(self, packet: Packet) -> None:
        publish = packets.read_publish(packet, v5=self._v5)
        if publish.qos > 1:
            raise MalformedPacket("QoS 2 message on a QoS 1 subscription")
        if publish.qos == 1 and not self._manual_ack:
            self._send(packets.puback(publish.packet_id))
        self._on_message(
            MqttMessage(
                topic=publish.topic,
                payload=publish.payload,
                qos=publish.qos,
                mid=publish.packet_id,
                retain=publish.retain,
                duplicate=publish.dup,
                generation=self.generation,
            )
        )

    def _connack_received(self, ack: packets.ConnAck) -> None:
        future = self._connack
        if future is None or future.done():
            raise MalformedPacket("a CONNACK out of turn")
        if ack.reason:
            detail = f": {ack.reason_string}" if ack.reason_string else ""
            future.set_exception(
                MqttError(f"broker refused the connection (code 0x{ack.reason:02x}){detail}")
            )
            return
        # Before any message that follows the CONNACK is read: they belong to this one.
        self.generation += 1
        self._link_up = True
        future.set_result(ack)

    def _acknowledged(self, packet_id: int) -> None:
        if not self._outgoing.acknowledged(packet_id):
            return  # a PUBACK for a publish already acknowledged: harmless (a resend)
        if len(self._outgoing) < self._max_pending:
            self._room.set()
        self._pump()
        if self._on_published is not None:
            self._on_published(packet_id)

    async def _tick(self) -> None:
        """Keep-alive (MQTT 3.1.1 §3.1.2.10): a PINGREQ after ``keepalive`` seconds without
        sending anything; no answer within another ``keepalive`` means the link is dead."""
        while self._link_up:
            await asyncio.sleep(_TICK)
            keepalive = self._keepalive_now
            if not keepalive:
                continue
            now = time.monotonic()
            if self._ping_sent is not None and now - self._ping_sent >= keepalive:
                self._abort("no PINGRESP from the broker")
                return
            if self._ping_sent is None and now - self._last_write >= keepalive:
                self._ping_sent = now
                self._send(packets.PINGREQ)

    def _abort(self, reason: str) -> None:
        link = self._link
        if link is None:
            return
        if link.transport is not None:
            link.transport.abort()
        self._link_lost(link, MqttError(reason))

    def _give_up_connecting(self) -> None:
        connack = self._connack
        if connack is not None and not connack.done():
            connack.cancel()  # nobody awaits it any more
        self._drop_link()

    def _drop_link(self) -> None:
        link = self._link
        if link is None:
            return
        if link.transport is not None:
            link.transport.abort()
        self._link_lost(link, None)

    def _link_lost(self, link: _Link, exc: Exception | None) -> None:
        if link is not self._link:
            return
        self._link = None
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._link_up = False
        self._ping_sent = None
        self._writes = []
        ticker = self._ticker
        if ticker is not None and ticker is not asyncio.current_task():
            ticker.cancel()
        self._ticker = None
        future = self._connack
        if future is not None and not future.done():
            future.set_exception(MqttError(f"disconnected before CONNACK: {exc or 'closed'}"))
        for waiter in self._subacks.values():
            if not waiter.done():
                waiter.set_exception(MqttError("disconnected before SUBACK"))
        lost = self._lost
        if lost is not None and not lost.done():
            lost.set_result(None)
        if was_connected and self._on_disconnect is not None:
            self._on_disconnect()
