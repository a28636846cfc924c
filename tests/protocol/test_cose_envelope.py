"""COSE_Sign1 signing and verification, the strict profile, and the device binding (AAD)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_strategies import (
    COLLECTOR_ED25519,
    COLLECTOR_P256,
    DEVICE_ED25519,
    DEVICE_P256,
    messages,
    three_tag_report,
)
from smartlic.protocol import (
    Algorithm,
    ErrorCode,
    ErrorNotice,
    RegistrationRequest,
    RegistrationResult,
    RegistrationToken,
    RemoteProtocolError,
    SigningKey,
    Udi,
    device_aad,
    encode_payload,
    open_message,
    parse_sign1,
    seal,
    sign1,
)
from smartlic.protocol import cbor as cbor_codec
from smartlic.protocol.cose import sig_structure

from sample_notices import an_authorization

if TYPE_CHECKING:
    from collections.abc import Callable

    from smartlic.protocol import Message

KEYS = [pytest.param(DEVICE_ED25519, id="ed25519"), pytest.param(DEVICE_P256, id="es256")]


def _envelope(
    protected: dict[Any, Any] | bytes,
    unprotected: dict[Any, Any] | None = None,
    payload: bytes | None = b"payload",
    signature: bytes = b"\x00" * 64,
    *,
    tag: int | None = 18,
) -> bytes:
    body = protected if isinstance(protected, bytes) else cbor_codec.encode(protected)
    item: Any = [body, unprotected or {}, payload, signature]
    return cbor_codec.encode(cbor2.CBORTag(tag, item) if tag is not None else item)


def _signed(
    key: SigningKey,
    protected: dict[Any, Any],
    payload: bytes = b"payload",
    *,
    unprotected: dict[Any, Any] | None = None,
    external_aad: bytes = b"",
) -> bytes:
    """A correctly signed Sign1, so that only its headers are at stake; ``unprotected``
    defaults to ``{4: kid}``."""
    body = cbor_codec.encode(protected)
    signature = key.sign(sig_structure(body, payload, external_aad))
    bucket = {4: key.public.kid} if unprotected is None else unprotected
    return cbor_codec.encode(cbor2.CBORTag(18, [body, bucket, payload, signature]))


def _receive(data: bytes, key: SigningKey | None, aad: bytes) -> None:
    envelope = parse_sign1(data)
    if key is not None:
        envelope.verify(key.public, external_aad=aad)


def _refusal(data: bytes, key: SigningKey | None = None, aad: bytes = b"") -> ErrorCode:
    with pytest.raises(RemoteProtocolError) as caught:
        _receive(data, key, aad)
    return caught.value.code


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [(DEVICE_ED25519, Algorithm.ED25519), (DEVICE_P256, Algorithm.ES256)],
    ids=["ed25519", "es256"],
)
def test_sign1_emits_tagged_message_with_protected_alg_and_kid(
    key: SigningKey, algorithm: Algorithm
) -> None:
    """Ed25519 is emitted as -19 (RFC 9864), P-256 as ES256 -7; kid names the key."""
    data = sign1(b"hello", key)
    envelope = parse_sign1(data)

    assert 0xD2 == data[0]
    assert {1: int(algorithm)} == dict(envelope.protected_header)
    assert {4: key.public.kid} == dict(envelope.unprotected_header)
    assert algorithm == envelope.algorithm
    envelope.verify(key.public)


@pytest.mark.parametrize("key", KEYS)
def test_signature_is_bound_to_the_external_aad(key: SigningKey) -> None:
    """A signature made for one device's AAD does not verify for another's."""
    data = sign1(b"hello", key, external_aad=device_aad("A:1"))
    envelope = parse_sign1(data)

    envelope.verify(key.public, external_aad=device_aad("A:1"))
    with pytest.raises(RemoteProtocolError) as caught:
        envelope.verify(key.public, external_aad=device_aad("A:2"))
    assert ErrorCode.BAD_SIGNATURE == caught.value.code


def test_wrong_key_of_the_same_type_is_a_bad_signature() -> None:
    """Another Ed25519 key does not verify the message."""
    data = sign1(b"hello", DEVICE_ED25519)

    assert ErrorCode.BAD_SIGNATURE == _refusal(data, COLLECTOR_ED25519)


def test_key_of_the_other_type_is_a_key_mismatch() -> None:
    """A P-256 key cannot check an Ed25519 signature: KEY_MISMATCH, before any crypto."""
    data = sign1(b"hello", DEVICE_ED25519)

    assert ErrorCode.KEY_MISMATCH == _refusal(data, DEVICE_P256)


def test_polymorphic_eddsa_alg_is_accepted_for_ed25519() -> None:
    """alg -8 (EdDSA, RFC 9053 §2.2) verifies with an Ed25519 key, as older peers send it."""
    envelope = parse_sign1(_signed(DEVICE_ED25519, {1: -8}))

    envelope.verify(DEVICE_ED25519.public)
    assert Algorithm.EDDSA == envelope.algorithm


def test_untagged_sign1_is_accepted() -> None:
    """RFC 9052 §2: the type may be known from context; the tag is optional on input."""
    body = cbor_codec.encode({1: -19})
    signature = DEVICE_ED25519.sign(sig_structure(body, b"p"))

    parse_sign1(_envelope(body, {}, b"p", signature, tag=None)).verify(DEVICE_ED25519.public)


def test_es256_signature_of_wrong_length_is_bad() -> None:
    """An ES256 signature is r || s, 64 bytes (RFC 9053 §2.1); DER or short is refused."""
    envelope = _envelope({1: -7}, signature=b"\x30" * 70)

    assert ErrorCode.BAD_SIGNATURE == _refusal(envelope, DEVICE_P256)


def test_es256_signature_of_zeros_is_bad() -> None:
    """r = s = 0 is no signature; cryptography refuses it, and so do we."""
    assert ErrorCode.BAD_SIGNATURE == _refusal(_envelope({1: -7}), DEVICE_P256)


def test_ed25519_signature_of_wrong_length_is_bad() -> None:
    """A truncated Ed25519 signature is a BAD_SIGNATURE, not a crash."""
    assert ErrorCode.BAD_SIGNATURE == _refusal(
        _envelope({1: -19}, signature=b"\x00" * 63), DEVICE_ED25519
    )


PROFILE_REFUSALS = [
    ("alg-only-unprotected", lambda: _envelope(b"", {1: -7}), ErrorCode.ALG_NOT_PROTECTED),
    ("alg-in-both-buckets", lambda: _envelope({1: -7}, {1: -7}), ErrorCode.BAD_HEADER),
    ("no-alg", lambda: _envelope({}, {4: b"k"}), ErrorCode.BAD_HEADER),
    ("empty-protected-no-alg", lambda: _envelope(b""), ErrorCode.BAD_HEADER),
    ("alg-es384", lambda: _envelope({1: -35}), ErrorCode.UNSUPPORTED_ALGORITHM),
    ("alg-as-text", lambda: _envelope({1: "ES256"}), ErrorCode.UNSUPPORTED_ALGORITHM),
    ("alg-as-bool", lambda: _envelope({1: True}), ErrorCode.UNSUPPORTED_ALGORITHM),
    (
        "crit-unknown-label",
        lambda: _envelope({1: -7, 2: [99], 99: 0}),
        ErrorCode.UNKNOWN_CRITICAL_HEADER,
    ),
    (
        "crit-text-label",
        lambda: _envelope({1: -7, 2: ["x"], "x": 0}),
        ErrorCode.UNKNOWN_CRITICAL_HEADER,
    ),
    # ``true == 1`` in Python; in CBOR it is no label at all.
    ("crit-true", lambda: _envelope({1: -7, 2: [True]}), ErrorCode.UNKNOWN_CRITICAL_HEADER),
    ("crit-unprotected", lambda: _envelope({1: -7}, {2: [1]}), ErrorCode.BAD_HEADER),
    ("crit-empty", lambda: _envelope({1: -7, 2: []}), ErrorCode.BAD_HEADER),
    ("crit-not-array", lambda: _envelope({1: -7, 2: 1}), ErrorCode.BAD_HEADER),
    ("kid-as-text", lambda: _envelope({1: -7}, {4: "kid"}), ErrorCode.BAD_HEADER),
    ("label-as-bytes", lambda: _envelope({1: -7}, {b"l": 1}), ErrorCode.BAD_HEADER),
    ("label-as-bool", lambda: _envelope({1: -7}, {False: 1}), ErrorCode.BAD_HEADER),
    ("detached-payload", lambda: _envelope({1: -7}, payload=None), ErrorCode.DETACHED_PAYLOAD),
    (
        "payload-as-text",
        lambda: cbor_codec.encode(cbor2.CBORTag(18, [b"", {}, "p", b""])),
        ErrorCode.NOT_COSE_SIGN1,
    ),
    (
        "signature-as-text",
        lambda: cbor_codec.encode(cbor2.CBORTag(18, [b"", {}, b"", "s"])),
        ErrorCode.NOT_COSE_SIGN1,
    ),
    (
        "protected-as-map",
        lambda: cbor_codec.encode(cbor2.CBORTag(18, [{}, {}, b"", b""])),
        ErrorCode.BAD_HEADER,
    ),
    (
        "unprotected-as-array",
        lambda: cbor_codec.encode(cbor2.CBORTag(18, [b"", [], b"", b""])),
        ErrorCode.BAD_HEADER,
    ),
    ("protected-not-a-map", lambda: _envelope(cbor_codec.encode([1, -7])), ErrorCode.BAD_HEADER),
    (
        "protected-truncated",
        lambda: _envelope(bytes.fromhex("a201260442")),
        ErrorCode.MALFORMED_CBOR,
    ),
    (
        "protected-unsorted",
        lambda: _envelope(bytes.fromhex("a20441000126")),
        ErrorCode.NOT_DETERMINISTIC,
    ),
    (
        "three-items",
        lambda: cbor_codec.encode(cbor2.CBORTag(18, [b"", {}, b""])),
        ErrorCode.NOT_COSE_SIGN1,
    ),
    ("cose-sign-tag-98", lambda: _envelope({1: -7}, tag=98), ErrorCode.NOT_COSE_SIGN1),
    ("cose-mac0-tag-17", lambda: _envelope({1: -7}, tag=17), ErrorCode.NOT_COSE_SIGN1),
    ("a-map", lambda: cbor_codec.encode({1: 2}), ErrorCode.NOT_COSE_SIGN1),
]


@pytest.mark.parametrize(
    ("build", "code"), [pytest.param(b, c, id=i) for i, b, c in PROFILE_REFUSALS]
)
def test_profile_refuses_with_a_specific_code(build: Any, code: ErrorCode) -> None:
    """Each rule of the strict COSE profile (cose.py's docstring) has its own refusal."""
    assert code == _refusal(build())


def test_crit_naming_an_understood_label_is_accepted() -> None:
    """crit may list labels we process (RFC 9052 §3.1), e.g. kid."""
    data = _signed(DEVICE_ED25519, {1: -19, 2: [1]})

    parse_sign1(data).verify(DEVICE_ED25519.public)


@pytest.mark.parametrize(
    ("protected", "unprotected"),
    [
        pytest.param({1: -19, 2: [4]}, {4: DEVICE_ED25519.public.kid}, id="kid-unprotected"),
        pytest.param({1: -19, 2: [3]}, {}, id="content-type-nowhere"),
        pytest.param({1: -19, 2: [3]}, {3: 0}, id="content-type-unprotected"),
    ],
)
def test_crit_naming_a_label_not_in_the_protected_bucket_is_refused(
    protected: dict[Any, Any], unprotected: dict[Any, Any]
) -> None:
    """RFC 9052 §3.1: a crit label whose parameter is not protected is a fatal error."""
    data = _signed(DEVICE_ED25519, protected, unprotected=unprotected)

    assert ErrorCode.BAD_HEADER == _refusal(data, DEVICE_ED25519)


def test_crit_naming_a_protected_kid_is_accepted() -> None:
    """crit [4] with the kid in the protected bucket is what RFC 9052 §3.1 asks for."""
    kid = DEVICE_ED25519.public.kid
    envelope = parse_sign1(_signed(DEVICE_ED25519, {1: -19, 2: [4], 4: kid}, unprotected={}))

    envelope.verify(DEVICE_ED25519.public)
    assert kid == envelope.kid


def test_crit_null_is_refused_not_read_as_absent() -> None:
    """crit is present when label 2 is, whatever its value; null is not a non-empty array."""
    data = _signed(DEVICE_ED25519, {1: -19, 2: None})

    assert ErrorCode.BAD_HEADER == _refusal(data, DEVICE_ED25519)


@pytest.mark.parametrize(
    ("protected", "unprotected"),
    [
        pytest.param({1: -19, 4: None}, {}, id="protected"),
        pytest.param({1: -19}, {4: None}, id="unprotected"),
    ],
)
def test_null_kid_is_refused_not_read_as_no_kid(
    protected: dict[Any, Any], unprotected: dict[Any, Any]
) -> None:
    """RFC 9052 §3.1: kid is a bstr; label 4 with null is a bad header, not a missing one."""
    data = _signed(DEVICE_ED25519, protected, unprotected=unprotected)

    assert ErrorCode.BAD_HEADER == _refusal(data, DEVICE_ED25519)


def test_open_message_refuses_a_null_kid() -> None:
    """A null kid never reaches Opened.verify, which would skip the kid check for it."""
    report = three_tag_report()
    aad = device_aad(report.device_id)
    data = _signed(
        DEVICE_ED25519,
        {1: -19},
        encode_payload(report),
        unprotected={4: None},
        external_aad=aad,
    )

    with pytest.raises(RemoteProtocolError) as caught:
        open_message(data).verify(DEVICE_ED25519.public)
    assert ErrorCode.BAD_HEADER == caught.value.code


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param([1, 2], id="array"),
        pytest.param(b"application/cbor", id="bytes"),
        pytest.param(None, id="null"),
        pytest.param(True, id="true"),
        pytest.param(-1, id="negative"),
        pytest.param(0x10000, id="above-16-bits"),
    ],
)
@pytest.mark.parametrize("bucket", ["protected", "unprotected", "protected-and-crit"])
def test_content_type_that_is_not_text_or_a_16_bit_uint_is_refused(
    content_type: object, bucket: str
) -> None:
    """RFC 9052 §3.1: content type is tstr / uint (a CoAP Content-Format, 0..65535)."""
    protected: dict[Any, Any] = {1: -19}
    unprotected: dict[Any, Any] = {}
    if bucket == "unprotected":
        unprotected[3] = content_type
    else:
        protected[3] = content_type
    if bucket == "protected-and-crit":
        protected[2] = [3]
    data = _signed(DEVICE_ED25519, protected, unprotected=unprotected)

    assert ErrorCode.BAD_HEADER == _refusal(data, DEVICE_ED25519)


