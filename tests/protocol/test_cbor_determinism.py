"""Deterministic CBOR (RFC 8949 §4.2.1): what the encoder writes and what the decoder refuses."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smartlic.protocol import ErrorCode, RemoteProtocolError
from smartlic.protocol import cbor as cbor_module
from smartlic.protocol.cbor import MAX_DEPTH, MAX_MESSAGE_BYTES, decode, diagnose, encode

REJECTED = [
    # Each case: an id, the input in hex, and the code it must be refused with.
    ("indefinite-array", "9f01ff", ErrorCode.INDEFINITE_LENGTH),
    ("indefinite-map", "bf0001ff", ErrorCode.INDEFINITE_LENGTH),
    ("indefinite-bytes", "5f4100ff", ErrorCode.INDEFINITE_LENGTH),
    ("indefinite-text", "7f6161ff", ErrorCode.INDEFINITE_LENGTH),
    ("non-minimal-uint-1-byte", "1805", ErrorCode.NOT_DETERMINISTIC),
    ("non-minimal-uint-2-bytes", "1900ff", ErrorCode.NOT_DETERMINISTIC),
    ("non-minimal-uint-4-bytes", "1a0000ffff", ErrorCode.NOT_DETERMINISTIC),
    ("non-minimal-uint-8-bytes", "1b00000000ffffffff", ErrorCode.NOT_DETERMINISTIC),
    ("non-minimal-negative-int", "3800", ErrorCode.NOT_DETERMINISTIC),
    ("non-minimal-bytes-length", "580100", ErrorCode.NOT_DETERMINISTIC),
    ("non-minimal-array-length", "980100", ErrorCode.NOT_DETERMINISTIC),
    ("non-minimal-map-length", "b8010000", ErrorCode.NOT_DETERMINISTIC),
    ("unsorted-keys", "a202000100", ErrorCode.NOT_DETERMINISTIC),
    # RFC 7049 §3.9 "canonical" puts -1 (one byte) before 24 (two bytes); §4.2.1 does not.
    ("length-first-key-order", "a22000181800", ErrorCode.NOT_DETERMINISTIC),
    ("unsorted-text-keys", "a2616200616100", ErrorCode.NOT_DETERMINISTIC),
    ("duplicate-keys", "a201000100", ErrorCode.DUPLICATE_KEY),
    ("duplicate-text-keys", "a2616100616100", ErrorCode.DUPLICATE_KEY),
    ("trailing-bytes", "0100", ErrorCode.MALFORMED_CBOR),
    ("truncated-array", "8201", ErrorCode.MALFORMED_CBOR),
    ("truncated-bytes", "4401", ErrorCode.MALFORMED_CBOR),
    ("lone-break", "ff", ErrorCode.MALFORMED_CBOR),
    ("reserved-additional-info", "1c", ErrorCode.MALFORMED_CBOR),
    ("invalid-utf8", "62c328", ErrorCode.MALFORMED_CBOR),
    ("half-float", "f93c00", ErrorCode.UNSUPPORTED_CBOR),
    ("single-float", "fa3fc00000", ErrorCode.UNSUPPORTED_CBOR),
    ("double-float", "fb3ff8000000000000", ErrorCode.UNSUPPORTED_CBOR),
    ("double-float-in-map", "a101fb3ff8000000000000", ErrorCode.UNSUPPORTED_CBOR),
    ("nested-tag", "81c11a5f5e1000", ErrorCode.UNSUPPORTED_CBOR),
    ("nested-cose-tag", "81d2a0", ErrorCode.UNSUPPORTED_CBOR),
    ("bignum", "c249010000000000000000", ErrorCode.UNSUPPORTED_CBOR),
    ("negative-bignum", "c349010000000000000000", ErrorCode.UNSUPPORTED_CBOR),
    ("small-bignum", "c24101", ErrorCode.UNSUPPORTED_CBOR),
    ("small-negative-bignum", "c34101", ErrorCode.UNSUPPORTED_CBOR),
    ("nested-bignum", "81c24101", ErrorCode.UNSUPPORTED_CBOR),
    ("uuid-tag", "81d82550" + "00" * 16, ErrorCode.UNSUPPORTED_CBOR),
    ("date-tag", "81d8641901f4", ErrorCode.UNSUPPORTED_CBOR),
    ("nested-bad-date-tag", "81c06261" + "62", ErrorCode.UNSUPPORTED_CBOR),
    ("one-and-true-keys", "a20100f500", ErrorCode.UNSUPPORTED_CBOR),
    ("zero-and-false-keys", "a20000f400", ErrorCode.UNSUPPORTED_CBOR),
    ("one-and-true-in-keys", "a281010081f500", ErrorCode.UNSUPPORTED_CBOR),
    ("undefined", "f7", ErrorCode.UNSUPPORTED_CBOR),
    ("simple-16", "f0", ErrorCode.UNSUPPORTED_CBOR),
    ("simple-32", "f820", ErrorCode.UNSUPPORTED_CBOR),
    # RFC 8949 §3.3: 0xf8 then a byte below 0x20 is not well-formed (false has one form, f4).
    ("two-byte-simple-20", "f814", ErrorCode.MALFORMED_CBOR),
    ("two-byte-simple-0", "f800", ErrorCode.MALFORMED_CBOR),
    ("two-byte-simple-in-array", "81f814", ErrorCode.MALFORMED_CBOR),
    ("two-byte-simple-as-map-value", "a101f814", ErrorCode.MALFORMED_CBOR),
    ("two-byte-simple-as-map-key", "a1f81401", ErrorCode.MALFORMED_CBOR),
    ("two-byte-simple-under-a-tag", "d2f814", ErrorCode.MALFORMED_CBOR),
    ("two-byte-simple-24", "f818", ErrorCode.MALFORMED_CBOR),  # cbor2 writes it back alike
    ("two-byte-simple-31-in-array", "81f81f", ErrorCode.MALFORMED_CBOR),
    ("too-deep-arrays", "81" * (MAX_DEPTH + 1) + "00", ErrorCode.TOO_DEEP),
    ("too-deep-maps", "a100" * MAX_DEPTH + "a10000", ErrorCode.TOO_DEEP),
    ("too-deep-under-a-tag", "d2" + "81" * MAX_DEPTH + "00", ErrorCode.TOO_DEEP),
    ("too-deep-to-an-empty-array", "81" * MAX_DEPTH + "80", ErrorCode.TOO_DEEP),
    ("too-deep-to-an-empty-map", "a100" * MAX_DEPTH + "a0", ErrorCode.TOO_DEEP),
    ("too-deep-tag-to-an-empty-array", "d2" + "81" * (MAX_DEPTH - 1) + "80", ErrorCode.TOO_DEEP),
]


@pytest.mark.parametrize(("data", "code"), [pytest.param(h, c, id=i) for i, h, c in REJECTED])
def test_decoder_refuses_with_a_specific_code(data: str, code: ErrorCode) -> None:
    """Each breach of RFC 8949 §4.2.1 or of smartlic's data model has its own error code."""
    with pytest.raises(RemoteProtocolError) as caught:
        decode(bytes.fromhex(data))

    assert code == caught.value.code


