"""Signing and verifying keys: Ed25519 (the default) and ECDSA P-256 (for secure elements).

Keys are made from caller-supplied random bytes (:meth:`SigningKey.from_seed`) so this package
never reaches for the OS's randomness itself. ECDSA signing still draws a nonce inside OpenSSL;
that is the one place randomness is not passed in, and it is the library's job to get it right.

Ed25519 signatures are made and checked with libsodium (PyNaCl), which does both in about
0.6x the CPU of OpenSSL's (measured: verify 73 against 124-140 µs, sign 27 against 40 µs) and
which, beyond the check RFC 8032 §5.1.7 requires and unlike OpenSSL, refuses small-order
public keys and R points and non-canonical encodings: with a small-order key, OpenSSL accepts
``R = A, S = 0`` over any message, and under libsodium such a key never verifies anything.
Ed25519 is deterministic (RFC 8032 §5.1.6), so the signatures are the same bytes either
library makes. ``cryptography`` still parses, serialises and fingerprints every key, and does
all of P-256.

A key's *fingerprint* is the SHA-256 of its SubjectPublicKeyInfo (the same thing SSH, TLS
pinning and ``openssl pkey -pubout`` hash), and its COSE ``kid`` is the first 8 bytes of that.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, TypeAlias

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.exceptions import BadSignatureError

from smartlic.protocol.errors import ErrorCode, LocalProtocolError

KID_BYTES: Final = 8
FINGERPRINT_BYTES: Final = 32
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P256_COORD: Final = 32
_ED25519_BYTES: Final = 32
_ED25519_SIGNATURE: Final = 64


class KeyType(Enum):
    """The two key types smartlic speaks, with the COSE algorithm each signs with."""

    ED25519 = "Ed25519"
    P256 = "P-256"


PrivateKey: TypeAlias = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey: TypeAlias = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


def _spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """A public key that checks signatures; what the collector stores per device."""

    key: PublicKey
    key_type: KeyType = field(init=False)
    fingerprint: bytes = field(init=False, repr=False)
    kid: bytes = field(init=False, repr=False)
    """The COSE key identifier: the first 8 bytes of the fingerprint."""
    raw: bytes = field(init=False, repr=False)
    """The key as it travels: 32 raw bytes (Ed25519) or a compressed SEC1 point (P-256).

    Kept, like the fingerprint and kid, because the collector reads them per message."""

    def __post_init__(self) -> None:
        if isinstance(self.key, ed25519.Ed25519PublicKey):
            key_type = KeyType.ED25519
            raw = self.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        elif isinstance(getattr(self.key, "curve", None), ec.SECP256R1):
            key_type = KeyType.P256
            raw = self.key.public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
            )
        else:
            raise LocalProtocolError(ErrorCode.MALFORMED_KEY, "only Ed25519 and P-256 keys")
        fingerprint = hashlib.sha256(_spki(self.key)).digest()
        object.__setattr__(self, "key_type", key_type)
        object.__setattr__(self, "fingerprint", fingerprint)
        object.__setattr__(self, "kid", fingerprint[:KID_BYTES])
        object.__setattr__(self, "raw", raw)

    @classmethod
    def from_raw(cls, key_type: KeyType, data: bytes) -> VerifyingKey:
        """Load a key from its wire form (a decoder blames the peer for a bad one)."""
        try:
            if key_type is KeyType.ED25519:
                if len(data) != _ED25519_BYTES:
                    raise ValueError(f"an Ed25519 key is 32 bytes, not {len(data)}")
                return cls(ed25519.Ed25519PublicKey.from_public_bytes(data))
            return cls(ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data))
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise LocalProtocolError(
                ErrorCode.MALFORMED_KEY, f"invalid {key_type.value} public key: {exc}"
            ) from None

    @classmethod
    def from_pem(cls, data: bytes) -> VerifyingKey:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise LocalProtocolError(
                ErrorCode.MALFORMED_KEY, f"not a PEM public key: {exc}"
            ) from None
        if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
            raise LocalProtocolError(ErrorCode.MALFORMED_KEY, "only Ed25519 and P-256 keys")
        return cls(key)

    def to_pem(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True when ``signature`` is this key's COSE signature over ``data``."""
        if self.key_type is KeyType.ED25519:
            return verify_ed25519(self.raw, signature, data)
        # RFC 9053 §2.1: an ECDSA signature is r || s, each the curve's size.
        if len(signature) != 2 * _P256_COORD or not isinstance(self.key, ec.EllipticCurvePublicKey):
            return False
        r = int.from_bytes(signature[:_P256_COORD], "big")
        s = int.from_bytes(signature[_P256_COORD:], "big")
        try:
            self.key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


def verify_ed25519(public: bytes, signature: bytes, data: bytes) -> bool:
    """Does ``signature`` hold over ``data`` for the raw 32-byte Ed25519 key ``public``."""
    # libsodium takes the key and signature by pointer without their lengths: check both here.
    if len(public) != _ED25519_BYTES or len(signature) != _ED25519_SIGNATURE:
        return False
    try:
        crypto_sign_open(signature + data, public)
    except BadSignatureError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key that signs; kept by a device (its identity) or the collector."""

    key: PrivateKey
    public: VerifyingKey = field(init=False, repr=False)
    _sodium_secret: bytes = field(init=False, repr=False, compare=False)
    """libsodium's form of an Ed25519 key (seed || public key); empty for P-256."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "public", VerifyingKey(self.key.public_key()))
        secret = b""
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            _, secret = crypto_sign_seed_keypair(self.key.private_bytes_raw())
        object.__setattr__(self, "_sodium_secret", secret)

    @property
    def key_type(self) -> KeyType:
        return self.public.key_type

    @classmethod
    def from_seed(cls, key_type: KeyType, seed: bytes) -> SigningKey:
        """Build a key from caller-supplied random bytes (32 for Ed25519, >= 48 for P-256)."""
        if key_type is KeyType.ED25519:
            if len(seed) != _ED25519_BYTES:
                raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "Ed25519 seed is 32 bytes")
            return cls(ed25519.Ed25519PrivateKey.from_private_bytes(seed))
        # FIPS 186-5 A.2.1: reduce at least 64 extra bits modulo n-1, then add 1 (no bias, no 0).
        if len(seed) < 48:
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "P-256 seed is at least 48 bytes")
        scalar = int.from_bytes(seed, "big") % (_P256_ORDER - 1) + 1
        return cls(ec.derive_private_key(scalar, ec.SECP256R1()))

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise LocalProtocolError(
                ErrorCode.MALFORMED_KEY, f"not a PEM private key: {exc}"
            ) from None
        if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise LocalProtocolError(ErrorCode.MALFORMED_KEY, "only Ed25519 and P-256 keys")
        return cls(key)

    def to_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign(self, data: bytes) -> bytes:
        """The COSE signature over ``data``: 64 bytes for either key type."""
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return crypto_sign(data, self._sodium_secret)[:_ED25519_SIGNATURE]
        der = self.key.sign(data, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return r.to_bytes(_P256_COORD, "big") + s.to_bytes(_P256_COORD, "big")


def format_fingerprint(fingerprint: bytes) -> str:
    """How fingerprints are shown to people: ``SHA256:`` and lowercase hex in groups of 4."""
    text = fingerprint.hex()
    return "SHA256:" + ":".join(text[i : i + 4] for i in range(0, len(text), 4))