@pytest.mark.parametrize(
    ("protected", "unprotected"),
    [
        pytest.param({1: -19, 2: [3], 3: "application/cbor"}, {}, id="text-protected-crit"),
        pytest.param({1: -19, 3: 0xFFFF}, {}, id="largest-uint-protected"),
        pytest.param({1: -19}, {3: 60}, id="uint-unprotected"),
    ],
)
def test_content_type_as_text_or_a_16_bit_uint_is_accepted(
    protected: dict[Any, Any], unprotected: dict[Any, Any]
) -> None:
    """Both forms RFC 9052 §3.1 allows verify, in either bucket."""
    parse_sign1(_signed(DEVICE_ED25519, protected, unprotected=unprotected)).verify(
        DEVICE_ED25519.public
    )


def test_verification_covers_the_protected_bytes_as_received() -> None:
    """The signature is checked over the received protected bytes, never a re-encoding:
    a header with an extra (understood) label signed as such verifies."""
    data = _signed(DEVICE_ED25519, {1: -19, 3: 0})
    envelope = parse_sign1(data)

    envelope.verify(DEVICE_ED25519.public)
    assert cbor_codec.encode({1: -19, 3: 0}) == envelope.protected


def _components(data: bytes) -> list[Any]:
    value = cbor2.loads(data)
    assert isinstance(value, cbor2.CBORTag)
    items: list[Any] = value.value
    return items