# What the byte walker lets through and the decoder refuses on the value: a bignum on the
# outermost item (an integer, not a tag for the caller) and map keys equal in Python.
_REFUSED_ON_THE_VALUE = {
    "bignum",
    "negative-bignum",
    "small-bignum",
    "small-negative-bignum",
    "one-and-true-keys",
    "zero-and-false-keys",
    "one-and-true-in-keys",
}


@pytest.mark.parametrize(
    ("data", "code"),
    [pytest.param(h, c, id=i) for i, h, c in REJECTED if i not in _REFUSED_ON_THE_VALUE],
)
def test_walker_names_the_same_rule_as_the_decoder(data: str, code: ErrorCode) -> None:
    """The slow byte walker, asked directly, agrees with the decoder's verdict."""
    with pytest.raises(RemoteProtocolError) as caught:
        diagnose(bytes.fromhex(data))

    assert code == caught.value.code


@pytest.mark.parametrize(
    ("data", "tag", "content"),
    [
        ("c06261" + "62", 0, "ab"),  # not a date cbor2 can read: still well-formed CBOR
        ("c100", 1, 0),
        ("d9d9f700", 55799, 0),  # self-described CBOR (RFC 8949 §3.4.6)
        ("d82550" + "00" * 16, 37, b"\x00" * 16),
        ("d81c00", 28, 0),
    ],
)
def test_the_outermost_tag_is_handed_to_the_caller_uninterpreted(
    data: str, tag: int, content: object
) -> None:
    """Which tag the outermost item may carry is the caller's call (COSE_Sign1's 18): tags
    cbor2 knows were once interpreted, and refused as malformed or not deterministic."""
    assert cbor2.CBORTag(tag, content) == decode(bytes.fromhex(data))


def test_a_lone_tag_head_is_truncated() -> None:
    with pytest.raises(RemoteProtocolError, match="truncated") as caught:
        decode(bytes.fromhex("d2"))

    assert ErrorCode.MALFORMED_CBOR == caught.value.code


def test_nesting_up_to_the_limit_is_accepted() -> None:
    """MAX_DEPTH nested containers decode; the limit is inclusive (and a tag is a level)."""
    assert [[[[[[0]]]]]] == decode(bytes.fromhex("81" * MAX_DEPTH + "00"))
    assert cbor2.CBORTag(18, [[[[[0]]]]]) == decode(bytes.fromhex("d2" + "81" * 5 + "00"))


