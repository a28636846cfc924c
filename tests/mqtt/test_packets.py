"""The sans-I/O MQTT codec of the collector's own client."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smartlic.mqtt import packets
from smartlic.mqtt.packets import MalformedPacket, Packet, PacketReader, PacketType

topics = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    min_size=1,
    max_size=40,
)


def _one(data: bytes) -> Packet:
    (packet,) = PacketReader().feed(data)
    return packet


@given(st.integers(min_value=0, max_value=20_000))
def test_a_remaining_length_reads_back_as_the_body_it_announces(size: int) -> None:
    packet = _one(b"\x30" + packets.varint(size) + bytes(size))

    assert size == len(packet.body)


@pytest.mark.parametrize(
    ("value", "length"),
    [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3), (2_097_151, 3), (2_097_152, 4),
     (packets.MAX_REMAINING, 4)],
)  # fmt: skip
def test_a_variable_byte_integer_takes_the_bytes_the_standard_says(value: int, length: int) -> None:
    """MQTT 5 §1.5.5, table 1-1."""
    assert length == len(packets.varint(value))


def test_a_value_beyond_four_bytes_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        packets.varint(packets.MAX_REMAINING + 1)


@given(
    topic=topics,
    payload=st.binary(max_size=300),
    qos=st.sampled_from([0, 1]),
    packet_id=st.integers(min_value=1, max_value=65535),
    v5=st.booleans(),
    dup=st.booleans(),
)
def test_a_publish_reads_back_as_written(
    topic: str, payload: bytes, qos: int, packet_id: int, v5: bool, dup: bool
) -> None:
    wire = packets.publish(topic, payload, qos=qos, packet_id=packet_id, v5=v5, dup=dup)

    read = packets.read_publish(_one(wire), v5=v5)

    assert (topic, payload, qos, packet_id if qos else 0, dup, False) == (
        read.topic,
        read.payload,
        read.qos,
        read.packet_id,
        read.dup,
        read.retain,
    )


@given(
    st.lists(st.binary(max_size=200), min_size=1, max_size=20),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=40),
)
def test_packets_come_out_whole_however_the_stream_is_split(
    payloads: list[bytes], cuts: list[int]
) -> None:
    """TCP may split or merge packets anywhere: the reader yields the same packets."""
    stream = b"".join(
        packets.publish("t", p, qos=1, packet_id=n + 1, v5=True) for n, p in enumerate(payloads)
    )
    reader = PacketReader()
    got: list[Packet] = []
    pos = 0
    for cut in cuts * (len(stream) // sum(cuts) + 1):
        got += reader.feed(stream[pos : pos + cut])
        pos += cut
    got += reader.feed(stream[pos:])

    assert payloads == [packets.read_publish(p, v5=True).payload for p in got]


@given(st.binary(max_size=300), st.booleans())
def test_any_bytes_from_the_broker_give_packets_or_malformed_packet(data: bytes, v5: bool) -> None:
    """The remote-input boundary raises nothing but MalformedPacket, whatever arrives."""
    try:
        for packet in PacketReader().feed(data):
            if packet.type is PacketType.PUBLISH:
                packets.read_publish(packet, v5=v5)
            elif packet.type is PacketType.CONNACK:
                packets.read_connack(packet, v5=v5)
            elif packet.type is PacketType.SUBACK:
                packets.read_suback(packet, v5=v5)
            elif packet.type is PacketType.PUBACK:
                packets.read_packet_id(packet)
    except MalformedPacket:
        pass


def test_a_remaining_length_of_five_bytes_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match="longer than 4 bytes"):
        PacketReader().feed(b"\x30\xff\xff\xff\xff\x01")


def test_a_packet_over_the_size_limit_comes_cut_and_the_stream_goes_on() -> None:
    """Its beginning is handed on, marked truncated; the rest is dropped, and the packet after
    it is read whole."""
    big = packets.publish("t/big", bytes(range(256)) * 40, qos=1, packet_id=7, v5=False)
    small = packets.publish("t/small", b"ok", qos=1, packet_id=8, v5=False)

    got = PacketReader(max_size=100).feed(big + small)

    assert [(True, 100), (False, len(small) - 2)] == [(p.truncated, len(p.body)) for p in got]
    assert (7, "t/big") == (
        packets.read_publish(got[0], v5=False).packet_id,
        packets.read_publish(got[0], v5=False).topic,
    )
    assert b"ok" == packets.read_publish(got[1], v5=False).payload


@given(st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=30))
def test_an_oversize_packet_is_cut_the_same_however_the_stream_is_split(cuts: list[int]) -> None:
    stream = packets.publish("t", bytes(5000), qos=1, packet_id=1, v5=True) + packets.publish(
        "t", b"after", qos=1, packet_id=2, v5=True
    )
    reader = PacketReader(max_size=64)
    got: list[Packet] = []
    pos = 0
    for cut in cuts * (len(stream) // sum(cuts) + 1):
        got += reader.feed(stream[pos : pos + cut])
        pos += cut

    assert [True, False] == [p.truncated for p in got]
    assert b"after" == packets.read_publish(got[1], v5=True).payload


def test_packet_type_zero_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match="reserved"):
        PacketReader().feed(b"\x00\x00")


def test_a_v5_connack_gives_the_brokers_receive_maximum_and_keepalive() -> None:
    properties = b"\x06\x21\x00\x14\x13\x00\x3c"  # Receive Maximum 20, Server Keep Alive 60
    ack = packets.read_connack(_one(b"\x20\x09\x01\x00" + properties), v5=True)

    assert (True, 0, 20, 60) == (
        ack.session_present,
        ack.reason,
        ack.receive_maximum,
        ack.server_keepalive,
    )


def test_a_v3_connack_refusal_carries_its_return_code() -> None:
    ack = packets.read_connack(_one(b"\x20\x02\x00\x05"), v5=False)

    assert (False, 5) == (ack.session_present, ack.reason)


def test_a_refusing_v5_connack_gives_its_reason_string() -> None:
    properties = b"\x0a\x1f\x00\x07no room"
    ack = packets.read_connack(_one(b"\x20\x0d\x00\x97" + properties), v5=True)

    assert (0x97, "no room") == (ack.reason, ack.reason_string)


def test_an_unknown_property_is_malformed() -> None:
    with pytest.raises(MalformedPacket, match="unknown property 0x7f"):
        packets.read_connack(_one(b"\x20\x05\x00\x00\x02\x7f\x00"), v5=True)


def test_a_receive_maximum_of_zero_is_malformed_not_unlimited() -> None:
    """MQTT 5 §3.2.2.3.3: a Protocol Error; read as 65,535 it once lifted every limit."""
    with pytest.raises(MalformedPacket, match="Receive Maximum of 0"):
        packets.read_connack(_one(b"\x20\x06\x00\x00\x03\x21\x00\x00"), v5=True)


def test_a_v5_connack_gives_the_brokers_maximum_packet_size() -> None:
    properties = b"\x05\x27\x00\x00\x01\x00"  # Maximum Packet Size 256

    assert (
        256
        == packets.read_connack(_one(b"\x20\x08\x00\x00" + properties), v5=True).maximum_packet_size
    )


def test_a_v5_connack_without_a_maximum_packet_size_sets_no_limit() -> None:
    assert None is packets.read_connack(_one(b"\x20\x03\x00\x00\x00"), v5=True).maximum_packet_size


def test_a_maximum_packet_size_of_zero_is_malformed() -> None:
    """MQTT 5 §3.2.2.3.6: a Protocol Error."""
    with pytest.raises(MalformedPacket, match="Maximum Packet Size of 0"):
        packets.read_connack(_one(b"\x20\x08\x00\x00\x05\x27\x00\x00\x00\x00"), v5=True)


def test_a_qos_1_publish_with_packet_identifier_0_is_malformed() -> None:
    """MQTT 5 §2.2.1: acknowledging it would acknowledge nothing the broker sent."""
    publish = packets.publish("t", b"x", qos=1, packet_id=1, v5=True).replace(
        b"\x00\x01\x00x", b"\x00\x00\x00x"
    )

    with pytest.raises(MalformedPacket, match="packet identifier 0"):
        packets.read_publish(_one(publish), v5=True)


def test_a_suback_gives_one_reason_per_filter() -> None:
    assert (7, [1, 0x80]) == packets.read_suback(_one(b"\x90\x05\x00\x07\x00\x01\x80"), v5=True)


def test_a_connect_names_the_protocol_level_and_the_session_settings() -> None:
    wire = packets.connect(
        client_id="c1",
        v5=True,
        clean_start=False,
        keepalive=30,
        session_expiry=0xFFFFFFFF,
        receive_maximum=500,
        username="u",
        password="p",  # noqa: S106 -- a test value, not a credential
        maximum_packet_size=1 << 20,
    )
    body = _one(wire).body

    assert b"\x00\x04MQTT\x05\xc0\x00\x1e" == body[:10]
    assert b"\x0d\x11\xff\xff\xff\xff\x21\x01\xf4\x27\x00\x10\x00\x00" == body[10:24]
    assert b"\x00\x02c1\x00\x01u\x00\x01p" == body[24:]


def test_a_v3_connect_has_no_properties_and_sets_clean_session() -> None:
    body = _one(packets.connect(client_id="c", v5=False, clean_start=True, keepalive=5)).body

    assert b"\x00\x04MQTT\x04\x02\x00\x05\x00\x01c" == body


def test_a_subscribe_carries_its_flags_and_each_filters_qos() -> None:
    packet = _one(packets.subscribe(9, [("a/+", 1)], v5=False))

    assert (PacketType.SUBSCRIBE, 0x02, b"\x00\x09\x00\x03a/+\x01") == (
        packet.type,
        packet.flags,
        packet.body,
    )


def test_a_v5_disconnect_without_a_body_is_a_normal_disconnection() -> None:
    assert 0 == packets.read_disconnect_reason(_one(packets.DISCONNECT))
