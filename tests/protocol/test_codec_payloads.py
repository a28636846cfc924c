"""Payload encoding: every message survives the wire, and each grammar breach has its own code."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_strategies import (
    COLLECTOR_ED25519,
    DEVICE_ED25519,
    DEVICE_P256,
    MESSAGE_STRATEGIES,
    three_tag_report,
)
from smartlic.protocol import (
    Algorithm,
    Authorization,
    ErrorCode,
    ErrorNotice,
    MessageType,
    OutOfComplianceNotice,
    RegistrationRequest,
    RegistrationToken,
    RemoteProtocolError,
    SigningKey,
    TagCompliance,
    Udi,
    decode_payload,
    encode_payload,
    open_message,
    seal,
)
from smartlic.protocol import cbor as cbor_codec
from smartlic.protocol.codec import LAYOUTS, Key, to_wire

if TYPE_CHECKING:
    from collections.abc import Callable


@pytest.mark.parametrize("kind", sorted(MESSAGE_STRATEGIES))
@settings(max_examples=60)
@given(data=st.data())
def test_payload_round_trip(kind: str, data: st.DataObject) -> None:
    """decode(encode(m)) == m for every message type, and re-encoding gives the same bytes."""
    message = data.draw(MESSAGE_STRATEGIES[kind])

    wire = encode_payload(message)
    decoded = decode_payload(wire)

    assert message == decoded
    assert wire == encode_payload(decoded)


@pytest.mark.parametrize("kind", sorted(MESSAGE_STRATEGIES))
@settings(max_examples=20)
@given(data=st.data())
def test_sealed_round_trip(kind: str, data: st.DataObject) -> None:
    """open_message(seal(m, key)) gives m back, and it verifies with the signer's public key."""
    message = data.draw(MESSAGE_STRATEGIES[kind])
    key = data.draw(st.sampled_from([DEVICE_ED25519, DEVICE_P256, COLLECTOR_ED25519]))

    opened = open_message(seal(message, key))

    assert message == opened.message
    opened.verify(key.public)


@pytest.mark.parametrize("kind", sorted(MESSAGE_STRATEGIES))
@settings(max_examples=40)
@given(data=st.data())
def test_payloads_are_written_in_order_as_the_general_encoder_would(
    kind: str, data: st.DataObject
) -> None:
    """encode_payload skips sorting (its maps are built in order): same bytes as cbor.encode."""
    message = data.draw(MESSAGE_STRATEGIES[kind])

    assert cbor_codec.encode(to_wire(message)) == encode_payload(message)


def test_every_message_type_has_a_layout_and_a_strategy() -> None:
    """A message type added without a wire layout or a test strategy fails here."""
    assert set(MessageType) == set(LAYOUTS)
    assert len(MessageType) == len(MESSAGE_STRATEGIES)


def test_payload_keys_are_shared_by_name() -> None:
    """A key means one field wherever it appears (issued_at is always 7)."""
    for _, layout in LAYOUTS.values():
        for spec in layout:
            assert spec.key.name.lower() == spec.attr


@pytest.mark.parametrize("key", [DEVICE_ED25519, DEVICE_P256], ids=["ed25519", "es256"])
def test_three_tag_usage_report_fits_200_bytes_on_the_wire(key: SigningKey) -> None:
    """A signed report of three license tags, with a nonce, is at most 200 bytes (issue goal)."""
    assert len(seal(three_tag_report(), key)) <= 200


def _report_wire() -> dict[int, Any]:
    return to_wire(three_tag_report())


def _refusal(wire: object) -> ErrorCode:
    with pytest.raises(RemoteProtocolError) as caught:
        decode_payload(cbor_codec.encode(wire))
    return caught.value.code


def _with(**changes: Any) -> dict[int, Any]:
    wire = _report_wire()
    for name, value in changes.items():
        key = int(Key[name.upper()])
        if value is _DROP:
            del wire[key]
        else:
            wire[key] = value
    return wire


_DROP: Any = object()


def _loose_report_wire() -> dict[object, Any]:
    """The report's payload map, typed to take keys of any type."""
    wire: dict[object, Any] = {key: value for key, value in _report_wire().items()}  # noqa: C416 -- the annotation widens the key type
    return wire


