"""Both MQTT clients against a real Mosquitto: paho on asyncio (``aio``) and the collector's
own (``native``), which must behave alike."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Any

import pytest
from smartlic.mqtt.aio import AsyncMqttClient, Backoff, MqttError, MqttMessage
from smartlic.mqtt.base import MqttClient
from smartlic.mqtt.native import NativeMqttClient
from smartlic.mqtt.url import parse_broker_url

if TYPE_CHECKING:
    from smartlic.mqtt.broker import MosquittoBroker

pytestmark = pytest.mark.timeout(60)

Impl = type[MqttClient]


@pytest.fixture(params=["paho", "native"])
def impl(request: pytest.FixtureRequest) -> Impl:
    return AsyncMqttClient if request.param == "paho" else NativeMqttClient


def _client(
    broker: MosquittoBroker,
    impl: Impl,
    client_id: str,
    inbox: list[MqttMessage] | None = None,
    *,
    subscriptions: tuple[tuple[str, int], ...] = (),
    manual_ack: bool = False,
    protocol: str = "5",
    **options: Any,
) -> MqttClient:
    sink = inbox if inbox is not None else []
    return impl(
        client_id=client_id,
        broker=parse_broker_url(broker.url),
        on_message=sink.append,
        subscriptions=subscriptions,
        manual_ack=manual_ack,
        protocol="5" if protocol == "5" else "3.1.1",
        **options,
    )


async def _until(condition: object, timeout: float = 10.0) -> None:  # noqa: ASYNC109 -- test helper
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]  # a zero-argument predicate
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_message_published_by_one_client_reaches_a_subscriber(
    mosquitto: MosquittoBroker, impl: Impl, protocol: str
) -> None:
    """QoS 1 publish → subscribe round trip over both MQTT versions."""
    inbox: list[MqttMessage] = []
    sub = _client(mosquitto, impl, "sub", inbox, subscriptions=(("t/#", 1),), protocol=protocol)
    pub = _client(mosquitto, impl, "pub", protocol=protocol)
    await sub.connect()
    await pub.connect()
    await pub.publish("t/1", b"hello")
    await _until(lambda: inbox)
    assert [b"hello"] == [m.payload for m in inbox]
    await pub.disconnect()
    await sub.disconnect()


async def test_unacknowledged_messages_are_redelivered_after_reconnect(
    mosquitto: MosquittoBroker,
    impl: Impl,
) -> None:
    """With manual_ack, what was received but not acked comes back on the next connection."""
    first: list[MqttMessage] = []
    sub = _client(mosquitto, impl, "collector", first, subscriptions=(("t/#", 1),), manual_ack=True)
    pub = _client(mosquitto, impl, "pub")
    await sub.connect()
    await pub.connect()
    for n in range(5):
        await pub.publish("t/x", str(n).encode())
    await _until(lambda: len(first) == 5)
    assert sub.ack(first[0])
    assert sub.ack(first[1])
    await asyncio.sleep(0.1)
    sub.abort()  # a crash: no DISCONNECT, nothing more acked

    second: list[MqttMessage] = []
    again = _client(mosquitto, impl, "collector", second, manual_ack=True)
    assert await again.connect() is True
    await _until(lambda: len(second) == 3)
    assert [b"2", b"3", b"4"] == [m.payload for m in second]
    await again.disconnect()
    await pub.disconnect()


async def test_run_reconnects_after_a_broker_restart_and_keeps_the_session(
    mosquitto: MosquittoBroker,
    impl: Impl,
) -> None:
    """Messages published while the subscriber was cut off arrive after it reconnects."""
    inbox: list[MqttMessage] = []
    sub = _client(mosquitto, impl, "sub", inbox, subscriptions=(("t/#", 1),))
    runner = asyncio.create_task(sub.run(backoff=Backoff(base=0.05, cap=0.2, floor=0.01)))
    await sub.wait_connected()
    mosquitto.restart()
    pub = _client(mosquitto, impl, "pub")
    await pub.connect()
    await pub.publish("t/after", b"queued")
    await _until(lambda: inbox, timeout=15)
    assert [b"queued"] == [m.payload for m in inbox]
    await sub.disconnect()
    await runner
    await pub.disconnect()


async def test_publish_waits_when_the_window_is_full(
    mosquitto: MosquittoBroker, impl: Impl
) -> None:
    """No more than max_pending QoS 1 messages are ever handed to paho unacknowledged."""
    pub = _client(mosquitto, impl, "pub", max_pending=2)
    await pub.connect()
    mosquitto.kill()
    await pub.publish("t/1", b"1")
    await pub.publish("t/2", b"2")
    third = asyncio.create_task(pub.publish("t/3", b"3"))
    await asyncio.sleep(0.2)
    assert not third.done()
    assert pub.pending == 2
    third.cancel()
    await pub.disconnect()


async def test_connecting_to_a_closed_port_raises_mqtt_error(
    mosquitto: MosquittoBroker, impl: Impl
) -> None:
    mosquitto.kill()
    client = _client(mosquitto, impl, "nobody")
    with pytest.raises(MqttError, match="cannot connect"):
        await client.connect(timeout=2)


async def test_a_shared_subscription_survives_a_broker_restart(
    mosquitto: MosquittoBroker, impl: Impl
) -> None:
    """Mosquitto 2.0 forgets shared subscriptions when it restarts yet reports the session as
    present; the client subscribes again on every connection, so the collector keeps
    receiving."""
    inbox: list[MqttMessage] = []
    collector = _client(mosquitto, impl, "collector", inbox, subscriptions=(("$share/g/t/+", 1),))
    await collector.connect()
    await collector.disconnect()
    mosquitto.restart()
    await collector.connect()
    publisher = _client(mosquitto, impl, "pub")
    await publisher.connect()

    await publisher.publish("t/1", b"after restart")
    await _until(lambda: inbox)

    assert [b"after restart"] == [m.payload for m in inbox]
    await publisher.disconnect()
    await collector.disconnect()


async def test_a_paused_client_receives_nothing_until_it_resumes(
    mosquitto: MosquittoBroker,
    impl: Impl,
) -> None:
    """Pausing stops reading the socket; resuming delivers what waited in the meantime."""
    inbox: list[MqttMessage] = []
    sub = _client(mosquitto, impl, "sub", inbox, subscriptions=(("t/#", 1),))
    pub = _client(mosquitto, impl, "pub")
    await sub.connect()
    await pub.connect()
    sub.pause_reading()

    await pub.publish("t/1", b"held")
    await asyncio.sleep(0.3)
    assert ([], False) == (inbox, sub.reading)

    sub.resume_reading()
    await _until(lambda: inbox)
    assert [b"held"] == [m.payload for m in inbox]
    await pub.disconnect()
    await sub.disconnect()


async def test_a_paused_client_still_reads_the_acks_its_full_window_waits_for(
    mosquitto: MosquittoBroker,
    impl: Impl,
) -> None:
    """A publish waiting for window room reads PUBACKs while paused: a service that pauses
    its intake and then publishes its replies must not wait for itself."""
    client = _client(mosquitto, impl, "collector", max_pending=2)
    await client.connect()
    client.pause_reading()

    async with asyncio.timeout(5):
        for n in range(10):
            await client.publish(f"t/{n}", b"reply")

    assert (False, True) == (client.reading, client.pending <= 2)
    client.resume_reading()
    await _until(lambda: client.pending == 0)
    await client.disconnect()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_paused_client_still_reads_its_connack_after_a_broker_restart(
    mosquitto: MosquittoBroker, impl: Impl, protocol: str
) -> None:
    """Reconnecting while paused completes (CONNACK and SUBACK are read) and leaves the
    client paused."""
    sub = _client(mosquitto, impl, "sub", subscriptions=(("t/#", 1),), protocol=protocol)
    runner = asyncio.create_task(sub.run(backoff=Backoff(base=0.05, cap=0.2, floor=0.01)))
    await sub.wait_connected()
    sub.pause_reading()

    mosquitto.restart()
    # Not reading, it learns of the loss when it writes: replies keep a collector writing.
    for _ in range(3):
        await sub.publish("t/reply", b"x")
        await asyncio.sleep(0.1)
    await _until(lambda: sub.connected and sub.generation == 2, timeout=15)

    assert not sub.reading
    await sub.disconnect()
    await runner


async def test_receive_maximum_bounds_what_the_broker_sends_before_acks(
    mosquitto: MosquittoBroker,
    impl: Impl,
) -> None:
    """MQTT 5 flow control (§4.9): with receive_maximum=3 and nothing acked, the broker
    holds back the rest until acknowledgements free its quota."""
    inbox: list[MqttMessage] = []
    sub = _client(
        mosquitto,
        impl,
        "collector",
        inbox,
        subscriptions=(("t/#", 1),),
        manual_ack=True,
        receive_maximum=3,
    )
    pub = _client(mosquitto, impl, "pub")
    await sub.connect()
    await pub.connect()
    for n in range(8):
        await pub.publish("t/x", str(n).encode())
    await _until(lambda: len(inbox) == 3)
    await asyncio.sleep(0.3)
    assert 3 == len(inbox)

    for message in inbox[:3]:
        sub.ack(message)
    await _until(lambda: len(inbox) == 8)
    assert [str(n).encode() for n in range(8)] == [m.payload for m in inbox]
    await pub.disconnect()
    await sub.disconnect()


async def test_receive_maximum_outside_the_protocol_range_is_refused(impl: Impl) -> None:
    with pytest.raises(ValueError, match=r"receive_maximum must be 1\.\.65535, not 0"):
        impl(
            client_id="c",
            broker=parse_broker_url("mqtt://127.0.0.1:1"),
            on_message=lambda _m: None,
            receive_maximum=0,
        )


async def test_mqtt_3_1_1_refuses_a_password_without_a_user_name(impl: Impl) -> None:
    """MQTT 3.1.1 §3.1.2.9: the password flag needs the user name flag, so the password
    cannot go; connecting anonymously instead is refused when the client is made."""
    with pytest.raises(ValueError, match=r"MQTT 3\.1\.1 cannot send a password without"):
        impl(
            client_id="c",
            broker=parse_broker_url("mqtt://:s3cret@127.0.0.1:1"),
            on_message=lambda _m: None,
            protocol="3.1.1",
        )


async def test_paho_refuses_a_password_without_a_user_name_even_in_mqtt_5() -> None:
    """MQTT 5 allows a password alone (§3.1.2.9), paho 2.2 cannot send one: refused rather
    than connecting anonymously."""
    with pytest.raises(ValueError, match="paho cannot send a password without a user name"):
        AsyncMqttClient(
            client_id="c",
            broker=parse_broker_url("mqtt://:s3cret@127.0.0.1:1"),
            on_message=lambda _m: None,
            protocol="5",
        )


async def test_abort_ends_the_connection_for_wait_lost_and_on_disconnect(
    mosquitto: MosquittoBroker, impl: Impl
) -> None:
    """A crash as the broker sees it is a lost connection as the caller sees it."""
    lost: list[str] = []
    client = _client(mosquitto, impl, "device", on_disconnect=lambda: lost.append("lost"))
    await client.connect()

    client.abort()
    async with asyncio.timeout(2):
        await client.wait_lost()

    assert (False, ["lost"]) == (client.connected, lost)


async def test_run_connects_again_after_abort(mosquitto: MosquittoBroker, impl: Impl) -> None:
    """abort() is what base._established does after a failed SUBACK: run() must go on."""
    client = _client(mosquitto, impl, "device")
    runner = asyncio.create_task(client.run(backoff=Backoff(base=0.05, cap=0.2, floor=0.01)))
    await client.wait_connected()

    client.abort()
    await _until(lambda: client.connected and client.generation == 2, timeout=5)

    assert client.connected
    await client.disconnect()
    await runner


@pytest.mark.parametrize(("resend", "expected"), [(True, [b"queued"]), (False, [])])
async def test_what_was_queued_while_offline_is_resent_only_when_asked(
    mosquitto: MosquittoBroker, impl: Impl, resend: bool, expected: list[bytes]
) -> None:
    """paho re-sends its queue after the CONNACK; a caller with its own outbox turns that off,
    and nothing of it stays counted as pending."""
    inbox: list[MqttMessage] = []
    sub = _client(mosquitto, impl, "sub", inbox, subscriptions=(("t/#", 1),))
    await sub.connect()
    device = _client(mosquitto, impl, "device", resend_on_reconnect=resend)
    assert 1 == device.publish_nowait("t/1", b"queued")

    await device.connect()
    await device.publish("t/marker", b"marker")
    await _until(lambda: inbox and inbox[-1].payload == b"marker")

    assert expected == [m.payload for m in inbox[:-1]]
    assert 0 == device.pending
    await device.disconnect()
    await sub.disconnect()


async def test_publish_nowait_does_not_wait_for_window_room(
    mosquitto: MosquittoBroker, impl: Impl
) -> None:
    """The caller bounds what is in flight itself: a full window does not stop it."""
    pub = _client(mosquitto, impl, "pub", max_pending=1)
    await pub.connect()
    mosquitto.kill()

    mids = [pub.publish_nowait(f"t/{n}", b"x") for n in range(3)]

    assert (3, 3) == (len(set(mids)), pub.pending)
    await pub.disconnect()


@pytest.mark.parametrize(
    "callback",
    ["_socket_open", "_socket_close", "_socket_register_write", "_socket_unregister_write"],
)
def test_paho_closing_its_socket_after_the_loop_ended_raises_nothing(callback: str) -> None:
    """paho's ``__del__`` closes its socket whenever the client is collected, which may be
    after its loop is closed: the callbacks it calls then once raised "Event loop is closed"
    into whatever test was running (a CI failure)."""

    async def made() -> AsyncMqttClient:
        return AsyncMqttClient(
            client_id="late",
            broker=parse_broker_url("mqtt://127.0.0.1:1"),
            on_message=lambda _message: None,
        )

    client = asyncio.run(made())
    with socket.socket() as sock:
        getattr(client, callback)(None, None, sock)
