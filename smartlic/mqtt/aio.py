"""paho-mqtt driven from asyncio, after aiomqtt 2.5, with what smartlic needs on top.

paho's own ``loop_start()`` runs a thread per client around ``select()``, which cannot watch
more than ~1,000 sockets. Instead, paho's socket callbacks (``on_socket_open``,
``on_socket_register_write``, ...) register each socket with the running asyncio loop
(``add_reader``/``add_writer`` → ``loop_read``/``loop_write``), and one shared ticker calls
``loop_misc`` (keep-alive pings) for every client once a second. One process then holds
thousands of connections on one epoll loop without threads.

What aiomqtt 2.5 does not offer and smartlic needs:

* **manual acknowledgement** (paho ``manual_ack``): the collector acks a message only after
  its decision is committed (SPEC §5);
* **read pausing**: :meth:`AsyncMqttClient.pause_reading` stops reading the socket, which
  pushes back on the broker through TCP instead of buffering without bound. Acknowledgements
  share that socket, so a paused client still reads while it connects (CONNACK, SUBACK) and
  while a :meth:`~AsyncMqttClient.publish` waits for window room (PUBACKs): otherwise a
  service that pauses until it has published would wait for itself. MQTT 5 also gets
  protocol-level flow control: ``receive_maximum`` bounds the QoS 1 messages the broker
  sends before we acknowledge them (MQTT 5 §4.9), which bounds what arrives in those windows;
* **a bounded publish window**: paho keys queued QoS 1 messages by a 16-bit packet id, so more
  than 65,535 unacknowledged messages overwrite each other; :meth:`AsyncMqttClient.publish`
  waits for room below ``max_pending`` instead;
* **reconnection** with exponential backoff and jitter that resumes the persistent session
  (:meth:`AsyncMqttClient.run`);
* **re-sending left to the caller** (``resend_on_reconnect=False``): paho re-sends its
  unacknowledged publishes after every CONNACK (MQTT 3.1.1 §4.4); a caller with its own
  durable outbox (the agent core) drops them instead and sends what is still unanswered, so
  nothing goes out twice and its window stays the bound on what is in flight.
"""

from __future__ import annotations

__all__ = [
    "SESSION_EXPIRY_NEVER",
    "AsyncMqttClient",
    "Backoff",
    "MqttError",
    "MqttMessage",
    "ProtocolName",
]

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from smartlic.mqtt.base import MqttClient
from smartlic.mqtt.common import (
    SESSION_EXPIRY_NEVER,
    Backoff,
    MqttError,
    MqttMessage,
    ProtocolName,
)
from smartlic.mqtt.paho_loop import Ticker, connect_pool, connect_properties

if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

    from paho.mqtt.properties import Properties


_PAHO_INFLIGHT: Final = 32