def test_oversize_input_is_refused_before_decoding() -> None:
    """A message above 4 KiB is refused as OVERSIZE, whatever it contains."""
    exactly = encode(b"\x00" * (MAX_MESSAGE_BYTES - 3))
    assert MAX_MESSAGE_BYTES == len(exactly)
    assert b"\x00" * (MAX_MESSAGE_BYTES - 3) == decode(exactly)

    with pytest.raises(RemoteProtocolError) as caught:
        decode(encode(b"\x00" * (MAX_MESSAGE_BYTES - 2)))

    assert ErrorCode.OVERSIZE == caught.value.code


def test_empty_input_is_malformed() -> None:
    """Zero bytes are not a CBOR item."""
    with pytest.raises(RemoteProtocolError) as caught:
        decode(b"")

    assert ErrorCode.MALFORMED_CBOR == caught.value.code


def test_non_bytes_input_is_a_wrong_type() -> None:
    """Text handed to the decoder is refused, not encoded or crashed on."""
    with pytest.raises(RemoteProtocolError) as caught:
        decode("a0")  # type: ignore[arg-type]  # the point of the test

    assert ErrorCode.WRONG_TYPE == caught.value.code


def test_encoder_orders_keys_bytewise_not_length_first() -> None:
    """RFC 8949 §4.2.1 orders keys by their encoded bytes: 24 (0x1818) before -1 (0x20)."""
    assert bytes.fromhex("a2181800200a") == encode({-1: 10, 24: 0})


def test_encoder_orders_nested_map_keys_too() -> None:
    """Maps inside arrays and maps are ordered as well."""
    assert bytes.fromhex("81a2616100616201") == encode([{"b": 1, "a": 0}])


def test_decoder_accepts_true_false_null() -> None:
    """The three simple values smartlic's grammar may use are plain CBOR."""
    assert [True, False, None] == decode(bytes.fromhex("83f5f4f6"))


plain_values = st.recursive(
    st.integers(-(2**64), 2**64 - 1)
    | st.binary(max_size=20)
    | st.text(max_size=20)
    | st.booleans()
    | st.none(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.integers(-1000, 1000) | st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


@settings(max_examples=300)
@given(plain_values)
def test_encoded_values_decode_back(value: Any) -> None:
    """Anything in smartlic's data model survives encode → decode unchanged."""
    if _depth(value) > MAX_DEPTH:
        return
    assert value == decode(encode(value))


@settings(max_examples=300)
@given(plain_values)
def test_encoder_output_passes_the_byte_walker(value: Any) -> None:
    """The encoder writes what the strict walker accepts: it is deterministic by construction."""
    if _depth(value) > MAX_DEPTH:
        return
    diagnose(encode(value))


@settings(max_examples=1500)
@given(st.binary(max_size=64) | plain_values.map(encode))
def test_what_the_decoder_accepts_the_walker_accepts(data: bytes) -> None:
    """The fast path (cbor2 + re-encode + type check) is never laxer than the byte walker."""
    try:
        decode(data)
    except RemoteProtocolError:
        return
    diagnose(data)


def test_key_order_cache_keeps_true_and_1_apart() -> None:
    """The encoder caches each key's encoding for sorting; true (0xf5) is not 1 (0x01)."""
    assert bytes.fromhex("a10161") + b"a" == encode({1: "a"})

    assert bytes.fromhex("a20200f500") == encode({True: 0, 2: 0})


def test_a_map_with_unsorted_array_keys_is_refused_whatever_was_decoded_before() -> None:
    """``(True,)`` and ``(1,)`` are equal in Python: a cache of key encodings shared by the two
    once judged ``{[true]: 0, [2]: 0}`` sorted after ``{[1]: 0}`` had been decoded."""
    decode(bytes.fromhex("a1810100"))

    with pytest.raises(RemoteProtocolError) as caught:
        decode(bytes.fromhex("a281f5008102" + "00"))

    assert ErrorCode.NOT_DETERMINISTIC == caught.value.code


@settings(max_examples=300)
@given(st.lists(plain_values, min_size=1, max_size=5))
def test_reused_encoders_write_what_a_fresh_one_writes(values: list[Any]) -> None:
    """Encoders are kept between calls; one message's bytes never leak into the next."""
    assert [cbor2.dumps(cbor_module._ordered(v)) for v in values] == [encode(v) for v in values]


def test_an_encoder_that_failed_is_not_reused() -> None:
    """A value cbor2 cannot encode leaves no half-written bytes behind for the next message."""
    with pytest.raises(cbor2.CBOREncodeError):
        encode([1, 2, object()])

    assert bytes.fromhex("820102") == encode([1, 2])
