"""Payload wire form: messages to and from CBOR maps with small integer keys.

One table (:data:`LAYOUTS`) says, per message type, which keys carry which fields and which are
optional; encoding and decoding both read it, and ``messages.cddl`` says the same for people and
for the conformance test. Keys 0 and 1 are the message type and protocol version in every
payload; the others are shared by name across messages (``issued_at`` is always 7), so a key
means one thing wherever it appears.
"""

from __future__ import annotations

import dataclasses
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final

import cbor2

from smartlic.protocol import cbor
from smartlic.protocol.cose import Algorithm, algorithm_for
from smartlic.protocol.errors import ErrorCode, LocalProtocolError, as_remote
from smartlic.protocol.identity import Udi
from smartlic.protocol.keys import VerifyingKey
from smartlic.protocol.messages import (
    PROTOCOL_VERSION,
    Authorization,
    DeregistrationRequest,
    DeregistrationResult,
    ErrorNotice,
    Message,
    MessageType,
    OutOfComplianceNotice,
    RegistrationRequest,
    RegistrationResult,
    TagCompliance,
    UsageReport,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


class Key(IntEnum):
    """Payload map keys (messages.cddl names them the same way)."""

    TYPE = 0
    VERSION = 1
    DEVICE_ID = 2
    UDI = 3
    PUBLIC_KEY = 4
    TOKEN = 5
    REQUEST_ID = 6
    ISSUED_AT = 7
    SEQ = 8
    PERIOD = 9
    COUNTS = 10
    NONCE = 11
    NOTICE_SEQ = 12
    IN_REPLY_TO = 13
    VALID_UNTIL = 14
    NEXT_REPORT_AT = 15
    TAGS = 16
    CODE = 17
    MESSAGE = 18
    SMART_ACCOUNT = 19
    VIRTUAL_ACCOUNT = 20
    REPORT_INTERVAL = 21
    ALGORITHM = 22
    COLLECTOR_KEY = 23


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    key: Key
    attr: str
    optional: bool = False


def _f(key: Key, *, optional: bool = False) -> _Field:
    return _Field(key, key.name.lower(), optional)


_NOTICE: Final = (
    _f(Key.DEVICE_ID),
    _f(Key.NOTICE_SEQ),
    _f(Key.ISSUED_AT),
    _f(Key.IN_REPLY_TO, optional=True),
    _f(Key.VIRTUAL_ACCOUNT),
    _f(Key.VALID_UNTIL),
    _f(Key.NEXT_REPORT_AT),
    _f(Key.NONCE),
    _f(Key.TAGS),
)

LAYOUTS: Final[Mapping[MessageType, tuple[type[Message], tuple[_Field, ...]]]] = {
    MessageType.REGISTRATION_REQUEST: (
        RegistrationRequest,
        (
            _f(Key.UDI),
            _f(Key.ALGORITHM),
            _f(Key.PUBLIC_KEY),
            _f(Key.TOKEN),
            _f(Key.REQUEST_ID),
            _f(Key.ISSUED_AT),
        ),
    ),
    MessageType.REGISTRATION_RESULT: (
        RegistrationResult,
        (
            _f(Key.DEVICE_ID),
            _f(Key.REQUEST_ID),
            _f(Key.NOTICE_SEQ),
            _f(Key.ISSUED_AT),
            _f(Key.SMART_ACCOUNT),
            _f(Key.VIRTUAL_ACCOUNT),
            _f(Key.REPORT_INTERVAL),
            _f(Key.COLLECTOR_KEY),
        ),
    ),
    MessageType.USAGE_REPORT: (
        UsageReport,
        (
            _f(Key.DEVICE_ID),
            _f(Key.SEQ),
            _f(Key.ISSUED_AT),
            _f(Key.PERIOD),
            _f(Key.COUNTS),
            _f(Key.NONCE, optional=True),
        ),
    ),
    MessageType.AUTHORIZATION: (Authorization, _NOTICE),
    MessageType.OUT_OF_COMPLIANCE: (OutOfComplianceNotice, _NOTICE),
    MessageType.ERROR_NOTICE: (
        ErrorNotice,
        (
            _f(Key.DEVICE_ID),
            _f(Key.NOTICE_SEQ),
            _f(Key.ISSUED_AT),
            _f(Key.IN_REPLY_TO, optional=True),
            _f(Key.CODE),
            _f(Key.MESSAGE),
            _f(Key.COLLECTOR_KEY, optional=True),
        ),
    ),
    MessageType.DEREGISTRATION_REQUEST: (
        DeregistrationRequest,
        (_f(Key.DEVICE_ID), _f(Key.REQUEST_ID), _f(Key.ISSUED_AT)),
    ),
    MessageType.DEREGISTRATION_RESULT: (
        DeregistrationResult,
        (_f(Key.DEVICE_ID), _f(Key.REQUEST_ID), _f(Key.NOTICE_SEQ), _f(Key.ISSUED_AT)),
    ),
}


def _udi_out(udi: Udi) -> list[str]:
    return [udi.product_id, udi.serial]


def _udi_in(value: Any) -> Udi:
    if not isinstance(value, list) or len(value) != 2:
        raise LocalProtocolError(ErrorCode.WRONG_TYPE, "udi must be [product id, serial]")
    return Udi(product_id=value[0], serial=value[1])


def _tags_out(tags: Mapping[str, TagCompliance]) -> dict[str, list[int]]:
    return {
        tag: [int(c.status), c.in_use, c.entitled, c.shortfall]
        for tag, c in cbor.sorted_items(tags)
    }


def _counts_out(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(cbor.sorted_items(counts))


def _tags_in(value: Any) -> dict[str, TagCompliance]:
    if not isinstance(value, dict):
        raise LocalProtocolError(ErrorCode.WRONG_TYPE, "tags must be a map")
    result = {}
    for tag, entry in value.items():
        if not isinstance(entry, list) or len(entry) != 4:
            raise LocalProtocolError(
                ErrorCode.WRONG_TYPE, "a tag's compliance is [status, in use, entitled, shortfall]"
            )
        status, in_use, entitled, shortfall = entry
        compliance = TagCompliance(in_use=in_use, entitled=entitled)
        if (
            status != compliance.status
            or type(status) is not int
            or shortfall != compliance.shortfall
            or type(shortfall) is not int
        ):
            raise LocalProtocolError(
                ErrorCode.INVALID_VALUE,
                f"status/shortfall of {tag!r} contradict in use {in_use}, entitled {entitled}",
            )
        result[tag] = compliance
    return result


def _key_out(key: VerifyingKey) -> list[Any]:
    return [int(algorithm_for(key.key_type)), key.raw]


def _key_in(value: Any) -> VerifyingKey:
    if not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], bytes):
        raise LocalProtocolError(ErrorCode.WRONG_TYPE, "a key is [algorithm, public key bytes]")
    algorithm = _enum_in(Algorithm, "algorithm")(value[0])
    return VerifyingKey.from_raw(algorithm.key_type, value[1])


