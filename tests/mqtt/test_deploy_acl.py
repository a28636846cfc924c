"""The ACL files in deploy/ confine each device to its own topics (real Mosquitto, real TLS).

The broker is set up as deploy/mosquitto.conf describes: devices present a client certificate
whose CN is their device id, which becomes their username and client id; collectors log in
with a password on their own listener. Both listeners use the ACL files from deploy/ as-is.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from typing import TYPE_CHECKING

import pytest
from smartlic.mqtt.aio import AsyncMqttClient, MqttError, MqttMessage
from smartlic.mqtt.broker import MosquittoBroker, free_ports
from smartlic.mqtt.native import NativeMqttClient
from smartlic.mqtt.url import TlsSettings, parse_broker_url
from smartlic.protocol import Topics

from pki_support import issue_certificate

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from smartlic.mqtt.base import MqttClient
    from smartlic.mqtt.common import ProtocolName

DEPLOY = __import__("pathlib").Path(__file__).resolve().parents[2] / "deploy"
TOPICS = Topics()
DEVICE_A = "C9300-24T:FOC0001"
DEVICE_B = "C9300-24T:FOC0002"

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    folder = tmp_path / "pki"
    folder.mkdir()
    ca = issue_certificate(folder, "ca", "smartlic test CA", None, ca=True)
    issue_certificate(folder, "broker", "127.0.0.1", ca, ip="127.0.0.1")
    issue_certificate(folder, "device-a", DEVICE_A, ca)
    issue_certificate(folder, "device-b", DEVICE_B, ca)
    return folder


@pytest.fixture
def acl_broker(tmp_path: Path, pki: Path) -> Iterator[tuple[MosquittoBroker, int]]:
    passwd = tmp_path / "passwd"
    passwd.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "collector-1", "pw"], check=True)
    device_port, collector_port = free_ports(2)
    broker = MosquittoBroker(
        tmp_path / "broker",
        port=device_port,
        listeners=f"""per_listener_settings true
listener {device_port} 127.0.0.1
certfile {pki / "broker.crt"}
keyfile {pki / "broker.key"}
cafile {pki / "ca.crt"}
require_certificate true
use_identity_as_username true
use_username_as_clientid true
allow_anonymous false
acl_file {DEPLOY / "smartlic-devices.acl"}
listener {collector_port} 127.0.0.1
allow_anonymous false
password_file {passwd}
acl_file {DEPLOY / "smartlic-collectors.acl"}""",
        extra_config="max_packet_size 65536",
    )
    broker.start()
    try:
        yield broker, collector_port
    finally:
        broker.kill()


def test_the_collectors_listener_accepts_connections_once_the_broker_has_started(
    acl_broker: tuple[MosquittoBroker, int],
) -> None:
    """Mosquitto loads the TLS listener's keys after opening it and before opening the next
    (strace: about 6 ms): ``start()`` waits for both listeners, or a collector that connects at
    once can be refused, as it once was in CI."""
    _, collector_port = acl_broker

    socket.create_connection(("127.0.0.1", collector_port), timeout=1).close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
@pytest.mark.parametrize("impl", [AsyncMqttClient, NativeMqttClient])
async def test_a_collector_with_a_wrong_password_is_refused_saying_so(
    acl_broker: tuple[MosquittoBroker, int], impl: type[MqttClient], protocol: ProtocolName
) -> None:
    _, collector_port = acl_broker
    client = impl(
        client_id="collector-1",
        broker=parse_broker_url(f"mqtt://collector-1:not-pw@127.0.0.1:{collector_port}"),
        on_message=lambda _message: None,
        clean_start=True,
        protocol=protocol,
    )

    with pytest.raises(MqttError, match="refused the connection"):
        await client.connect()
    await client.disconnect()


def _device(
    port: int, pki: Path, name: str, device_id: str, inbox: list[MqttMessage], subs: list[str]
) -> AsyncMqttClient:
    tls = TlsSettings(
        ca_file=pki / "ca.crt", cert_file=pki / f"{name}.crt", key_file=pki / f"{name}.key"
    )
    return AsyncMqttClient(
        client_id=device_id,
        broker=parse_broker_url(f"mqtts://127.0.0.1:{port}", tls=tls),
        on_message=inbox.append,
        subscriptions=[(s, 1) for s in subs],
        clean_start=True,
    )


async def test_devices_reach_only_their_own_topics(
    acl_broker: tuple[MosquittoBroker, int], pki: Path
) -> None:
    """A device's uplink reaches the collector; its writes and reads elsewhere go nowhere."""
    broker, collector_port = acl_broker
    seen_by_collector: list[MqttMessage] = []
    seen_by_a: list[MqttMessage] = []
    seen_by_b: list[MqttMessage] = []
    collector = NativeMqttClient(  # the collector's own client, with username and password
        client_id="collector-1",
        broker=parse_broker_url(f"mqtt://collector-1:pw@127.0.0.1:{collector_port}"),
        on_message=seen_by_collector.append,
        subscriptions=[(TOPICS.shared_uplink_filter(), 1)],
        clean_start=True,
    )
    device_a = _device(
        broker.port,
        pki,
        "device-a",
        DEVICE_A,
        seen_by_a,
        [TOPICS.downlink(DEVICE_A), TOPICS.downlink(DEVICE_B)],
    )
    device_b = _device(
        broker.port, pki, "device-b", DEVICE_B, seen_by_b, [TOPICS.downlink(DEVICE_B)]
    )
    for client in (collector, device_a, device_b):
        await client.connect()

    await collector.publish(TOPICS.downlink(DEVICE_B), b"for b")
    await collector.publish(TOPICS.downlink(DEVICE_A), b"for a")
    await asyncio.sleep(0.3)
    assert [b"for a"] == [m.payload for m in seen_by_a]
    assert [b"for b"] == [m.payload for m in seen_by_b]

    # Mosquitto may close the connection of a device that writes outside its ACL (MQTT 3.1.1
    # §3.3.5 lets a broker ack-and-drop or disconnect): the forged publish goes last.
    await device_a.publish(TOPICS.uplink(DEVICE_A), b"mine")
    await device_a.publish(TOPICS.uplink(DEVICE_B), b"forged")
    await asyncio.sleep(0.3)
    assert [(TOPICS.uplink(DEVICE_A), b"mine")] == [(m.topic, m.payload) for m in seen_by_collector]
    for client in (collector, device_a, device_b):
        await client.disconnect()