def _reassemble(items: list[Any]) -> bytes:
    return cbor_codec.encode(cbor2.CBORTag(18, items))


def _must_not_verify(data: bytes, key: SigningKey) -> None:
    """Opening and verifying ``data`` must fail, and only with RemoteProtocolError."""
    with pytest.raises(RemoteProtocolError):
        open_message(data).verify(key.public)


@pytest.mark.parametrize("key", KEYS)
@settings(max_examples=150)
@given(data=st.data())
def test_changing_any_byte_of_a_component_fails_verification(
    key: SigningKey, data: st.DataObject
) -> None:
    """Change one byte of the protected header, the payload or the signature: never valid."""
    items = _components(seal(three_tag_report(), key))
    part = data.draw(st.sampled_from([0, 2, 3]), label="component")
    original: bytes = items[part]
    index = data.draw(st.integers(0, len(original) - 1), label="byte")
    flip = data.draw(st.integers(1, 255), label="xor")
    items[part] = original[:index] + bytes([original[index] ^ flip]) + original[index + 1 :]

    _must_not_verify(_reassemble(items), key)


def _unprotected_span(data: bytes) -> range:
    """Where the unprotected bucket sits in a sealed message (tag, array head, protected)."""
    protected, unprotected, _, _ = _components(data)
    start = 2 + len(cbor_codec.encode(protected))
    return range(start, start + len(cbor_codec.encode(unprotected)))