GRAMMAR_BREACHES: list[tuple[str, Callable[[], object], ErrorCode]] = [
    ("payload-is-an-array", lambda: [3, 1], ErrorCode.WRONG_TYPE),
    ("no-version", lambda: _with(version=_DROP), ErrorCode.MISSING_FIELD),
    ("version-2", lambda: _with(version=2), ErrorCode.UNKNOWN_VERSION),
    ("version-as-text", lambda: _with(version="1"), ErrorCode.UNKNOWN_VERSION),
    ("no-type", lambda: _with(type=_DROP), ErrorCode.MISSING_FIELD),
    ("type-99", lambda: _with(type=99), ErrorCode.UNKNOWN_MESSAGE_TYPE),
    ("type-as-text", lambda: _with(type="3"), ErrorCode.WRONG_TYPE),
    ("no-seq", lambda: _with(seq=_DROP), ErrorCode.MISSING_FIELD),
    ("no-counts", lambda: _with(counts=_DROP), ErrorCode.MISSING_FIELD),
    ("seq-as-text", lambda: _with(seq="1"), ErrorCode.WRONG_TYPE),
    ("seq-as-bool", lambda: _with(seq=True), ErrorCode.WRONG_TYPE),
    ("seq-zero", lambda: _with(seq=0), ErrorCode.OUT_OF_RANGE),
    ("seq-2-pow-63", lambda: _with(seq=2**63), ErrorCode.OUT_OF_RANGE),
    ("seq-negative", lambda: _with(seq=-1), ErrorCode.OUT_OF_RANGE),
    ("issued-at-after-2-pow-40", lambda: _with(issued_at=2**40 + 1), ErrorCode.OUT_OF_RANGE),
    ("count-negative", lambda: _with(counts={"a": -1}), ErrorCode.OUT_OF_RANGE),
    ("count-2-pow-32", lambda: _with(counts={"a": 2**32}), ErrorCode.OUT_OF_RANGE),
    ("counts-as-array", lambda: _with(counts=[1]), ErrorCode.WRONG_TYPE),
    ("count-key-not-text", lambda: _with(counts={1: 1}), ErrorCode.WRONG_TYPE),
    ("license-tag-uppercase", lambda: _with(counts={"DNA": 1}), ErrorCode.INVALID_VALUE),
    (
        "65-license-tags",
        lambda: _with(counts={f"t{i}": 1 for i in range(65)}),
        ErrorCode.OUT_OF_RANGE,
    ),
    ("nonce-7-bytes", lambda: _with(nonce=b"1234567"), ErrorCode.OUT_OF_RANGE),
    ("nonce-as-text", lambda: _with(nonce="12345678"), ErrorCode.WRONG_TYPE),
    # An absent optional field is omitted; null would be a second encoding of the same report.
    ("nonce-null", lambda: _with(nonce=None), ErrorCode.WRONG_TYPE),
    ("device-id-without-serial", lambda: _with(device_id="ISR4331"), ErrorCode.INVALID_VALUE),
    ("device-id-with-slash", lambda: _with(device_id="ISR/K9:X1"), ErrorCode.INVALID_VALUE),
    ("device-id-as-bytes", lambda: _with(device_id=b"A:1"), ErrorCode.WRONG_TYPE),
    ("unknown-key-99", lambda: {**_report_wire(), 99: 0}, ErrorCode.UNKNOWN_FIELD),
    ("key-of-another-message", lambda: {**_report_wire(), 13: 1}, ErrorCode.UNKNOWN_FIELD),
    ("text-key", lambda: {**_loose_report_wire(), "seq": 1}, ErrorCode.UNKNOWN_FIELD),
    ("negative-key", lambda: {**_report_wire(), -1: 1}, ErrorCode.UNKNOWN_FIELD),
]


@pytest.mark.parametrize(
    ("build", "code"), [pytest.param(b, c, id=i) for i, b, c in GRAMMAR_BREACHES]
)
def test_usage_report_grammar_breach_has_its_code(
    build: Callable[[], object], code: ErrorCode
) -> None:
    """Each way a usage report payload can break messages.cddl is refused with its own code."""
    assert code == _refusal(build())


def test_true_cannot_stand_in_for_key_1() -> None:
    """CBOR ``true`` is not the integer 1, though Python says True == 1: no version key here."""
    wire = _loose_report_wire()
    del wire[1]
    wire[True] = 1

    assert ErrorCode.UNKNOWN_FIELD == _refusal(wire)


