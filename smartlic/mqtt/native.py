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
from typing import Final

from smartlic.mqtt import packets
from smartlic.mqtt.base import MqttClient
from smartlic.mqtt.common import (
    MqttError,
    MqttMessage,
)
from smartlic.mqtt.outgoing import MAX_PACKET_ID, Outgoing, OutgoingQueue
from smartlic.mqtt.packets import MalformedPacket, Packet, PacketReader, PacketType

_TICK: Final = 1.0
MAX_PACKET: Final = 1 << 20
"""The largest packet read whole: far above smartlic's 4 KiB messages and the 64 KiB a dead
letter keeps. MQTT 5 brokers are told (Maximum Packet Size, MQTT 5 §3.1.2.11.4) and drop
larger messages for us; a larger one that comes anyway is delivered cut to this size, so a
hostile device cannot make the collector hold hundreds of megabytes or lose its connection."""


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


class NativeMqttClient(MqttClient):
    """The collector's MQTT connection, without paho (see the module doc and
    :class:`MqttClient`)."""

    def _setup(self) -> None:
        self._v5 = self.protocol == "5"
        broker = self.broker
        self._tls = broker.tls.context() if broker.tls is not None else None
        """Built once, so unusable TLS files are an error at once, not at each connection."""
        self._max_pending = min(self._max_pending, MAX_PACKET_ID - 16)  # ids left for SUBSCRIBE
        self._link: _Link | None = None
        self._reader = PacketReader(max_size=MAX_PACKET)
        self._outgoing = OutgoingQueue()
        self._send_quota = MAX_PACKET_ID
        self._send_limit: int | None = None
        """The broker's Maximum Packet Size on this connection (MQTT 5 §3.2.2.3.6)."""
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._connack: asyncio.Future[packets.ConnAck] | None = None
        self._writes: list[bytes] = []
        self._flush_scheduled = False
        self._last_write = 0.0
        self._ping_sent: float | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._keepalive_now = self.keepalive

    @property
    def pending(self) -> int:
        return len(self._outgoing)

    @property
    def reading(self) -> bool:
        link = self._link
        return link is not None and link.transport is not None and link.transport.is_reading()

    async def connect(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109 -- a sane default
        self._end_closing()
        self._connack = self._loop.create_future()
        self._lost = self._loop.create_future()
        self._reader = PacketReader(max_size=MAX_PACKET)
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
                if self._closing:
                    # disconnect() came during the TCP or TLS handshake, when there was no
                    # link for it to close: close this one, or run() would wait on it for good.
                    if link.transport is not None:
                        link.transport.close()
                    raise MqttError(f"disconnect() while connecting to {broker}")
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
        if not self._link_up:
            # Accepted, then dropped in the same read (a DISCONNECT right after the CONNACK).
            self._give_up_connecting()
            raise MqttError(f"{broker} closed the connection right after accepting it")
        self._pump()
        self._ticker = self._loop.create_task(self._tick(), name=f"mqtt-keepalive-{self.client_id}")
        return await self._established(session_present=ack.session_present)

    def _connect_packet(self) -> bytes:
        return packets.connect(
            client_id=self.client_id,
            v5=self._v5,
            clean_start=self.clean_start,
            keepalive=self.keepalive,
            session_expiry=self.session_expiry,
            receive_maximum=self._receive_maximum,
            maximum_packet_size=MAX_PACKET,
            username=self.broker.username,
            password=self.broker.password,
        )

    async def _subscribe_all(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 -- default
        """Subscribe (on every connection) and wait for the SUBACK."""
        if not self.subscriptions:
            return
        packet_id = self._outgoing.allocate_id(busy=self._subacks)
        self._send(packets.subscribe(packet_id, self.subscriptions, v5=self._v5))
        reasons = await self._suback(self._subacks, packet_id, timeout)
        self._refused(reason >= 0x80 for reason in reasons)  # MQTT 5 §3.9.3: 0x80 up refuse

    async def disconnect(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 -- a sane default
        self._begin_closing()
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
        self._drop_link()

    def release_window(self) -> None:
        """Let every publish through at once, whatever ``max_pending``: for a shutdown, when
        waiting for room would wait for a broker that may not come back. What is beyond the
        window waits in the queue; a packet id is still never reused while its message is
        unacknowledged (``OutgoingQueue.allocate_id``)."""
        self._window_released = True
        self._room.set()

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 1) -> int:
        if qos not in (0, 1):
            # The client speaks QoS 0 and 1 only: a PUBREC would end the connection, and the
            # message would go again on every one after it.
            raise ValueError(f"qos must be 0 or 1, not {qos!r}")
        if qos == 0:
            if not self._link_up:
                raise MqttError("publish failed: not connected")
            packet = packets.publish(topic, payload, qos=0, packet_id=0, v5=self._v5)
            if self._too_large(packet):
                raise MqttError(f"publish failed: over the broker's {self._send_limit} bytes")
            self._send(packet)
            return 0
        try:
            packet_id = self._outgoing.allocate_id(busy=self._subacks)
        except OverflowError:
            raise MqttError("publish failed: 65,535 messages await acknowledgement") from None
        self._outgoing.add(packet_id, Outgoing(topic, payload, qos))
        self._pump()
        return packet_id

    def _send_ack(self, message: MqttMessage) -> bool:
        self._send(packets.puback(message.mid))
        return True

    def _sync_reading(self) -> None:
        link = self._link
        if link is None or link.transport is None or link.transport.is_closing():
            return
        wanted = self._wants_reading()
        if wanted and not link.transport.is_reading():
            link.transport.resume_reading()
        elif not wanted and link.transport.is_reading():
            link.transport.pause_reading()

    def _pump(self) -> None:
        """Send queued publishes while the broker's Receive Maximum allows.

        One over the broker's Maximum Packet Size is not sent: the broker would end the
        connection (MQTT 5 §3.2.2.3.6), and the message would go again, and end it again, on
        every connection after. It is refused instead, as a PUBACK with 0x95 would refuse it,
        and as late: not before ``publish_nowait`` has returned its packet id to the caller,
        who could not tell what the refusal was about.
        """
        if not self._link_up:
            return
        for packet_id, message, dup in self._outgoing.due(self._send_quota):
            packet = packets.publish(
                message.topic,
                message.payload,
                qos=message.qos,
                packet_id=packet_id,
                v5=self._v5,
                dup=dup,
            )
            if self._too_large(packet):
                self._loop.call_soon(self._puback, packet_id, packets.PACKET_TOO_LARGE)
            else:
                self._send(packet)

    def _too_large(self, packet: bytes) -> bool:
        limit = self._send_limit
        return limit is not None and len(packet) > limit

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
            self._drop_link(f"the broker sent a malformed packet: {exc}")

    def _handle(self, packet: Packet) -> None:
        kind = packet.type
        if packet.truncated and kind is not PacketType.PUBLISH:
            raise MalformedPacket(f"a {kind.name} over {MAX_PACKET} bytes")
        if kind is PacketType.PUBLISH:
            self._deliver(packet)
        elif kind is PacketType.PUBACK:
            self._puback(*packets.read_puback(packet))
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
            self._drop_link(f"the broker disconnected us (reason 0x{reason:02x})")
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
        # Set up for the new connection before anything after the CONNACK is read: a message
        # in the same read may be answered at once (on_message publishing), and must be
        # numbered and counted against this connection's quota, not the last one's.
        # MQTT 5 §3.2.2.3.14: the broker's Server Keep Alive replaces ours.
        self._keepalive_now = (
            ack.server_keepalive if ack.server_keepalive is not None else self.keepalive
        )
        self._send_quota = ack.receive_maximum
        self._send_limit = ack.maximum_packet_size
        self._link_accepted()
        self._outgoing.restart()
        future.set_result(ack)

    def _drop_unacknowledged(self) -> None:
        self._outgoing.clear()

    def _puback(self, packet_id: int, reason: int) -> None:
        if not self._outgoing.acknowledged(packet_id):
            return  # a PUBACK for a publish already acknowledged: harmless (a resend)
        self._pump()
        # MQTT 5 §3.4.2.1: 0x80 and up refuse the message (an ACL, a quota); it is done with
        # all the same (§4.4: not sent again), but it was not delivered.
        self._acknowledged(packet_id, refused=reason if reason >= 0x80 else None)

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
                if not self.reading:
                    # Paused (back-pressure, a store outage): the PINGRESP waits unread
                    # behind the messages. The PINGREQs keep the broker's side alive.
                    self._ping_sent = None
                    continue
                self._drop_link("no PINGRESP from the broker")
                return
            if self._ping_sent is None and now - self._last_write >= keepalive:
                self._ping_sent = now
                self._send(packets.PINGREQ)

    def _give_up_connecting(self) -> None:
        connack = self._connack
        if connack is not None and not connack.done():
            connack.cancel()  # nobody awaits it any more
        self._drop_link()

    def _drop_link(self, reason: str | None = None) -> None:
        """Close the connection at once, without DISCONNECT."""
        link = self._link
        if link is None:
            return
        if link.transport is not None:
            link.transport.abort()
        self._link_lost(link, MqttError(reason) if reason else None)

    def _link_lost(self, link: _Link, exc: Exception | None) -> None:
        if link is not self._link:
            return
        self._link = None
        self._ping_sent = None
        self._writes = []
        ticker = self._ticker
        if ticker is not None and ticker is not asyncio.current_task():
            ticker.cancel()
        self._ticker = None
        for waiter in self._subacks.values():
            if not waiter.done():
                waiter.set_exception(MqttError("disconnected before SUBACK"))
        self._link_ended(self._connack, exc or "closed")
