"""The collector's own MQTT client against a scripted broker on loopback: what Mosquitto will
not do on demand (malformed packets, refusals, silence, a small Receive Maximum)."""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING, Any

import pytest
from scripted_broker import ACCEPT, Peer, ScriptedBroker, serving
from smartlic.mqtt import packets
from smartlic.mqtt.aio import AsyncMqttClient
from smartlic.mqtt.broker import MosquittoBroker
from smartlic.mqtt.common import Backoff, MqttError, MqttMessage
from smartlic.mqtt.native import MAX_PACKET, NativeMqttClient
from smartlic.mqtt.packets import PacketType
from smartlic.mqtt.url import BrokerAddress, TlsSettings

from pki_support import issue_certificate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(30)

RESUME = b"\x20\x03\x01\x00\x00"
"""A v5 CONNACK with the session present."""


@pytest.fixture
async def broker() -> AsyncIterator[ScriptedBroker]:
    async with serving() as scripted:
        yield scripted


def _client(broker: ScriptedBroker, **options: object) -> NativeMqttClient:
    inbox: list[MqttMessage] = []
    return NativeMqttClient(
        client_id="collector",
        broker=broker.address,
        on_message=inbox.append,
        **options,  # type: ignore[arg-type]  # keyword options of the constructor
    )


async def _connected(broker: ScriptedBroker, client: NativeMqttClient) -> Peer:
    connecting = asyncio.create_task(client.connect())
    peer = await broker.accept()
    await connecting
    return peer


async def test_a_malformed_packet_ends_the_connection_and_run_connects_again(
    broker: ScriptedBroker,
) -> None:
    """Bad bytes from the broker are a lost connection, never an exception in the service."""
    lost: list[str] = []
    client = _client(broker, on_disconnect=lambda: lost.append("lost"))
    runner = asyncio.create_task(client.run(backoff=Backoff(base=0.01, cap=0.05, floor=0.01)))
    first = await broker.accept()
    await client.wait_connected()

    await first.send(b"\x00\x00")  # packet type 0 is reserved
    await broker.accept()
    async with asyncio.timeout(5):
        while client.generation < 2:
            await asyncio.sleep(0.01)

    assert ["lost"] == lost
    await client.disconnect()
    await runner


async def test_a_disconnect_from_the_broker_ends_the_connection(broker: ScriptedBroker) -> None:
    lost: list[str] = []
    client = _client(broker, on_disconnect=lambda: lost.append("lost"))
    peer = await _connected(broker, client)

    await peer.send(b"\xe0\x01\x8b")  # v5 DISCONNECT: server shutting down
    async with asyncio.timeout(5):
        await client.wait_lost()

    assert (["lost"], False) == (lost, client.connected)


async def test_a_refused_connection_says_the_reason_code_and_string(
    broker: ScriptedBroker,
) -> None:
    client = _client(broker)
    connecting = asyncio.create_task(client.connect())
    refusal = b"\x20\x0f\x00\x87\x0c\x1f\x00\x09not yours"  # 0x87 not authorized

    await broker.accept(connack=refusal)

    with pytest.raises(MqttError, match=r"refused the connection \(code 0x87\): not yours"):
        await connecting


async def test_an_idle_client_pings_and_gives_up_on_a_silent_broker(
    broker: ScriptedBroker,
) -> None:
    """MQTT 3.1.1 §3.1.2.10: a PINGREQ after a keep-alive period of silence, and no PINGRESP
    within another means the link is dead."""
    client = _client(broker, keepalive=1)
    peer = await _connected(broker, client)

    await peer.expect(PacketType.PINGREQ)
    async with asyncio.timeout(5):
        await client.wait_lost()

    assert not client.connected


async def test_a_pingresp_keeps_the_connection(broker: ScriptedBroker) -> None:
    client = _client(broker, keepalive=1)
    peer = await _connected(broker, client)

    for _ in range(3):
        await peer.expect(PacketType.PINGREQ)
        await peer.send(b"\xd0\x00")

    assert client.connected
    await client.disconnect()