def _enum_in(enum: type[IntEnum], what: str) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if type(value) is not int:
            raise LocalProtocolError(ErrorCode.WRONG_TYPE, f"{what} must be an integer")
        try:
            return enum(value)
        except ValueError:
            raise LocalProtocolError(ErrorCode.OUT_OF_RANGE, f"unknown {what} {value}") from None

    return convert


_TO_WIRE: Final[Mapping[Key, Callable[[Any], Any]]] = {
    Key.UDI: _udi_out,
    Key.TAGS: _tags_out,
    Key.ALGORITHM: int,
    Key.CODE: int,
    Key.COUNTS: _counts_out,
    Key.COLLECTOR_KEY: _key_out,
}
_FROM_WIRE: Final[Mapping[Key, Callable[[Any], Any]]] = {
    Key.UDI: _udi_in,
    Key.TAGS: _tags_in,
    Key.ALGORITHM: _enum_in(Algorithm, "algorithm"),
    Key.CODE: _enum_in(ErrorCode, "error code"),
    Key.COLLECTOR_KEY: _key_in,
}


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    """A layout made ready for the hot paths: plain int keys in ascending order, converters
    looked up once. Keys 0..23 encode as one byte each, so ascending keys are already the
    bytewise order RFC 8949 §4.2.1 asks for and an encoded payload needs no sorting."""

    cls: type[Message]
    name: str
    fields: tuple[
        tuple[int, str, bool, Callable[[Any], Any] | None, Callable[[Any], Any] | None], ...
    ]
    """(key, attribute, optional, to wire, from wire) per field."""
    known: frozenset[int]


