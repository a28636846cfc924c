"""The paho client (and the native one, where both must agree) against brokers scripted on
loopback: timing and CONNACKs Mosquitto will not produce on demand."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import TYPE_CHECKING

import pytest
from scripted_broker import ACCEPT, Peer, ScriptedBroker, serving
from smartlic.mqtt import packets
from smartlic.mqtt.aio import AsyncMqttClient, MqttError, MqttMessage
from smartlic.mqtt.base import MqttClient
from smartlic.mqtt.native import NativeMqttClient
from smartlic.mqtt.packets import Packet, PacketType
from smartlic.mqtt.url import BrokerAddress, parse_broker_url

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

pytestmark = pytest.mark.timeout(30)

Impl = type[MqttClient]

ACCEPT_RECEIVE_MAXIMUM_2 = b"\x20\x06\x00\x00\x03\x21\x00\x02"
"""A v5 CONNACK whose properties say Receive Maximum 2 (property 0x21, MQTT 5 §3.2.2.3.3)."""
PUBLISH_QOS0 = b"\x30\x06\x00\x01t\x00hi"
"""A v5 QoS 0 PUBLISH of b"hi" to "t", without properties."""


@pytest.fixture(params=["paho", "native"])
def impl(request: pytest.FixtureRequest) -> Impl:
    return AsyncMqttClient if request.param == "paho" else NativeMqttClient


@pytest.fixture
async def broker() -> AsyncIterator[ScriptedBroker]:
    async with serving() as scripted:
        yield scripted


async def _connected(
    broker: ScriptedBroker, client: MqttClient, connack: bytes = ACCEPT
) -> tuple[Peer, Packet]:
    connecting = asyncio.create_task(client.connect(timeout=5))
    peer = await broker.accept(connack)
    await connecting
    assert peer.connect is not None
    return peer, peer.connect


def _publishes(received: list[Packet]) -> list[Packet]:
    return [packet for packet in received if packet.type is PacketType.PUBLISH]


def _credentials(connect: Packet) -> tuple[int, bytes]:
    """The CONNECT flags byte (after "MQTT" and the level) and what follows the client id
    "c" in the payload: user name, then password (v5 §3.1.3)."""
    marker = b"\x00\x01c"
    return connect.body[7], connect.body[connect.body.rindex(marker) + len(marker) :]


async def test_the_native_client_sends_a_password_alone_in_mqtt_5(broker: ScriptedBroker) -> None:
    """MQTT 5 §3.1.2.9: the password flag (0x40) without the user name flag (0x80), and the
    password itself; it once connected anonymously instead."""
    address = parse_broker_url(f"mqtt://:s3cret@127.0.0.1:{broker.address.port}")
    client = NativeMqttClient(client_id="c", broker=address, on_message=lambda _m: None)

    _, connect = await _connected(broker, client)

    assert (0x40, b"\x00\x06s3cret") == _credentials(connect)
    await client.disconnect(timeout=0.5)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_an_empty_password_is_sent_as_an_empty_password(
    broker: ScriptedBroker, impl: Impl, protocol: str
) -> None:
    """``dev:@host``: both flags, and a zero-length password after the user name."""
    address = parse_broker_url(f"mqtt://dev:@127.0.0.1:{broker.address.port}")
    client = impl(
        client_id="c",
        broker=address,
        on_message=lambda _m: None,
        protocol="5" if protocol == "5" else "3.1.1",
    )
    connack = ACCEPT if protocol == "5" else b"\x20\x02\x00\x00"

    _, connect = await _connected(broker, client, connack)

    assert (0xC0, b"\x00\x03dev\x00\x00") == _credentials(connect)
    await client.disconnect(timeout=0.5)


def test_packets_refuse_a_password_without_a_user_name_in_mqtt_3_1_1() -> None:
    with pytest.raises(ValueError, match=r"MQTT 3\.1\.1 cannot send a password without"):
        packets.connect(
            client_id="c",
            v5=False,
            clean_start=True,
            keepalive=30,
            password="s3cret",  # noqa: S106 -- a test value, not a credential
        )


async def _ten_published_to_a_receive_maximum_of_2(
    broker: ScriptedBroker, impl: Impl
) -> tuple[MqttClient, Peer]:
    """A client connected with Receive Maximum 2 in its CONNACK, ten QoS 1 messages queued."""
    client = impl(
        client_id="c",
        broker=parse_broker_url(f"127.0.0.1:{broker.address.port}"),
        on_message=lambda _m: None,
    )
    peer, _ = await _connected(broker, client, ACCEPT_RECEIVE_MAXIMUM_2)
    for n in range(10):
        client.publish_nowait("t", b"%d" % n)
    return client, peer


async def test_no_more_unacknowledged_publishes_than_the_brokers_receive_maximum(
    broker: ScriptedBroker, impl: Impl
) -> None:
    """MQTT 5 §4.9: with Receive Maximum 2 in the CONNACK and no PUBACK, two of ten QoS 1
    messages go; paho once sent all ten, and a broker may disconnect for that (0x93)."""
    client, peer = await _ten_published_to_a_receive_maximum_of_2(broker, impl)

    assert 2 == len(_publishes(await peer.read_for(0.5)))
    await client.disconnect(timeout=0.5)


async def test_a_puback_lets_the_next_message_go_within_the_receive_maximum(
    broker: ScriptedBroker, impl: Impl
) -> None:
    client, peer = await _ten_published_to_a_receive_maximum_of_2(broker, impl)
    first = _publishes(await peer.read_for(0.3))[0]

    await peer.send(packets.puback(packets.read_publish(first, v5=True).packet_id))

    assert 3 == len(_publishes(await peer.read_for(0.5)))
    await client.disconnect(timeout=0.5)


async def test_the_next_connection_starts_again_from_our_own_inflight_limit(
    broker: ScriptedBroker,
) -> None:
    """A Receive Maximum binds its connection only: a broker that then sends none gets as
    many as max_pending (here 5) allows."""
    client = AsyncMqttClient(
        client_id="c",
        broker=parse_broker_url(f"127.0.0.1:{broker.address.port}"),
        on_message=lambda _m: None,
        max_pending=5,
        resend_on_reconnect=False,
    )
    first, _ = await _connected(broker, client, ACCEPT_RECEIVE_MAXIMUM_2)
    first.writer.close()
    async with asyncio.timeout(5):
        await client.wait_lost()

    second, _ = await _connected(broker, client, ACCEPT)
    for n in range(10):
        client.publish_nowait("t", b"%d" % n)

    assert 5 == len(_publishes(await second.read_for(0.5)))
    await client.disconnect(timeout=0.5)


@contextlib.contextmanager
def _full_backlog() -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    """A listening socket whose accept queue is full, so that the kernel drops the next SYN
    and the connecting side retries it a second later (Linux's initial RTO): a connect that
    outlasts a shorter timeout. Yields the listener and the connections that fill it."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        for _ in range(3):
            filler = socket.socket()
            filler.settimeout(0.0)  # non-blocking: the connect goes on while we fill
            with contextlib.suppress(BlockingIOError):
                filler.connect(listener.getsockname())
            fillers.append(filler)
        yield listener, fillers
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def _answer_the_late_client(listener: socket.socket, filler_ends: set[object]) -> bool:
    """Accept what comes (fillers first), answer a CONNECT with a CONNACK and a PUBLISH;
    whether the late client then closed its connection within two seconds."""
    listener.settimeout(5)
    while True:
        conn, peer = listener.accept()
        with conn:
            if peer in filler_ends:
                continue
            conn.settimeout(2)
            try:
                data = conn.recv(65536)
                if data[:1] == bytes((PacketType.CONNECT << 4,)):
                    conn.sendall(ACCEPT + PUBLISH_QOS0)
                    data = conn.recv(65536)
            except TimeoutError:
                return False
            except ConnectionError:
                return True
            return not data


async def test_a_connect_that_timed_out_stays_disconnected_when_paho_connects_late() -> None:
    """paho's blocking connect() goes on in its thread after connect() timed out: the socket
    it opens late is closed unread, so no CONNACK makes a connection of it and no message of
    it is delivered."""
    inbox: list[MqttMessage] = []
    with _full_backlog() as (listener, fillers):
        host, port = listener.getsockname()
        client = AsyncMqttClient(
            client_id="late", broker=BrokerAddress(host=host, port=port), on_message=inbox.append
        )
        with pytest.raises(MqttError, match="timed out"):
            await client.connect(timeout=0.3)
        filler_ends = {filler.getsockname() for filler in fillers}
        for filler in fillers:
            filler.close()  # the backlog empties, and the SYN retried gets through
        closed = await asyncio.to_thread(_answer_the_late_client, listener, filler_ends)
        await asyncio.sleep(0.2)  # what the loop still had to run of the late attempt

    assert (True, None, False, False, 0, []) == (
        closed,
        client._sock,
        client.connected,
        client._link_up,
        client.generation,
        inbox,
    )


async def test_what_is_sent_again_after_a_reconnection_keeps_to_the_receive_maximum(
    broker: ScriptedBroker, impl: Impl
) -> None:
    """paho's reconnection reset marks every unacknowledged message for sending again, past
    the broker's Receive Maximum: six went where two may."""
    client = impl(
        client_id="c",
        broker=broker.address,
        on_message=lambda _m: None,
        clean_start=False,
        session_expiry=300,
    )
    first, _ = await _connected(broker, client, ACCEPT_RECEIVE_MAXIMUM_2)
    for n in range(6):
        client.publish_nowait("t", b"%d" % n)
    await first.read_for(0.3)
    first.writer.close()
    async with asyncio.timeout(5):
        await client.wait_lost()

    second, _ = await _connected(broker, client, ACCEPT_RECEIVE_MAXIMUM_2)
    resent = _publishes(await second.read_for(0.5))
    for packet in resent:
        await second.send(packets.puback(packets.read_publish(packet, v5=True).packet_id))

    assert (2, 4) == (len(resent), len(_publishes(await second.read_for(0.5))))
    await client.disconnect(timeout=0.5)
