"""Ed25519 through libsodium: the same signatures as OpenSSL, and none of its weak-key forgeries."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st
from smartlic.protocol import (
    Algorithm,
    ErrorCode,
    KeyType,
    RegistrationRequest,
    RegistrationToken,
    RemoteProtocolError,
    SigningKey,
    Udi,
    VerifyingKey,
    open_message,
)
from smartlic.protocol.envelope import prepare_seal
from smartlic.protocol.keys import verify_ed25519

seeds = st.binary(min_size=32, max_size=32)
messages = st.binary(max_size=512)

# The neutral element's encoding (y = 1): a point of order 1, so [S]B = R + [k]A holds for
# R = the same encoding and S = 0 whatever the message (RFC 8032 §5.1.7's equation alone).
IDENTITY_POINT = bytes([1]) + bytes(31)


@given(seed=seeds, message=messages)
def test_signature_is_the_bytes_openssl_makes(seed: bytes, message: bytes) -> None:
    """Ed25519 is deterministic (RFC 8032 §5.1.6): either library gives the same 64 bytes."""
    expected = ed25519.Ed25519PrivateKey.from_private_bytes(seed).sign(message)
    assert expected == SigningKey.from_seed(KeyType.ED25519, seed).sign(message)


@given(seed=seeds, message=messages)
def test_openssl_signature_verifies(seed: bytes, message: bytes) -> None:
    signature = ed25519.Ed25519PrivateKey.from_private_bytes(seed).sign(message)
    key = SigningKey.from_seed(KeyType.ED25519, seed).public
    assert key.verify(signature, message)


@given(seed=seeds, message=messages, flip=st.integers(min_value=0, max_value=64 * 8 - 1))
def test_any_flipped_signature_bit_fails(seed: bytes, message: bytes, flip: int) -> None:
    key = SigningKey.from_seed(KeyType.ED25519, seed)
    signature = bytearray(key.sign(message))
    signature[flip // 8] ^= 1 << (flip % 8)
    assert not key.public.verify(bytes(signature), message)


def test_openssl_accepts_the_identity_key_forgery() -> None:
    """Why smartlic does not check Ed25519 with OpenSSL (skipped once OpenSSL refuses it)."""
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(IDENTITY_POINT).verify(
            IDENTITY_POINT + bytes(32), b"report"
        )
    except InvalidSignature:
        pytest.skip("this OpenSSL refuses small-order keys; docs/protocol.md#keys can say so")


def test_identity_key_forgery_does_not_verify() -> None:
    """A small-order key lets anyone sign as it; libsodium refuses it."""
    key = VerifyingKey.from_raw(KeyType.ED25519, IDENTITY_POINT)
    assert not key.verify(IDENTITY_POINT + bytes(32), b"report")


def test_registering_a_small_order_key_fails_proof_of_possession() -> None:
    """The forgery OpenSSL accepts would let anyone register, then report as, such a device."""
    weak = VerifyingKey.from_raw(KeyType.ED25519, IDENTITY_POINT)
    token = RegistrationToken(token_id=b"t" * 8, secret=b"s" * 16, collector_fingerprint=bytes(32))
    request = RegistrationRequest(
        udi=Udi(product_id="ISR4331/K9", serial="FOC1"),
        algorithm=Algorithm.ED25519,
        public_key=weak.raw,
        token=str(token),
        request_id=b"r" * 16,
        issued_at=10,
    )
    forged = prepare_seal(request, weak).finish(IDENTITY_POINT + bytes(32))

    with pytest.raises(RemoteProtocolError) as caught:
        open_message(forged).verify_proof_of_possession()

    assert ErrorCode.PROOF_OF_POSSESSION == caught.value.code


@pytest.mark.parametrize("size", [0, 63, 65, 128])
def test_signature_of_the_wrong_size_does_not_verify(size: int) -> None:
    key = SigningKey.from_seed(KeyType.ED25519, bytes(range(32)))
    signature = (key.sign(b"report") * 2)[:size]
    assert not key.public.verify(signature, b"report")


def test_key_of_the_wrong_size_does_not_verify() -> None:
    """libsodium reads 32 bytes of key wherever it is pointed: a short one must not get there."""
    key = SigningKey.from_seed(KeyType.ED25519, bytes(range(32)))
    assert not verify_ed25519(key.public.raw[:31], key.sign(b"report"), b"report")


def test_signing_key_repr_shows_no_secret() -> None:
    key = SigningKey.from_seed(KeyType.ED25519, bytes(range(32)))
    assert key._sodium_secret.hex() not in repr(key)
    assert bytes(range(32)).hex() not in repr(key)