def _plan(message_type: MessageType) -> _Plan:
    cls, layout = LAYOUTS[message_type]
    ordered = sorted(layout, key=lambda spec: int(spec.key))
    return _Plan(
        cls=cls,
        name=message_type.name.lower(),
        fields=tuple(
            (
                int(spec.key),
                spec.attr,
                spec.optional,
                _TO_WIRE.get(spec.key),
                _FROM_WIRE.get(spec.key),
            )
            for spec in ordered
        ),
        known=frozenset({int(Key.TYPE), int(Key.VERSION)} | {int(spec.key) for spec in layout}),
    )


_PLANS: Final[Mapping[int, _Plan]] = {int(kind): _plan(kind) for kind in LAYOUTS}
_KEYS_IN_ORDER: Final = max(int(key) for key in Key) < 24
assert _KEYS_IN_ORDER, "payload keys must stay below 24 for the order to hold"  # noqa: S101 -- an import-time invariant


def to_wire(message: Message) -> dict[int, Any]:
    """The payload map of ``message`` (before CBOR encoding), its keys in ascending order."""
    plan = _PLANS[message.message_type]
    wire: dict[int, Any] = {
        int(Key.TYPE): int(message.message_type),
        int(Key.VERSION): PROTOCOL_VERSION,
    }
    for key, attr, _, convert, _ in plan.fields:
        value = getattr(message, attr)
        if value is None:
            continue
        wire[key] = convert(value) if convert else value
    return wire


def encode_payload(message: Message) -> bytes:
    """Deterministic CBOR of ``message``'s payload map.

    :func:`to_wire` writes the top-level keys in order and its converters sort the maps they
    build (tags, counts), so the map goes to cbor2 as it is (cbor.encode would sort it again).
    """
    return cbor.encode_ordered(to_wire(message))


def decode_payload(data: bytes) -> Message:
    """Decode a payload; nothing but :class:`RemoteProtocolError` escapes, whatever ``data``."""
    wire = cbor.as_map(cbor.decode(data), "payload")
    try:
        return from_wire(wire)
    except LocalProtocolError as exc:
        raise as_remote(exc) from None


def from_wire(wire: Mapping[Any, Any]) -> Message:
    """Build the message a payload map describes (raises :class:`LocalProtocolError`)."""
    plan = _PLANS[_message_type(wire)]
    if not wire.keys() <= plan.known:
        unknown = [key for key in wire if key not in plan.known]
        raise LocalProtocolError(ErrorCode.UNKNOWN_FIELD, f"unknown keys {unknown} in {plan.name}")
    kwargs: dict[str, Any] = {}
    for key, attr, optional, _, convert in plan.fields:
        value = wire.get(key, _ABSENT)
        if value is _ABSENT:
            if optional:
                kwargs[attr] = None
                continue
            raise LocalProtocolError(
                ErrorCode.MISSING_FIELD, f"{plan.name} lacks {attr} (key {key})"
            )
        if value is None:
            # An absent optional field is omitted, never null: one message, one encoding.
            raise LocalProtocolError(ErrorCode.WRONG_TYPE, f"{attr} (key {key}) is null")
        kwargs[attr] = convert(value) if convert else _plain(value)
    return plan.cls(**kwargs)


_ABSENT: Final = object()


def _message_type(wire: Mapping[Any, Any]) -> int:
    """The payload's protocol version checked and its message type read (keys 1 and 0)."""
    # Python's ``True == 1`` would let ``true`` stand in for key 1: keys are checked by type first.
    for key in wire:
        if type(key) is not int:
            raise LocalProtocolError(
                ErrorCode.UNKNOWN_FIELD, "payload map keys must all be integers"
            )
    version = wire.get(Key.VERSION)
    if version is None:
        raise LocalProtocolError(ErrorCode.MISSING_FIELD, "payload has no protocol version (key 1)")
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise LocalProtocolError(
            ErrorCode.UNKNOWN_VERSION, f"protocol version {version!r} (this side speaks 1)"
        )
    kind = wire.get(Key.TYPE)
    if kind is None:
        raise LocalProtocolError(ErrorCode.MISSING_FIELD, "payload has no message type (key 0)")
    if type(kind) is not int:
        raise LocalProtocolError(ErrorCode.WRONG_TYPE, "message type must be an integer")
    if kind not in _PLANS:
        raise LocalProtocolError(ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown message type {kind}")
    return kind


def _plain(value: Any) -> Any:
    # cbor2 hands nested maps over as FrozenDict only when they are keys; a plain dict stays.
    # ``type() is``: isinstance of the ABC-derived FrozenDict costs 0.3 µs per field.
    return dict(value) if type(value) is cbor2.FrozenDict else value