def test_false_cannot_stand_in_for_key_0() -> None:
    """CBOR ``false`` is not the integer 0: no message type here."""
    wire = _loose_report_wire()
    del wire[0]
    wire[False] = 3

    assert ErrorCode.UNKNOWN_FIELD == _refusal(wire)


def _compliance_wire(cls: type[Authorization | OutOfComplianceNotice]) -> dict[int, Any]:
    tags = {"dna": TagCompliance(in_use=3, entitled=2), "net": TagCompliance(in_use=1, entitled=1)}
    if cls is Authorization:
        tags = {"net": tags["net"]}
    return to_wire(
        cls(
            device_id="C9300~24T:FOC1",
            notice_seq=5,
            issued_at=1000,
            in_reply_to=7,
            virtual_account="default",
            valid_until=2000,
            next_report_at=1500,
            nonce=b"n" * 8,
            tags=tags,
        )
    )


def test_tag_status_contradicting_its_counts_is_refused() -> None:
    """[status 0, in use 3, entitled 2, shortfall 0] lies about its status: INVALID_VALUE."""
    wire = _compliance_wire(OutOfComplianceNotice)
    wire[Key.TAGS]["dna"] = [0, 3, 2, 0]

    assert ErrorCode.INVALID_VALUE == _refusal(wire)


def test_tag_shortfall_contradicting_its_counts_is_refused() -> None:
    """A shortfall other than in use - entitled is refused."""
    wire = _compliance_wire(OutOfComplianceNotice)
    wire[Key.TAGS]["dna"] = [1, 3, 2, 5]

    assert ErrorCode.INVALID_VALUE == _refusal(wire)


@pytest.mark.parametrize("shortfall", [True, False])
def test_a_tag_shortfall_of_true_or_false_is_refused(shortfall: bool) -> None:
    """Python's True == 1 and False == 0 once let them pass for the counts' shortfall."""
    wire = _compliance_wire(OutOfComplianceNotice)
    if shortfall:
        wire[Key.TAGS]["dna"] = [1, 3, 2, True]
    else:
        wire[Key.TAGS]["net"] = [0, 1, 1, False]

    assert ErrorCode.INVALID_VALUE == _refusal(wire)


def test_tag_compliance_of_wrong_shape_is_refused() -> None:
    """A tag's compliance is a 4-element array."""
    wire = _compliance_wire(Authorization)
    wire[Key.TAGS]["net"] = [0, 1, 1]

    assert ErrorCode.WRONG_TYPE == _refusal(wire)


def test_authorization_with_a_tag_out_of_compliance_is_refused() -> None:
    """An authorization carrying a shortfall contradicts itself."""
    wire = _compliance_wire(OutOfComplianceNotice)
    wire[Key.TYPE] = int(MessageType.AUTHORIZATION)

    assert ErrorCode.INVALID_VALUE == _refusal(wire)


def test_out_of_compliance_notice_without_a_shortfall_is_refused() -> None:
    """An out-of-compliance notice must name at least one tag out of compliance."""
    wire = _compliance_wire(Authorization)
    wire[Key.TYPE] = int(MessageType.OUT_OF_COMPLIANCE)

    assert ErrorCode.INVALID_VALUE == _refusal(wire)


def test_notice_valid_until_before_issued_at_is_refused() -> None:
    """A notice cannot expire before it was issued."""
    wire = _compliance_wire(Authorization)
    wire[Key.VALID_UNTIL] = 999

    assert ErrorCode.INVALID_VALUE == _refusal(wire)


def _error_notice_wire() -> dict[int, Any]:
    return to_wire(
        ErrorNotice(
            device_id="A:1",
            notice_seq=1,
            issued_at=1,
            in_reply_to=b"r" * 8,
            code=ErrorCode.TOKEN_EXPIRED,
            message="token expired",
            collector_key=COLLECTOR_ED25519.public,
        )
    )


def test_unknown_error_code_is_refused() -> None:
    """An error code this side does not know is OUT_OF_RANGE."""
    wire = _error_notice_wire()
    wire[Key.CODE] = 998

    assert ErrorCode.OUT_OF_RANGE == _refusal(wire)