@pytest.mark.parametrize("key", KEYS)
@settings(max_examples=150)
@given(data=st.data())
def test_changing_any_signed_byte_of_the_wire_fails(key: SigningKey, data: st.DataObject) -> None:
    """No single-byte change outside the unprotected bucket (tag, array and string heads,
    protected header, payload, signature) is accepted."""
    wire = bytearray(seal(three_tag_report(), key))
    unprotected = _unprotected_span(bytes(wire))
    index = data.draw(
        st.integers(0, len(wire) - 1).filter(lambda i: i not in unprotected), label="byte"
    )
    wire[index] ^= data.draw(st.integers(1, 255), label="xor")

    _must_not_verify(bytes(wire), key)


def test_unprotected_bucket_is_not_signed() -> None:
    """RFC 9052 §3: the unprotected bucket is outside the signature. Turning the kid label (4)
    into an unknown label (5) still verifies, which is why nothing smartlic trusts lives there:
    kid only names the expected signer, and the key is looked up by the signed device id."""
    wire = bytearray(seal(three_tag_report(), DEVICE_ED25519))
    kid_label = _unprotected_span(bytes(wire)).start + 1
    assert 0x04 == wire[kid_label]
    wire[kid_label] = 0x05

    opened = open_message(bytes(wire))
    opened.verify(DEVICE_ED25519.public)

    assert opened.envelope.kid is None