async def test_unacknowledged_publishes_go_out_again_with_dup_set(broker: ScriptedBroker) -> None:
    """MQTT 3.1.1 §4.4: on reconnection, the unacknowledged PUBLISH again, same packet id."""
    client = _client(broker)
    runner = asyncio.create_task(client.run(backoff=Backoff(base=0.01, cap=0.05, floor=0.01)))
    first = await broker.accept()
    await client.wait_connected()
    packet_id = await client.publish("d/1/down", b"notice")
    sent = packets.read_publish(await first.expect(PacketType.PUBLISH), v5=True)
    first.writer.close()

    second = await broker.accept(connack=RESUME)
    again = packets.read_publish(await second.expect(PacketType.PUBLISH), v5=True)
    await second.send(packets.puback(packet_id))
    async with asyncio.timeout(5):
        while client.pending:
            await asyncio.sleep(0.01)

    assert (packet_id, False, b"notice") == (sent.packet_id, sent.dup, sent.payload)
    assert (packet_id, True, b"notice") == (again.packet_id, again.dup, again.payload)
    await client.disconnect()
    await runner


async def test_the_brokers_receive_maximum_bounds_publishes_in_flight(
    broker: ScriptedBroker,
) -> None:
    """MQTT 5 §4.9: with Receive Maximum 2, the third publish waits for an acknowledgement."""
    client = _client(broker)
    connecting = asyncio.create_task(client.connect())
    peer = await broker.accept(connack=b"\x20\x06\x00\x00\x03\x21\x00\x02")
    await connecting
    ids = [await client.publish(f"d/{n}/down", b"x") for n in range(3)]

    sent = [await peer.expect(PacketType.PUBLISH) for _ in range(2)]
    with pytest.raises(TimeoutError):
        await peer.next(timeout=0.3)
    await peer.send(packets.puback(ids[0]))
    sent.append(await peer.expect(PacketType.PUBLISH))

    assert ids == [packets.read_publish(p, v5=True).packet_id for p in sent]
    await client.disconnect()


async def test_an_oversize_message_arrives_cut_and_the_connection_stays(
    broker: ScriptedBroker,
) -> None:
    """A message over MAX_PACKET (which an MQTT 5 broker is told not to send) is delivered cut
    to that size, can be acknowledged, and what follows it arrives whole."""
    inbox: list[MqttMessage] = []
    client = NativeMqttClient(
        client_id="collector", broker=broker.address, on_message=inbox.append, manual_ack=True
    )
    peer = await _connected(broker, client)
    huge = packets.publish("d/x/up", bytes(3 * MAX_PACKET), qos=1, packet_id=5, v5=True)
    small = packets.publish("d/x/up", b"next", qos=1, packet_id=6, v5=True)

    await peer.send(huge + small)
    async with asyncio.timeout(5):
        while len(inbox) < 2:
            await asyncio.sleep(0.01)
    assert client.ack(inbox[0])
    puback = await peer.expect(PacketType.PUBACK)

    assert (True, b"next") == (len(inbox[0].payload) < MAX_PACKET, inbox[1].payload)
    assert (5, True) == (packets.read_packet_id(puback), client.connected)
    await client.disconnect()


async def test_the_connect_tells_an_mqtt5_broker_the_largest_packet_we_take(
    broker: ScriptedBroker,
) -> None:
    client = _client(broker)
    peer = await _connected(broker, client)
    assert peer.connect is not None

    properties = packets.read_properties(peer.connect.body, 10)  # after name, level, flags

    assert MAX_PACKET == properties[packets.MAXIMUM_PACKET_SIZE]
    await client.disconnect()


async def test_publishing_past_every_packet_identifier_is_an_mqtt_error(
    broker: ScriptedBroker,
) -> None:
    """publish_nowait has no window: the 65,536th unacknowledged message has no id left."""
    client = _client(broker)
    for n in range(0xFFFF):
        client.publish_nowait("t", bytes((n % 256,)))

    with pytest.raises(MqttError, match="65,535 messages await acknowledgement"):
        client.publish_nowait("t", b"one too many")


