"""MQTT 3.1.1 and 5 packets, sans-I/O: what the collector's own client sends and reads.

Only the packets a QoS ≤ 1 client needs (CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK,
PINGREQ, PINGRESP, DISCONNECT). Encoders return bytes; :class:`PacketReader` takes whatever
arrived on the socket and yields whole packets, so one ``recv`` of 64 KiB becomes hundreds of
packets without a system call each (paho reads a packet's header a byte at a time).

References: MQTT 3.1.1 (OASIS, 2014) and MQTT 5.0 (OASIS, 2019), cited as "v3 §x" / "v5 §x".
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

MAX_REMAINING: Final = 268_435_455
"""The largest remaining length a 4-byte variable byte integer can say (v5 §1.5.5)."""

_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


_TYPES: Final = (None, *PacketType)
"""``PacketType`` by its number (0 is reserved): a tuple index, not an enum call per packet."""


class MalformedPacket(Exception):  # noqa: N818 -- the MQTT 5 reason code's own name (0x81)
    """The broker sent bytes that are not a valid packet: the connection must be closed."""


# v5 §2.2.2.2: each property's identifier decides its type.
_BYTE, _TWO, _FOUR, _VARINT, _TEXT, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES: Final = {
    0x01: _BYTE, 0x02: _FOUR, 0x03: _TEXT, 0x08: _TEXT, 0x09: _BINARY, 0x0B: _VARINT,
    0x11: _FOUR, 0x12: _TEXT, 0x13: _TWO, 0x15: _TEXT, 0x16: _BINARY, 0x17: _BYTE,
    0x18: _FOUR, 0x19: _BYTE, 0x1A: _TEXT, 0x1C: _TEXT, 0x1F: _TEXT, 0x21: _TWO,
    0x22: _TWO, 0x23: _TWO, 0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _FOUR,
    0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}  # fmt: skip
SESSION_EXPIRY: Final = 0x11
RECEIVE_MAXIMUM: Final = 0x21
SERVER_KEEP_ALIVE: Final = 0x13
REASON_STRING: Final = 0x1F
MAXIMUM_PACKET_SIZE: Final = 0x27
PACKET_TOO_LARGE: Final = 0x95
"""The reason code for a packet over the receiver's Maximum Packet Size (MQTT 5 §2.4)."""


def varint(value: int) -> bytes:
    """A variable byte integer (v3 §2.2.3, v5 §1.5.5)."""
    if not 0 <= value <= MAX_REMAINING:
        raise ValueError(f"{value} does not fit a variable byte integer")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | 0x80 if value else byte)
        if not value:
            return bytes(out)