def test_kid_naming_another_key_is_refused_before_crypto() -> None:
    """Opened.verify checks the kid names the expected signer."""
    opened = open_message(seal(three_tag_report(), DEVICE_ED25519))

    with pytest.raises(RemoteProtocolError) as caught:
        opened.verify(COLLECTOR_ED25519.public)

    assert ErrorCode.BAD_SIGNATURE == caught.value.code


def test_message_sealed_for_one_device_does_not_verify_as_another() -> None:
    """The device id is signed in as AAD: re-labelling the payload for another device fails."""
    report = three_tag_report()
    envelope = parse_sign1(seal(report, DEVICE_ED25519))

    envelope.verify(DEVICE_ED25519.public, external_aad=device_aad(report.device_id))
    with pytest.raises(RemoteProtocolError):
        envelope.verify(DEVICE_ED25519.public, external_aad=device_aad("C9300~24T:OTHER"))


def _token(collector: SigningKey) -> RegistrationToken:
    return RegistrationToken(
        token_id=b"t" * 8, secret=b"s" * 16, collector_fingerprint=collector.public.fingerprint
    )


def _registration_result(collector: SigningKey) -> RegistrationResult:
    return RegistrationResult(
        device_id="ISR4331~K9:FOC1",
        request_id=b"r" * 16,
        notice_seq=1,
        issued_at=10,
        smart_account="Acme",
        virtual_account="default",
        report_interval=86400,
        collector_key=collector.public,
    )


@pytest.mark.parametrize("collector", [COLLECTOR_ED25519, COLLECTOR_P256], ids=["ed25519", "es256"])
def test_first_reply_verifies_against_the_token_fingerprint(collector: SigningKey) -> None:
    """A new device pins the collector key its token's fingerprint names."""
    opened = open_message(seal(_registration_result(collector), collector))

    assert collector.public == opened.verify_first_reply(_token(collector).collector_fingerprint)


def test_first_reply_with_another_collector_key_is_refused() -> None:
    """A reply carrying a key that does not hash to the token's fingerprint is refused."""
    opened = open_message(seal(_registration_result(COLLECTOR_P256), COLLECTOR_P256))

    with pytest.raises(RemoteProtocolError) as caught:
        opened.verify_first_reply(_token(COLLECTOR_ED25519).collector_fingerprint)

    assert ErrorCode.BAD_SIGNATURE == caught.value.code


def test_first_reply_signed_by_another_key_is_refused() -> None:
    """The right collector key in the payload, but signed by someone else: refused."""
    opened = open_message(seal(_registration_result(COLLECTOR_ED25519), DEVICE_ED25519))

    with pytest.raises(RemoteProtocolError):
        opened.verify_first_reply(_token(COLLECTOR_ED25519).collector_fingerprint)