def test_collector_key_with_unknown_algorithm_is_refused() -> None:
    """A collector key is [alg, bytes] with alg one of -19, -8, -7."""
    wire = _error_notice_wire()
    wire[Key.COLLECTOR_KEY] = [-35, COLLECTOR_ED25519.public.raw]

    assert ErrorCode.OUT_OF_RANGE == _refusal(wire)


def test_collector_key_that_is_no_point_is_refused() -> None:
    """Bytes that are not a P-256 point are a MALFORMED_KEY."""
    wire = _error_notice_wire()
    wire[Key.COLLECTOR_KEY] = [-7, b"\x02" + b"\xff" * 32]

    assert ErrorCode.MALFORMED_KEY == _refusal(wire)


def test_in_reply_to_of_the_wrong_type_is_refused() -> None:
    """An error notice answers a seq (integer) or a request id (bytes), nothing else."""
    wire = _error_notice_wire()
    wire[Key.IN_REPLY_TO] = "seven"

    assert ErrorCode.WRONG_TYPE == _refusal(wire)


def _registration_wire() -> dict[int, Any]:
    token = RegistrationToken(token_id=b"i" * 8, secret=b"s" * 16, collector_fingerprint=b"f" * 32)
    return to_wire(
        RegistrationRequest(
            udi=Udi(product_id="ISR4331/K9", serial="FOC1"),
            algorithm=Algorithm.ED25519,
            public_key=DEVICE_ED25519.public.raw,
            token=str(token),
            request_id=b"r" * 16,
            issued_at=10,
        )
    )


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        pytest.param(Key.UDI, ["ISR4331/K9"], ErrorCode.WRONG_TYPE, id="udi-one-element"),
        pytest.param(Key.UDI, "ISR4331/K9:FOC1", ErrorCode.WRONG_TYPE, id="udi-as-text"),
        pytest.param(Key.UDI, ["ISR 4331", "FOC1"], ErrorCode.INVALID_VALUE, id="udi-space"),
        pytest.param(Key.TOKEN, "slt1_short", ErrorCode.MALFORMED_TOKEN, id="token-truncated"),
        pytest.param(Key.ALGORITHM, -35, ErrorCode.OUT_OF_RANGE, id="algorithm-es384"),
        pytest.param(Key.ALGORITHM, -7, ErrorCode.MALFORMED_KEY, id="es256-with-ed25519-key"),
        pytest.param(Key.PUBLIC_KEY, b"k" * 31, ErrorCode.OUT_OF_RANGE, id="public-key-31-bytes"),
        pytest.param(Key.REQUEST_ID, b"r" * 33, ErrorCode.OUT_OF_RANGE, id="request-id-33-bytes"),
    ],
)
def test_registration_request_grammar_breach_has_its_code(
    field: Key, value: object, code: ErrorCode
) -> None:
    """Each bad registration request field is refused with its own code."""
    wire = _registration_wire()
    wire[field] = value

    assert code == _refusal(wire)


def test_refusal_is_a_remote_error_even_for_constructor_checks() -> None:
    """Rules the message constructors enforce surface as RemoteProtocolError when decoding."""
    wire = _compliance_wire(Authorization)
    wire[Key.NEXT_REPORT_AT] = 1

    with pytest.raises(RemoteProtocolError):
        decode_payload(cbor_codec.encode(wire))


def test_payload_of_a_sealed_report_is_the_encoded_payload() -> None:
    """seal() signs exactly encode_payload(m): no re-encoding happens in between."""
    report = three_tag_report()

    opened = open_message(seal(report, DEVICE_ED25519))

    assert encode_payload(report) == opened.envelope.payload


@pytest.mark.parametrize(
    ("build", "key"),
    [
        pytest.param(lambda: _compliance_wire(Authorization), Key.IN_REPLY_TO, id="in-reply-to"),
        pytest.param(_error_notice_wire, Key.COLLECTOR_KEY, id="collector-key"),
    ],
)
def test_optional_field_sent_as_null_is_refused(
    build: Callable[[], dict[int, Any]], key: Key
) -> None:
    """Optional fields are left out when absent; null is a WRONG_TYPE, not a second spelling."""
    wire = build()
    wire[key] = None

    assert ErrorCode.WRONG_TYPE == _refusal(wire)
