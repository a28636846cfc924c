"""Whatever bytes arrive, the decoders answer with a message or a RemoteProtocolError, never more.

Random bytes mostly die at the first byte, so most cases here are *mutations of valid
messages* (a byte changed, inserted, deleted, a slice repeated or cut), which reach deep into
the envelope, the payload grammar and the message constructors. Every refusal must also fit
into an ErrorNotice, so a collector can always answer a bad message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_strategies import COLLECTOR_ED25519, DEVICE_ED25519, DEVICE_P256, sample_messages
from smartlic.protocol import (
    ErrorCode,
    ErrorNotice,
    LocalProtocolError,
    RemoteProtocolError,
    Topics,
    decode_payload,
    encode_payload,
    open_message,
    parse_sign1,
    parse_token,
    seal,
)

if TYPE_CHECKING:
    from collections.abc import Callable

FUZZ: Final = settings(max_examples=2000, deadline=None)
"""Thousands of cases per decoder, yet the whole file runs in a few seconds."""
FEW: Final = settings(max_examples=500, deadline=None)
"""For strategies that build deep structures, where each case costs more."""
SAMPLES: Final = sample_messages()
SEALED: Final = [
    seal(message, key)
    for message in SAMPLES
    for key in (DEVICE_ED25519, DEVICE_P256, COLLECTOR_ED25519)
]
PAYLOADS: Final = [encode_payload(message) for message in SAMPLES]


def _answerable(error: RemoteProtocolError) -> None:
    """The refusal can be sent back as an error notice (printable, at most 512 characters)."""
    ErrorNotice(
        device_id="A:1",
        notice_seq=1,
        issued_at=0,
        in_reply_to=None,
        code=error.code,
        message=error.message,
    )


def _refusal(call: Callable[[], object]) -> RemoteProtocolError | None:
    """The RemoteProtocolError ``call`` raised, or None; any other exception propagates."""
    try:
        call()
    except RemoteProtocolError as error:
        return error
    return None


def _decodes_or_refuses(decoder: Callable[[bytes], object], data: bytes) -> None:
    error = _refusal(lambda: decoder(data))
    if error is not None:
        assert isinstance(error.code, ErrorCode)
        _answerable(error)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid encoding with one to three edits: the inputs that test a parser's corners."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, max(len(data) - 1, 0)))
        edit = draw(st.sampled_from(["flip", "set", "insert", "delete", "repeat", "cut"]))
        if edit == "flip" and data:
            data[where] ^= draw(st.integers(1, 255))
        elif edit == "set" and data:
            data[where] = draw(
                st.sampled_from([0x00, 0x17, 0x18, 0x1F, 0x5F, 0x9F, 0xBF, 0xF7, 0xFB, 0xFF])
            )
        elif edit == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=4))
        elif edit == "delete":
            del data[where : where + draw(st.integers(1, 4))]
        elif edit == "repeat":
            data[where:where] = data[where : where + draw(st.integers(1, 16))]
        else:
            del data[where:]
    return bytes(data)


sealed = st.sampled_from(SEALED)
payloads = st.sampled_from(PAYLOADS)


@FUZZ
@given(st.binary(max_size=300))
def test_parse_sign1_on_random_bytes(data: bytes) -> None:
    """Random bytes: a Sign1 or a RemoteProtocolError."""
    _decodes_or_refuses(parse_sign1, data)


@FUZZ
@given(mutated(sealed))
def test_open_and_verify_on_mutated_messages(data: bytes) -> None:
    """Mutated sealed messages: opening and verifying raise nothing but RemoteProtocolError."""
    error = _refusal(lambda: open_message(data).verify(DEVICE_ED25519.public))
    if error is not None:
        _answerable(error)


@FUZZ
@given(st.binary(max_size=300) | mutated(payloads))
def test_decode_payload_on_random_and_mutated_payloads(data: bytes) -> None:
    """Payload bytes of any shape: a message or a RemoteProtocolError."""
    _decodes_or_refuses(decode_payload, data)


def _structured(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaf,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.integers(-2, 30) | st.text(max_size=3), children, max_size=6)
        ),
        max_leaves=20,
    )


wire_values = _structured(
    st.integers(-(2**64), 2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=20)
    | st.booleans()
    | st.none()
)


@FEW
@given(wire_values)
def test_decode_payload_on_well_formed_cbor_of_any_shape(value: Any) -> None:
    """Well-formed, deterministic CBOR of any shape exercises the grammar checks directly."""
    try:
        data = cbor2.dumps(value)
    except (TypeError, ValueError, cbor2.CBOREncodeError):
        return
    _decodes_or_refuses(decode_payload, data)


@st.composite
def grammar_mutants(draw: st.DrawFn) -> bytes:
    """A valid payload map with one field replaced, dropped or added: deep grammar corners."""
    from smartlic.protocol import cbor  # noqa: PLC0415 -- the deterministic encoder, only here

    wire = dict(cbor2.loads(draw(payloads)))
    key = draw(st.sampled_from(sorted(wire)) | st.integers(-1, 30))
    if draw(st.booleans()) and key in wire:
        del wire[key]
    else:
        wire[key] = draw(wire_values)
    try:
        return cbor.encode(wire)
    except (TypeError, ValueError, cbor2.CBOREncodeError):
        return b"\xa0"


@settings(max_examples=800, deadline=None)
@given(grammar_mutants())
def test_decode_payload_on_payloads_with_one_field_changed(data: bytes) -> None:
    """One field swapped for any CBOR value: a message or a RemoteProtocolError."""
    _decodes_or_refuses(decode_payload, data)


@FUZZ
@given(st.text(max_size=120) | st.builds(str.__add__, st.just("slt1_"), st.text(max_size=90)))
def test_parse_token_raises_only_malformed_token(text: str) -> None:
    """parse_token reads what an operator pasted: it fails only with MALFORMED_TOKEN.

    It raises LocalProtocolError, not Remote: a token comes from this side's operator. The one
    place a peer's token is parsed, a registration request's payload, turns it into a
    RemoteProtocolError (covered by the payload fuzzers above).
    """
    try:
        parse_token(text)
    except LocalProtocolError as error:
        code = error.code
    else:
        code = ErrorCode.MALFORMED_TOKEN
    assert ErrorCode.MALFORMED_TOKEN == code


TOPICS: Final = Topics()


@FUZZ
@given(
    st.text(max_size=120) | st.builds(lambda mid: f"smartlic/v1/d/{mid}/up", st.text(max_size=60))
)
def test_device_of_uplink_on_any_topic(topic: str) -> None:
    """Any topic name yields a device id or a MALFORMED_TOPIC RemoteProtocolError."""
    device_ids: list[str] = []
    error = _refusal(lambda: device_ids.append(TOPICS.device_of_uplink(topic)))

    if error is None:
        assert TOPICS.uplink(device_ids[0]) == topic
    else:
        assert ErrorCode.MALFORMED_TOPIC == error.code
        _answerable(error)


def test_device_of_uplink_refuses_a_topic_that_is_not_text() -> None:
    """Bytes where a topic name belongs are the peer's error, not a crash."""
    with pytest.raises(RemoteProtocolError) as caught:
        TOPICS.device_of_uplink(b"smartlic/v1/d/A:1/up")  # type: ignore[arg-type]  # the point of the test

    assert ErrorCode.MALFORMED_TOPIC == caught.value.code


def test_a_long_hostile_header_still_fits_an_error_notice() -> None:
    """A 600-character alg value is quoted in the refusal, cut to fit an error notice."""
    from smartlic.protocol import cbor  # noqa: PLC0415 -- the deterministic encoder, only here

    protected = cbor.encode({1: "\n" + "x" * 600})
    data = cbor.encode(cbor2.CBORTag(18, [protected, {}, b"", b""]))

    with pytest.raises(RemoteProtocolError) as caught:
        parse_sign1(data)

    assert ErrorCode.UNSUPPORTED_ALGORITHM == caught.value.code
    assert len(caught.value.message) <= 300
    _answerable(caught.value)