def test_first_reply_without_a_collector_key_is_refused() -> None:
    """An authorization carries no key, so it cannot be a first reply."""
    notice = an_authorization("A:1")
    opened = open_message(seal(notice, COLLECTOR_ED25519))

    with pytest.raises(RemoteProtocolError) as caught:
        opened.verify_first_reply(_token(COLLECTOR_ED25519).collector_fingerprint)

    assert ErrorCode.BAD_SIGNATURE == caught.value.code


def test_registration_refusal_carries_a_verifiable_collector_key() -> None:
    """An error notice refusing a registration can be verified by a device with only a token."""
    notice = ErrorNotice(
        device_id="A:1",
        notice_seq=1,
        issued_at=1,
        in_reply_to=b"r" * 16,
        code=ErrorCode.TOKEN_EXPIRED,
        message="the registration token expired",
        collector_key=COLLECTOR_ED25519.public,
    )
    opened = open_message(seal(notice, COLLECTOR_ED25519))

    assert COLLECTOR_ED25519.public == opened.verify_first_reply(
        COLLECTOR_ED25519.public.fingerprint
    )


def _registration(key: SigningKey, algorithm: Algorithm) -> RegistrationRequest:
    return RegistrationRequest(
        udi=Udi(product_id="ISR4331/K9", serial="FOC1"),
        algorithm=algorithm,
        public_key=key.public.raw,
        token=str(_token(COLLECTOR_ED25519)),
        request_id=b"r" * 16,
        issued_at=10,
    )


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [
        (DEVICE_ED25519, Algorithm.ED25519),
        (DEVICE_ED25519, Algorithm.EDDSA),
        (DEVICE_P256, Algorithm.ES256),
    ],
    ids=["ed25519", "eddsa", "es256"],
)
def test_proof_of_possession_holds_when_the_new_key_signed(
    key: SigningKey, algorithm: Algorithm
) -> None:
    """A registration request signed by the key it registers passes."""
    open_message(seal(_registration(key, algorithm), key)).verify_proof_of_possession()


def test_proof_of_possession_fails_when_another_key_signed() -> None:
    """Someone registering a key they do not hold is refused with PROOF_OF_POSSESSION."""
    opened = open_message(seal(_registration(DEVICE_ED25519, Algorithm.ED25519), COLLECTOR_ED25519))

    with pytest.raises(RemoteProtocolError) as caught:
        opened.verify_proof_of_possession()

    assert ErrorCode.PROOF_OF_POSSESSION == caught.value.code


def test_proof_of_possession_only_applies_to_registrations() -> None:
    """Other messages do not carry their signer's key."""
    opened = open_message(seal(three_tag_report(), DEVICE_ED25519))

    with pytest.raises(RemoteProtocolError) as caught:
        opened.verify_proof_of_possession()

    assert ErrorCode.UNKNOWN_MESSAGE_TYPE == caught.value.code


@settings(max_examples=100)
@given(
    message=messages,
    key=st.sampled_from([DEVICE_ED25519, DEVICE_P256, COLLECTOR_ED25519, COLLECTOR_P256]),
)
def test_a_sign1_as_smartlic_writes_it_reads_as_the_general_path_reads_it(
    message: Message, key: SigningKey
) -> None:
    """parse_sign1 reads its own messages by rebuilding their bytes; the result is the one the
    general path gives (here, for the same message untagged, which only that path reads)."""
    data = seal(message, key)

    assert parse_sign1(data[1:]) == parse_sign1(data)


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(lambda d: d[:-1], id="truncated"),
        pytest.param(lambda d: d + b"\x00", id="trailing-byte"),
        pytest.param(lambda d: d[:2] + b"\x58\x03" + d[3:], id="protected-length-not-minimal"),
    ],
)
def test_a_sign1_close_to_the_written_form_gets_the_general_verdict(
    variant: Callable[[bytes], bytes],
) -> None:
    """Bytes that only resemble what smartlic writes are judged, and named, by the general path."""
    data = variant(seal(three_tag_report(), DEVICE_ED25519))

    with pytest.raises(RemoteProtocolError) as refused:
        parse_sign1(data)

    assert refused.value.code in {ErrorCode.MALFORMED_CBOR, ErrorCode.NOT_DETERMINISTIC}