async def _waiting_for_room(broker: ScriptedBroker) -> tuple[NativeMqttClient, asyncio.Task[int]]:
    """A client, never connected, whose window of one is full, and a publish waiting for room."""
    client = _client(broker, max_pending=1)
    await client.publish("t", b"fills the window")
    waiting = asyncio.create_task(client.publish("t", b"waits for room"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    return client, waiting


async def test_a_publish_waiting_for_room_goes_through_once_the_window_is_released(
    broker: ScriptedBroker,
) -> None:
    """For a shutdown while the broker is away: the message waits in the queue instead."""
    client, waiting = await _waiting_for_room(broker)

    client.release_window()

    async with asyncio.timeout(1):
        await waiting
    assert 2 == client.pending


async def test_a_publish_waiting_for_room_goes_through_once_the_client_disconnects(
    broker: ScriptedBroker,
) -> None:
    client, waiting = await _waiting_for_room(broker)

    await client.disconnect()

    async with asyncio.timeout(1):
        await waiting


async def test_a_disconnect_ends_the_wait_before_the_next_attempt_at_once() -> None:
    """Backoff grows to half a minute in a long outage; a shutdown must not wait it out."""
    server = await asyncio.start_server(lambda _r, _w: None, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    server.close()
    await server.wait_closed()
    client = NativeMqttClient(
        client_id="collector", broker=BrokerAddress(host=host, port=port), on_message=print
    )
    failed = asyncio.Event()
    running = asyncio.create_task(
        client.run(backoff=Backoff(base=30, floor=30), on_error=lambda _e, _d: failed.set())
    )
    async with asyncio.timeout(5):
        await failed.wait()

    await client.disconnect()

    async with asyncio.timeout(1):
        await running


async def test_a_disconnect_during_the_handshake_ends_run(
    broker: ScriptedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no link yet, disconnect() found nothing to close; the link came up after it and
    run() waited on it for good, holding the collector's shutdown."""
    loop = asyncio.get_running_loop()
    create_connection = loop.create_connection

    async def slow_handshake(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)
        return await create_connection(*args, **kwargs)

    monkeypatch.setattr(loop, "create_connection", slow_handshake)
    client = _client(broker)
    runner = asyncio.create_task(client.run())
    await asyncio.sleep(0.1)

    await client.disconnect()
    async with asyncio.timeout(3):
        await runner

    assert not client.connected


async def test_a_connection_dropped_right_after_its_connack_is_not_connected(
    broker: ScriptedBroker,
) -> None:
    """A CONNACK and a DISCONNECT in one read: no on_connect without its on_disconnect."""
    events: list[str] = []
    client = _client(
        broker,
        on_connect=lambda _present: events.append("connect"),
        on_disconnect=lambda: events.append("disconnect"),
    )
    connecting = asyncio.create_task(client.connect())

    await broker.accept(connack=ACCEPT + b"\xe0\x01\x8b")
    with pytest.raises(MqttError, match="closed the connection right after accepting it"):
        await connecting

    assert ([], False) == (events, client.connected)


async def test_a_reply_published_in_the_read_of_the_connack_goes_once_within_the_quota(
    broker: ScriptedBroker,
) -> None:
    """A message read with the CONNACK and answered at once (on_message publishing) used to
    be counted against the last connection: sent, then sent again with DUP, two in flight
    against a Receive Maximum of 1."""
    client: NativeMqttClient | None = None

    def answer(message: MqttMessage) -> None:
        assert client is not None
        client.publish_nowait("reply/1", message.payload)
        client.publish_nowait("reply/2", message.payload)

    client = NativeMqttClient(client_id="collector", broker=broker.address, on_message=answer)
    connecting = asyncio.create_task(client.connect())
    one_in_flight = b"\x20\x06\x00\x00\x03\x21\x00\x01"  # Receive Maximum 1
    peer = await broker.accept(
        connack=one_in_flight + packets.publish("in", b"x", qos=0, packet_id=0, v5=True)
    )
    await connecting

    first = packets.read_publish(await peer.expect(PacketType.PUBLISH), v5=True)
    with pytest.raises(TimeoutError):
        await peer.next(timeout=0.3)

    assert ("reply/1", False) == (first.topic, first.dup)
    await client.disconnect()


async def test_a_paused_client_keeps_its_connection_past_two_keepalives(
    broker: ScriptedBroker,
) -> None:
    """Its PINGRESP waits unread behind what it is not reading (a store outage): the link is
    not dead for that, and the PINGREQs keep the broker's side alive."""
    client = _client(broker, keepalive=1)
    peer = await _connected(broker, client)
    client.pause_reading()

    for _ in range(3):
        await peer.expect(PacketType.PINGREQ)
        await peer.send(b"\xd0\x00")

    assert client.connected
    await client.disconnect()


async def test_connections_dropped_at_once_are_retried_with_backoff(
    broker: ScriptedBroker,
) -> None:
    """A broker that accepts and drops at once (a publish over its packet limit, sent again
    on every connection) was reconnected to as fast as it dropped: thousands a second."""
    errors: list[float] = []
    client = _client(broker)
    runner = asyncio.create_task(
        client.run(
            backoff=Backoff(base=0.05, cap=0.2, floor=0.05),
            on_error=lambda _error, delay: errors.append(delay),
        )
    )
    async with asyncio.timeout(5):
        while len(errors) < 3:
            peer = await broker.accept()
            peer.writer.close()

    await client.disconnect()
    await runner
    assert 3 <= len(errors) <= 5


async def test_the_paho_client_over_tls_reads_every_packet_of_one_tls_record(
    tmp_path: Path,
) -> None:
    """Packets decrypted past what paho read sit in the SSL socket, not the kernel: the file
    descriptor stays unreadable, and they waited for the next bytes to arrive."""
    issue_certificate(tmp_path, "broker", "127.0.0.1", None, ca=True, ip="127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "broker.crt", tmp_path / "broker.key")
    scripted = ScriptedBroker()
    scripted.server = await asyncio.start_server(scripted._accept, "127.0.0.1", 0, ssl=context)
    inbox: list[MqttMessage] = []
    address = scripted.address
    client = AsyncMqttClient(
        client_id="device",
        broker=BrokerAddress(
            host=address.host, port=address.port, tls=TlsSettings(ca_file=tmp_path / "broker.crt")
        ),
        on_message=inbox.append,
    )
    try:
        connecting = asyncio.create_task(client.connect())
        peer = await scripted.accept()
        await connecting
        burst = [packets.publish("t", b"%d" % n, qos=0, packet_id=0, v5=True) for n in range(20)]
        await peer.send(b"".join(burst))  # one write, one TLS record
        async with asyncio.timeout(5):
            while len(inbox) < 20:
                await asyncio.sleep(0.01)
    finally:
        await client.disconnect()
        scripted.server.close()
        for every in scripted.every:
            every.writer.close()

    assert [b"%d" % n for n in range(20)] == [m.payload for m in inbox]


async def test_publishing_at_qos_2_is_refused_as_misuse(broker: ScriptedBroker) -> None:
    """The client speaks QoS 0 and 1: a QoS 2 message would end every connection it went on."""
    client = _client(broker)
    await _connected(broker, client)

    with pytest.raises(ValueError, match="qos must be 0 or 1"):
        client.publish_nowait("t", b"x", qos=2)
    await client.disconnect()


async def test_a_publish_over_the_brokers_maximum_packet_size_is_refused_not_sent(
    broker: ScriptedBroker,
) -> None:
    """Sent, it would end the connection (MQTT 5 §3.2.2.3.6), and go again and end it again
    on every connection after; it is refused as a PUBACK 0x95 would refuse it."""
    refused: list[tuple[int, int]] = []
    client = _client(broker, on_refused=lambda mid, reason: refused.append((mid, reason)))
    connecting = asyncio.create_task(client.connect())
    peer = await broker.accept(connack=b"\x20\x08\x00\x00\x05\x27\x00\x00\x00\x40")  # 64
    await connecting

    big = client.publish_nowait("notices/1", b"x" * 64)
    client.publish_nowait("notices/2", b"small")
    refused_at_once = refused[:]
    sent = packets.read_publish(await peer.expect(PacketType.PUBLISH), v5=True)

    assert [] == refused_at_once, "refused before the caller had its packet id"
    assert [(big, packets.PACKET_TOO_LARGE)] == refused
    assert ("notices/2", 1, True) == (sent.topic, client.pending, client.connected)
    await client.disconnect()


async def test_a_qos_0_publish_over_the_brokers_maximum_packet_size_raises(
    broker: ScriptedBroker,
) -> None:
    client = _client(broker)
    connecting = asyncio.create_task(client.connect())
    await broker.accept(connack=b"\x20\x08\x00\x00\x05\x27\x00\x00\x00\x40")
    await connecting

    with pytest.raises(MqttError, match="over the broker's 64 bytes"):
        client.publish_nowait("notices/1", b"x" * 64, qos=0)
    await client.disconnect()


@pytest.mark.broker
async def test_mosquittos_max_packet_size_refuses_the_large_publish_and_keeps_the_link(
    tmp_path: Path,
) -> None:
    """Against a real Mosquitto configured with ``max_packet_size``."""
    refused: list[int] = []
    published: list[int] = []
    with MosquittoBroker(tmp_path / "broker", extra_config="max_packet_size 200") as mosquitto:
        client = NativeMqttClient(
            client_id="collector",
            broker=BrokerAddress(host="127.0.0.1", port=mosquitto.port),
            on_message=lambda _message: None,
            on_published=published.append,
            on_refused=lambda mid, _reason: refused.append(mid),
        )
        await client.connect()
        big = client.publish_nowait("notices/1", b"x" * 300)
        small = client.publish_nowait("notices/2", b"small")
        async with asyncio.timeout(5):
            while not published:
                await asyncio.sleep(0.01)
        connected = client.connected
        await client.disconnect()

    assert ([big], [small], True) == (refused, published, connected)