async def test_the_collectors_client_speaks_tls_with_a_client_certificate(
    acl_broker: tuple[MosquittoBroker, int], pki: Path
) -> None:
    """The native client over TLS (CA-verified broker, client certificate) against the deploy
    configuration: here in a device's place, whose certificate names its identity."""
    broker, collector_port = acl_broker
    inbox: list[MqttMessage] = []
    tls = TlsSettings(
        ca_file=pki / "ca.crt", cert_file=pki / "device-a.crt", key_file=pki / "device-a.key"
    )
    device = NativeMqttClient(
        client_id=DEVICE_A,
        broker=parse_broker_url(f"mqtts://127.0.0.1:{broker.port}", tls=tls),
        on_message=inbox.append,
        subscriptions=[(TOPICS.downlink(DEVICE_A), 1)],
        clean_start=True,
    )
    collector = NativeMqttClient(
        client_id="collector-1",
        broker=parse_broker_url(f"mqtt://collector-1:pw@127.0.0.1:{collector_port}"),
        on_message=lambda _m: None,
        clean_start=True,
    )
    await device.connect()
    await collector.connect()

    await collector.publish(TOPICS.downlink(DEVICE_A), b"over tls")
    async with asyncio.timeout(5):
        while not inbox:
            await asyncio.sleep(0.01)

    assert [b"over tls"] == [m.payload for m in inbox]
    await device.disconnect()
    await collector.disconnect()


async def test_a_device_sending_an_oversize_packet_is_cut_off_and_nothing_reaches_the_collector(
    acl_broker: tuple[MosquittoBroker, int], pki: Path
) -> None:
    """deploy/mosquitto.conf's max_packet_size: 64 KiB is far above any smartlic message."""
    broker, collector_port = acl_broker
    seen: list[MqttMessage] = []
    collector = NativeMqttClient(
        client_id="collector-1",
        broker=parse_broker_url(f"mqtt://collector-1:pw@127.0.0.1:{collector_port}"),
        on_message=seen.append,
        subscriptions=[(TOPICS.shared_uplink_filter(), 1)],
        clean_start=True,
    )
    device = _device(broker.port, pki, "device-a", DEVICE_A, [], [])
    await collector.connect()
    await device.connect()

    await device.publish(TOPICS.uplink(DEVICE_A), bytes(100_000))
    async with asyncio.timeout(5):
        await device.wait_lost()
    await asyncio.sleep(0.3)

    assert [] == seen
    await collector.disconnect()
    await device.disconnect()


@pytest.fixture
def narrow_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A broker whose one user may publish to ``allowed/#`` only."""
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    passwd.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "c", "pw"], check=True)
    acl.write_text("user c\ntopic write allowed/#\n")
    (port,) = free_ports(1)
    broker = MosquittoBroker(
        tmp_path / "broker",
        port=port,
        listeners=f"listener {port} 127.0.0.1\nallow_anonymous false\n"
        f"password_file {passwd}\nacl_file {acl}",
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.mark.parametrize("impl", [AsyncMqttClient, NativeMqttClient])
async def test_a_publish_the_broker_refuses_is_reported_refused_not_published(
    narrow_broker: MosquittoBroker, impl: type[MqttClient]
) -> None:
    """MQTT 5 PUBACK 0x87 (not authorized): the collector must not take it for delivered."""
    published: list[int] = []
    refused: list[tuple[int, int]] = []
    client = impl(
        client_id="c",
        broker=parse_broker_url(f"mqtt://c:pw@127.0.0.1:{narrow_broker.port}"),
        on_message=lambda _message: None,
        clean_start=True,
        on_published=published.append,
        on_refused=lambda mid, reason: refused.append((mid, reason)),
    )
    await client.connect()
    try:
        # Mosquitto closes the connection after refusing: the refused publish goes last.
        allowed = await client.publish("allowed/topic", b"y")
        async with asyncio.timeout(5):
            while not published:
                await asyncio.sleep(0.01)
        denied = await client.publish("denied/topic", b"x")
        async with asyncio.timeout(5):
            while len(published) + len(refused) < 2:
                await asyncio.sleep(0.01)
    finally:
        await client.disconnect()

    assert ([allowed], [(denied, 0x87)]) == (published, refused)