class AsyncMqttClient(MqttClient):
    """paho-mqtt on the running asyncio loop (see the module doc and :class:`MqttClient`)."""

    def _setup(self) -> None:
        self._pending: set[int] = set()
        self._subacks: dict[int, asyncio.Future[list[Any]]] = {}
        self._connack: asyncio.Future[bool] | None = None
        self._reader_fd: int | None = None
        self._sock: socket.socket | None = None
        self._dialing: asyncio.Future[MQTTErrorCode] | None = None
        """paho's blocking ``connect()`` in its thread, which a timeout cannot stop."""
        self._wants_socket = False
        """Whether a socket paho opens now belongs to a connection still wanted."""
        self._inflight_limit = min(self._max_pending, _PAHO_INFLIGHT)
        if self.broker.password_alone:
            # MQTT 5 §3.1.2.9 allows a password alone, but paho 2.2 sends a password only
            # with a user name: connecting would be anonymous, which nobody asked for.
            raise ValueError(
                f"{self.broker}: paho cannot send a password without a user name "
                "(NativeMqttClient can, in MQTT 5)"
            )
        self._client = self._make_client(manual_ack=self._manual_ack)

    def _make_client(self, *, manual_ack: bool) -> paho.Client:
        v5 = self.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else self.clean_start,
            manual_ack=manual_ack,
        )
        # paho scans every outstanding message on each PUBACK (Client._update_inflight), so
        # its cost per acknowledgement grows with its in-flight limit: keep that small (the
        # rest wait, queued inside paho) and let our window (max_pending) bound the total.
        client.max_inflight_messages_set(self._inflight_limit)
        client.max_queued_messages_set(0)
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls is not None:
            client.tls_set_context(self.broker.tls.context())
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_subscribe
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._socket_register_write
        client.on_socket_unregister_write = self._socket_unregister_write
        return client

    @property
    def pending(self) -> int:
        """QoS 1 messages handed to paho and not yet acknowledged by the broker."""
        return len(self._pending)

    async def connect(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109 -- a sane default
        self._end_closing()
        self._connack = self._loop.create_future()
        self._lost = self._loop.create_future()
        properties = None
        if self.protocol == "5":
            properties = connect_properties(self.session_expiry, self._receive_maximum)
        try:
            async with asyncio.timeout(timeout):
                earlier = self._dialing
                if earlier is not None:
                    # An abandoned attempt still blocks in paho's connect(): one paho client
                    # must not connect twice at once, so wait for it (asyncio.wait never raises
                    # what it raised).
                    await asyncio.wait((earlier,))
                self._wants_socket = True
                self._dialing = dialing = self._loop.run_in_executor(
                    connect_pool(),
                    lambda: self._client.connect(
                        self.broker.host,
                        self.broker.port,
                        keepalive=self.keepalive,
                        clean_start=self.clean_start if self.protocol == "5" else 3,
                        properties=properties,
                    ),
                )
                dialing.add_done_callback(self._dialed)
                # Shielded: a timeout cancels only this wait, not paho's connect() in its
                # thread, and its socket must still be closed when it comes (see _abandon).
                rc = await asyncio.shield(dialing)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    raise MqttError(f"cannot connect to {self.broker}: {paho.error_string(rc)}")
                session_present = await self._connack
        except (OSError, TimeoutError) as exc:
            self._abandon(exc)
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
            raise MqttError(f"cannot connect to {self.broker}: {reason}") from None
        except (MqttError, asyncio.CancelledError) as exc:
            self._abandon(exc)
            raise
        Ticker.of(self._loop).add(self)
        return await self._established(session_present=session_present)

    async def _subscribe_all(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 -- default
        """Subscribe and wait for the SUBACK: until then the broker may not have stored it."""
        if not self.subscriptions:
            return
        rc, mid = self._client.subscribe(self.subscriptions)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"subscribe failed: {paho.error_string(rc)}")
        reasons = await self._suback(self._subacks, mid, timeout)
        self._refused(reason.is_failure for reason in reasons)

    async def disconnect(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109 -- a sane default
        self._begin_closing()
        lost = self._lost
        if self._sock is not None and self.connected:
            self._client.disconnect()
            if lost is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await asyncio.shield(lost)
        self._drop_socket()
        Ticker.of(self._loop).discard(self)

    def abort(self) -> None:
        # Closed behind paho's back, which therefore never reports it: end the link here, as
        # the native client does, so that wait_lost(), on_disconnect and run() see it.
        self._drop_socket()
        Ticker.of(self._loop).discard(self)
        self._link_gone("aborted")

    def _abandon(self, reason: BaseException) -> None:
        """connect() failed: nothing of this attempt may live on. A socket paho opens later
        (its connect() outlasted the timeout) is closed as it comes, so no CONNACK is read and
        the client stays disconnected."""
        self._wants_socket = False
        self._drop_socket()
        connack = self._connack
        if connack is not None and not connack.done():
            connack.cancel()
        # A CONNACK may have been accepted just as the timeout struck.
        self._link_gone(reason)

    def _dialed(self, dialing: asyncio.Future[MQTTErrorCode]) -> None:
        if self._dialing is dialing:
            self._dialing = None
        if not dialing.cancelled():
            # Retrieved, so that a late failure of an abandoned attempt is not logged.
            dialing.exception()

    def _link_gone(self, reason: object) -> None:
        for waiter in self._subacks.values():
            if not waiter.done():
                waiter.set_exception(MqttError("disconnected before SUBACK"))
        self._link_ended(self._connack, reason)

    def publish_nowait(self, topic: str, payload: bytes, qos: int = 1) -> int:
        info = self._client.publish(topic, payload, qos)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0:
            # Queued by paho for the next connection of this session (is_published() raises).
            self._pending.add(info.mid)
        elif info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttError(f"publish failed: {paho.error_string(info.rc)}")
        elif qos > 0 and not info.is_published():
            self._pending.add(info.mid)
        return info.mid

    def _send_ack(self, message: MqttMessage) -> bool:
        return self._client.ack(message.mid, message.qos) == MQTTErrorCode.MQTT_ERR_SUCCESS

    @property
    def reading(self) -> bool:
        return self._reader_fd is not None

    def _should_read(self) -> bool:
        return self._sock is not None and self._wants_reading()

    def _sync_reading(self) -> None:
        sock = self._sock
        if self._should_read() and sock is not None:
            fileno = sock.fileno()
            if self._reader_fd != fileno and fileno >= 0:
                self._loop.add_reader(fileno, self._read)
                self._reader_fd = fileno
                # bytes may already sit in paho's or the kernel's buffer; read them now
                self._loop.call_soon(self._read)
        elif self._reader_fd is not None:
            self._loop.remove_reader(self._reader_fd)
            self._reader_fd = None

    def misc(self) -> None:
        if self._sock is not None:
            self._client.loop_misc()

    def _read(self) -> None:
        if not self._should_read():
            return
        self._client.loop_read()
        # TLS: what one record held past what paho read sits decrypted in the SSL socket,
        # which leaves the file descriptor unreadable: read on while it has some (paho's own
        # loop checks ``pending()`` for the same reason).
        while self._should_read() and _ssl_pending(self._sock) > 0:
            self._client.loop_read()

    def _write(self) -> None:
        if self._sock is not None:
            self._client.loop_write()

    def _drop_socket(self) -> None:
        sock = self._sock
        if sock is not None:
            self._socket_close(self._client, None, sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _socket_open(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        def register() -> None:
            if not self._wants_socket:
                # From a connect() that has given up already (see _abandon).
                with contextlib.suppress(OSError):
                    sock.close()
                return
            self._sock = sock
            self._sync_reading()

        self._call_in_loop(register)

    def _socket_close(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        def unregister() -> None:
            fileno = sock.fileno()
            if fileno >= 0:
                self._loop.remove_reader(fileno)
                self._loop.remove_writer(fileno)
            if self._sock is sock:
                if self._reader_fd is not None and self._reader_fd != fileno:
                    # closed already (fileno -1): forget the number it was watched under
                    self._loop.remove_reader(self._reader_fd)
                self._sock = None
                self._reader_fd = None

        if self._in_loop_thread():
            unregister()
        else:
            self._call_in_loop(unregister)

    def _socket_register_write(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        def register() -> None:
            if sock.fileno() >= 0:
                self._loop.add_writer(sock.fileno(), self._write)

        if self._in_loop_thread():
            register()
        else:
            self._call_in_loop(register)

    def _socket_unregister_write(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        def unregister() -> None:
            if sock.fileno() >= 0:
                self._loop.remove_writer(sock.fileno())

        if self._in_loop_thread():
            unregister()
        else:
            self._call_in_loop(unregister)

    def _call_in_loop(self, callback: Callable[[], None]) -> None:
        """``callback`` on the loop, from paho's thread, or not at all once the loop is closed:
        paho's ``__del__`` closes its sockets whenever the client is collected, which may be
        after the loop it ran on has ended, and must not raise there."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback)

    def _in_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _handle_connect(
        self,
        _client: paho.Client,
        _userdata: Any,
        flags: paho.ConnectFlags,
        reason: Any,
        properties: Properties | None = None,
    ) -> None:
        future = self._connack
        if future is None or future.done():
            return
        if reason.is_failure:
            future.set_exception(MqttError(f"broker refused the connection: {reason}"))
        else:
            self._limit_inflight(properties)
            self._link_accepted()
            future.set_result(bool(flags.session_present))

    def _limit_inflight(self, properties: Properties | None) -> None:
        """MQTT 5 §4.9: send no more unacknowledged QoS 1 messages than the broker's Receive
        Maximum (CONNACK §3.2.2.3.3), which paho 2.2 ignores; each connection starts again
        from our own limit, as a broker may change its own."""
        limit = self._inflight_limit
        receive_maximum = getattr(properties, "ReceiveMaximum", None)
        if isinstance(receive_maximum, int) and receive_maximum > 0:
            limit = min(limit, receive_maximum)
        client = self._client
        # paho's setter refuses an open connection, for fear of a switch between 0 (no limit)
        # and a limit: both values here are limits.
        client._max_inflight_messages = limit  # noqa: SLF001 -- the setter refuses now
        # What paho re-sends right after this callback is every message its reconnection
        # reset marked for publishing, and paho 2.2's reset marks them all (it never counts
        # them against the limit): those beyond it wait in paho's queue instead, for the
        # PUBACKs, as paho's own publish() would leave them. paho's re-send stops at the first
        # queued message, so the ones marked go first, in their order.
        with client._out_message_mutex:  # noqa: SLF001 -- paho's lock on its outgoing messages
            marked = 0
            for message in client._out_messages.values():  # noqa: SLF001 -- as above
                if message.qos == 1 and message.state == paho.mqtt_ms_publish:
                    marked += 1
                    if marked > limit:
                        message.state = paho.mqtt_ms_queued

    def _drop_unacknowledged(self) -> None:
        # paho re-sends its queue right after the CONNACK callback returns (see module doc)
        self._client.drop_out_messages()
        self._pending.clear()

    def _handle_disconnect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason: Any,
        _properties: Properties | None = None,
    ) -> None:
        self._link_gone(reason)

    def _handle_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        self._on_message(
            MqttMessage(
                topic=msg.topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                mid=msg.mid,
                retain=bool(msg.retain),
                duplicate=bool(msg.dup),
                generation=self.generation,
            )
        )

    def _handle_subscribe(
        self, _client: paho.Client, _userdata: Any, mid: int, reasons: Any, _properties: Any
    ) -> None:
        future = self._subacks.get(mid)
        if future is not None and not future.done():
            future.set_result(list(reasons))

    def _handle_publish(
        self, _client: paho.Client, _userdata: Any, mid: int, reason: Any, _properties: Any
    ) -> None:
        self._pending.discard(mid)
        refused = getattr(reason, "is_failure", False)
        self._acknowledged(mid, refused=int(reason.value) if refused else None)


def _ssl_pending(sock: Any) -> int:
    pending = getattr(sock, "pending", None)
    return int(pending()) if pending is not None else 0