def _text(value: str) -> bytes:
    raw = value.encode()
    return _U16.pack(len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def _properties(items: Iterable[tuple[int, int]]) -> bytes:
    """Encode integer properties (all the client sends) with their identifiers' widths."""
    body = bytearray()
    for ident, value in items:
        kind = _PROPERTY_TYPES[ident]
        body.append(ident)
        body += _U32.pack(value) if kind == _FOUR else _U16.pack(value)
    return varint(len(body)) + bytes(body)


def connect(  # noqa: PLR0913 -- the fields of a CONNECT
    *,
    client_id: str,
    v5: bool,
    clean_start: bool,
    keepalive: int,
    session_expiry: int = 0,
    receive_maximum: int = 65535,
    maximum_packet_size: int = MAX_REMAINING + 5,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """CONNECT (v3 §3.1, v5 §3.1); no will message.

    MQTT 5 sends a password without a user name (v5 §3.1.2.9); MQTT 3.1.1 cannot, as its
    password flag needs the user name flag (v3 §3.1.2.9): a ValueError.
    """
    if password is not None and username is None and not v5:
        raise ValueError("MQTT 3.1.1 cannot send a password without a user name (§3.1.2.9)")
    flags = 0x02 if clean_start else 0
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = bytearray(_text("MQTT"))
    body += bytes((5 if v5 else 4, flags)) + _U16.pack(keepalive)
    if v5:
        body += _properties(
            (
                (SESSION_EXPIRY, session_expiry),
                (RECEIVE_MAXIMUM, receive_maximum),
                (MAXIMUM_PACKET_SIZE, maximum_packet_size),
            )
        )
    body += _text(client_id)
    if username is not None:
        body += _text(username)
    if password is not None:
        # Binary Data (v5 §1.5.6), framed as a string is: two length bytes, then the bytes.
        body += _text(password)
    return _packet(PacketType.CONNECT << 4, bytes(body))


def publish(
    topic: str, payload: bytes, *, qos: int, packet_id: int, v5: bool, dup: bool = False
) -> bytes:
    """PUBLISH (v3 §3.3, v5 §3.3), without retain and without properties."""
    first = PacketType.PUBLISH << 4 | qos << 1 | (0x08 if dup else 0)
    head = _text(topic) + (_U16.pack(packet_id) if qos else b"") + (b"\x00" if v5 else b"")
    return bytes((first,)) + varint(len(head) + len(payload)) + head + payload


def puback(packet_id: int) -> bytes:
    """PUBACK; in v5 a remaining length of 2 means reason 0x00, success (v5 §3.4.2.1)."""
    return b"\x40\x02" + _U16.pack(packet_id)


def subscribe(packet_id: int, filters: Iterable[tuple[str, int]], *, v5: bool) -> bytes:
    """SUBSCRIBE (v3 §3.8, v5 §3.8); the options byte is the maximum QoS alone."""
    body = bytearray(_U16.pack(packet_id))
    if v5:
        body.append(0)
    for topic, qos in filters:
        body += _text(topic) + bytes((qos,))
    return _packet(PacketType.SUBSCRIBE << 4 | 0x02, bytes(body))


PINGREQ: Final = b"\xc0\x00"
DISCONNECT: Final = b"\xe0\x00"
"""Also the v5 normal disconnection: remaining length 0 means reason 0x00 (v5 §3.14.2.1)."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One packet from the broker: its type, the flags of its first byte and its body."""

    type: PacketType
    flags: int
    body: bytes
    truncated: bool = False
    """Over the reader's size limit: ``body`` is its beginning, the rest was dropped."""


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    packet_id: int
    dup: bool
    retain: bool


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool
    reason: int
    """0 when accepted (v3 return codes 1 to 5 and v5 reason codes ≥ 0x80 refuse)."""
    receive_maximum: int = 65535
    server_keepalive: int | None = None
    reason_string: str | None = None
    maximum_packet_size: int | None = None
    """The largest packet the broker takes (MQTT 5 §3.2.2.3.6); ``None``: no limit told."""


class PacketReader:
    """Whole packets out of a byte stream (any split across reads).

    A packet over ``max_size`` is handed on cut to its first ``max_size`` bytes, marked
    ``truncated``, and the rest of it is dropped as it arrives: one oversize message costs no
    more memory than the limit, and the connection goes on (ending it would only make the
    broker deliver the same message again).
    """

    def __init__(self, *, max_size: int = MAX_REMAINING) -> None:
        self._buffer = bytearray()
        self._max_size = max_size
        self._skip = 0
        """Bytes of a truncated packet still to drop."""

    def feed(self, data: bytes) -> list[Packet]:
        """Add what arrived; every packet now complete, in order. Raises MalformedPacket."""
        buffer = self._buffer
        buffer += data
        packets: list[Packet] = []
        start = self._drop(0)
        end = len(buffer)
        while end - start >= 2 and not self._skip:  # the smallest packet: type and length
            header = self._header(start, end)
            if header is None:
                break
            length, pos = header
            kind = _TYPES[buffer[start] >> 4]
            if kind is None:
                raise MalformedPacket("packet type 0 is reserved")
            keep = min(length, self._max_size)
            if end - pos < keep:
                break
            packets.append(
                Packet(
                    kind,
                    buffer[start] & 0x0F,
                    bytes(buffer[pos : pos + keep]),
                    truncated=keep < length,
                )
            )
            self._skip = length - keep
            start = self._drop(pos + keep)
        del buffer[:start]
        return packets

    def _header(self, start: int, end: int) -> tuple[int, int] | None:
        """The remaining length and where the body starts; None while incomplete."""
        buffer = self._buffer
        length = 0
        pos = start + 1
        for shift in (0, 7, 14, 21):  # four bytes at most (v5 §1.5.5)
            if pos >= end:
                return None
            byte = buffer[pos]
            length |= (byte & 0x7F) << shift
            pos += 1
            if not byte & 0x80:
                return length, pos
        raise MalformedPacket("remaining length longer than 4 bytes")

    def _drop(self, start: int) -> int:
        """Drop what is left of a truncated packet from ``start`` on; where to go on from."""
        dropped = min(self._skip, len(self._buffer) - start)
        self._skip -= dropped
        return start + dropped


def read_publish(packet: Packet, *, v5: bool) -> Publish:
    """The fields of a PUBLISH (v3 §3.3, v5 §3.3); properties are skipped."""
    body = packet.body
    qos = (packet.flags >> 1) & 0x03
    if qos == 3:  # v5 §3.3.1.2: QoS 3 is malformed
        raise MalformedPacket("PUBLISH with QoS 3")
    try:
        (size,) = _U16.unpack_from(body, 0)
        pos = 2 + size
        topic = body[2:pos].decode()
        packet_id = 0
        if qos:
            (packet_id,) = _U16.unpack_from(body, pos)
            pos += 2
            if packet_id == 0:  # MQTT 3.1.1 §2.3.1, 5 §2.2.1: non-zero with QoS 1 and 2
                raise MalformedPacket("a QoS 1 or 2 PUBLISH with packet identifier 0")
        if v5:
            length, pos = _read_varint(body, pos)
            pos += length
    except (struct.error, UnicodeDecodeError) as exc:
        raise MalformedPacket(f"bad PUBLISH: {exc}") from None
    if pos > len(body):
        raise MalformedPacket("PUBLISH shorter than its header")
    return Publish(
        topic=topic,
        payload=body[pos:],
        qos=qos,
        packet_id=packet_id,
        dup=bool(packet.flags & 0x08),
        retain=bool(packet.flags & 0x01),
    )


def read_packet_id(packet: Packet) -> int:
    """The packet identifier that starts PUBACK, SUBACK and the like."""
    if len(packet.body) < 2:  # two bytes
        raise MalformedPacket(f"{packet.type.name} without a packet identifier")
    return int(_U16.unpack_from(packet.body, 0)[0])


def read_puback(packet: Packet) -> tuple[int, int]:
    """A PUBACK's packet identifier and reason code: 0 (success) when it has none, as every
    MQTT 3.1.1 PUBACK and a successful MQTT 5 one may (MQTT 5 §3.4.2.1)."""
    packet_id = read_packet_id(packet)
    return packet_id, packet.body[2] if len(packet.body) > 2 else 0


def read_connack(packet: Packet, *, v5: bool) -> ConnAck:
    body = packet.body
    if len(body) < 2:  # flags and reason
        raise MalformedPacket("CONNACK shorter than 2 bytes")
    ack = ConnAck(session_present=bool(body[0] & 0x01), reason=body[1])
    if not v5 or len(body) == 2:  # no properties
        return ack
    props = read_properties(body, 2)
    text = props.get(REASON_STRING)
    keepalive = props.get(SERVER_KEEP_ALIVE)
    receive_maximum = _int(props.get(RECEIVE_MAXIMUM), None)
    if receive_maximum == 0:  # MQTT 5 §3.2.2.3.3: a Protocol Error, not "no limit"
        raise MalformedPacket("CONNACK with a Receive Maximum of 0")
    maximum_packet_size = _int(props.get(MAXIMUM_PACKET_SIZE), None)
    if maximum_packet_size == 0:  # MQTT 5 §3.2.2.3.6: a Protocol Error
        raise MalformedPacket("CONNACK with a Maximum Packet Size of 0")
    return ConnAck(
        session_present=ack.session_present,
        reason=ack.reason,
        receive_maximum=receive_maximum or 65535,
        server_keepalive=_int(keepalive, None),
        reason_string=text if isinstance(text, str) else None,
        maximum_packet_size=maximum_packet_size,
    )


def read_suback(packet: Packet, *, v5: bool) -> tuple[int, list[int]]:
    """The packet identifier and one reason code per filter (≥ 0x80: refused)."""
    packet_id = read_packet_id(packet)
    pos = 2
    if v5:
        length, pos = _read_varint(packet.body, pos)
        pos += length
    return packet_id, list(packet.body[pos:])


def read_disconnect_reason(packet: Packet) -> int:
    """v5 §3.14.2.1: no body means 0x00, normal disconnection."""
    return packet.body[0] if packet.body else 0


def read_properties(body: bytes, pos: int) -> dict[int, int | str | bytes]:
    """v5 properties at ``pos`` (a string pair's value is its second string)."""
    length, pos = _read_varint(body, pos)
    end = pos + length
    if end > len(body):
        raise MalformedPacket("properties run past the packet")
    props: dict[int, int | str | bytes] = {}
    try:
        while pos < end:
            ident, pos = _read_varint(body, pos)
            kind = _PROPERTY_TYPES.get(ident)
            if kind is None:
                raise MalformedPacket(f"unknown property 0x{ident:02x}")
            props[ident], pos = _read_property(body, pos, kind)
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise MalformedPacket(f"bad properties: {exc}") from None
    if pos != end:
        raise MalformedPacket("properties do not end where their length says")
    return props


def _read_property(body: bytes, pos: int, kind: int) -> tuple[int | str | bytes, int]:
    if kind == _BYTE:
        return body[pos], pos + 1
    if kind == _TWO:
        return int(_U16.unpack_from(body, pos)[0]), pos + 2
    if kind == _FOUR:
        return int(_U32.unpack_from(body, pos)[0]), pos + 4
    if kind == _VARINT:
        return _read_varint(body, pos)
    raw = b""
    for _ in range(2 if kind == _PAIR else 1):
        (size,) = _U16.unpack_from(body, pos)
        raw = body[pos + 2 : pos + 2 + size]
        if len(raw) != size:
            raise MalformedPacket("a property's string runs past the packet")
        pos += 2 + size
    return (raw if kind == _BINARY else raw.decode()), pos


def _int(value: int | str | bytes | None, default: int | None) -> int | None:
    return value if isinstance(value, int) else default


def _read_varint(body: bytes, pos: int) -> tuple[int, int]:
    value = 0
    for shift in (0, 7, 14, 21):
        if pos >= len(body):
            raise MalformedPacket("variable byte integer runs past the packet")
        byte = body[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
    raise MalformedPacket("variable byte integer longer than 4 bytes")
