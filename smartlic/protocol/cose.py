"""COSE_Sign1 (RFC 9052 §4.2, §4.4) with Ed25519 and ES256, over cbor2 and cryptography.

Profile (stricter than RFC 9052 where the RFC leaves room, each choice with its reason):

* ``alg`` is read **only** from the protected bucket. RFC 9052 §3.1 says it MUST be
  authenticated where possible, and with Sign1 it always is possible; a message carrying
  ``alg`` only unprotected is refused (the COSE WG vector ``sign-pass-01`` is such a message).
* A label may not appear in both buckets (RFC 9052 §3: "MUST NOT").
* ``crit`` (label 2) must be protected, a non-empty array when present (``null`` included), and
  may only name labels we process that are in the protected bucket too (RFC 9052 §3.1).
* ``kid`` (label 4), when present in either bucket, is a byte string; ``null`` is not "no kid".
* ``content type`` (label 3) is a text string or an unsigned integer below 65536 (RFC 9052 §3.1;
  the integers are CoAP Content-Formats, RFC 7252 §12.3).
* Payloads are embedded; detached content is refused (smartlic never detaches).
* The envelope and its protected header must be deterministic CBOR (RFC 8949 §4.2.1), as
  everything smartlic reads is; the signature is still checked over the protected bytes
  exactly as received (RFC 9052 §4.4), never over a re-encoding.
* Ed25519 is emitted as the fully-specified ``-19`` (RFC 9864 §2.2) and accepted as ``-19``
  or the polymorphic ``-8`` (EdDSA, RFC 9053 §2.2) when the key is Ed25519; ES256 is ``-7``.
* Both tagged (tag 18) and untagged Sign1 are accepted (RFC 9052 §2: the application may know
  the type from context); smartlic always emits the tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final

import cbor2

from smartlic.protocol import cbor
from smartlic.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from smartlic.protocol.keys import KeyType, SigningKey, VerifyingKey

if TYPE_CHECKING:
    from collections.abc import Mapping

COSE_SIGN1_TAG: Final = 18
HEADER_ALG: Final = 1
HEADER_CRIT: Final = 2
HEADER_CONTENT_TYPE: Final = 3
HEADER_KID: Final = 4
_UNDERSTOOD_LABELS: Final = frozenset({HEADER_ALG, HEADER_CRIT, HEADER_CONTENT_TYPE, HEADER_KID})
_SIGN1_CONTEXT: Final = "Signature1"
SIGNATURE_DOES_NOT_VERIFY: Final = "signature does not verify"


class Algorithm(IntEnum):
    """COSE algorithm identifiers (IANA "COSE Algorithms" registry)."""

    ES256 = -7
    EDDSA = -8
    ED25519 = -19

    @property
    def key_type(self) -> KeyType:
        return KeyType.P256 if self is Algorithm.ES256 else KeyType.ED25519


def algorithm_for(key_type: KeyType) -> Algorithm:
    """The algorithm smartlic emits for a key type."""
    return Algorithm.ES256 if key_type is KeyType.P256 else Algorithm.ED25519


_PROTECTED: Final = {alg: cbor.encode({HEADER_ALG: int(alg)}) for alg in Algorithm}
"""The protected bucket smartlic writes for each algorithm: the same few bytes every time."""
_KNOWN_PROTECTED: Final[Mapping[bytes, Mapping[Any, Any]]] = {
    encoded: {HEADER_ALG: int(alg)} for alg, encoded in _PROTECTED.items()
}
"""Those buckets already decoded: nearly every message carries one of them."""
_ALGORITHM_OF: Final[Mapping[bytes, Algorithm]] = {
    encoded: alg for alg, encoded in _PROTECTED.items()
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Sign1:
    """A parsed, not yet verified, COSE_Sign1."""

    protected: bytes
    """The protected header bucket exactly as received: what the signature covers."""
    protected_header: Mapping[Any, Any]
    unprotected_header: Mapping[Any, Any]
    payload: bytes
    signature: bytes
    algorithm: Algorithm
    kid: bytes | None

    def to_be_signed(self, external_aad: bytes = b"") -> bytes:
        return sig_structure(self.protected, self.payload, external_aad)

    def check_algorithm(self, key: VerifyingKey) -> None:
        """Raise unless this message's ``alg`` is one ``key`` can have signed with."""
        if self.algorithm.key_type is not key.key_type:
            raise RemoteProtocolError(
                ErrorCode.KEY_MISMATCH,
                f"algorithm {self.algorithm.name} does not fit a {key.key_type.value} key",
            )

    def verify(self, key: VerifyingKey, *, external_aad: bytes = b"") -> None:
        """Return if ``key`` signed this message (with ``external_aad``); else raise."""
        self.check_algorithm(key)
        if not key.verify(self.signature, self.to_be_signed(external_aad)):
            raise RemoteProtocolError(ErrorCode.BAD_SIGNATURE, SIGNATURE_DOES_NOT_VERIFY)


def _bstr(data: bytes) -> bytes:
    """A CBOR byte string: its shortest head (RFC 8949 §4.2.1), then the bytes."""
    size = len(data)
    if size < 24:
        return bytes((0x40 | size,)) + data
    if size < 0x100:
        return bytes((0x58, size)) + data
    if size < 0x10000:
        return b"\x59" + size.to_bytes(2, "big") + data
    return b"\x5a" + size.to_bytes(4, "big") + data


_SIG_STRUCTURE_HEAD: Final = b"\x84" + cbor2.dumps(_SIGN1_CONTEXT)
"""``Sig_structure`` starts the same for every Sign1: an array of 4, then "Signature1"."""


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """The ``Sig_structure`` of RFC 9052 §4.4 for COSE_Sign1: what is actually signed.

    Written by hand rather than through cbor2 because it is built for every message both
    ways: the array head and context never change, and the rest is three byte strings.
    """
    return _SIG_STRUCTURE_HEAD + _bstr(protected) + _bstr(external_aad) + _bstr(payload)


@dataclass(frozen=True, slots=True, kw_only=True)
class ToSign:
    """A COSE_Sign1 waiting for its signature: sign :attr:`to_be_signed`, then :meth:`finish`.

    Splitting the two lets the signature itself be made elsewhere (the collector signs in
    worker processes) while the envelope is built and checked here.
    """

    protected: bytes
    kid: bytes
    payload: bytes
    to_be_signed: bytes

    def finish(self, signature: bytes) -> bytes:
        """The tagged COSE_Sign1 bytes with ``signature`` (64 bytes for both algorithms)."""
        if type(signature) is not bytes or len(signature) != _SIGNATURE_BYTES:
            raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "a signature is 64 bytes")
        return _written(self.protected, self.kid, self.payload, signature)


_SIGNATURE_BYTES: Final = 64
_SIGN1_HEAD: Final = b"\xd2\x84"
_UNPROTECTED_KID: Final = b"\xa1\x04"


def prepare_sign1(
    payload: bytes, key: VerifyingKey, *, kid: bytes | None = None, external_aad: bytes = b""
) -> ToSign:
    """What the holder of ``key``'s private half must sign to seal ``payload``."""
    if not isinstance(payload, bytes):
        raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "payload must be bytes")
    if kid is not None and not isinstance(kid, bytes):
        raise LocalProtocolError(ErrorCode.INVALID_ARGUMENT, "kid must be bytes")
    protected = _PROTECTED[algorithm_for(key.key_type)]
    return ToSign(
        protected=protected,
        kid=key.kid if kid is None else kid,
        payload=payload,
        to_be_signed=sig_structure(protected, payload, external_aad),
    )


def sign1(
    payload: bytes,
    key: SigningKey,
    *,
    kid: bytes | None = None,
    external_aad: bytes = b"",
) -> bytes:
    """Sign ``payload`` into a tagged COSE_Sign1; ``kid`` defaults to the key's own."""
    pending = prepare_sign1(payload, key.public, kid=kid, external_aad=external_aad)
    return pending.finish(key.sign(pending.to_be_signed))


def parse_sign1(data: bytes, *, max_bytes: int = cbor.MAX_MESSAGE_BYTES) -> Sign1:
    """Parse a COSE_Sign1 without verifying it; anything malformed is a RemoteProtocolError."""
    common = _parse_as_written(data, max_bytes)
    if common is not None:
        return common
    value = cbor.decode(data, max_bytes=max_bytes)
    if isinstance(value, cbor2.CBORTag):
        if value.tag != COSE_SIGN1_TAG:
            raise RemoteProtocolError(
                ErrorCode.NOT_COSE_SIGN1, f"CBOR tag {value.tag} is not COSE_Sign1 (18)"
            )
        value = value.value
    if not isinstance(value, list) or len(value) != 4:
        raise RemoteProtocolError(ErrorCode.NOT_COSE_SIGN1, "COSE_Sign1 is an array of 4 items")
    protected, unprotected, payload, signature = value
    if not isinstance(protected, bytes):
        raise RemoteProtocolError(ErrorCode.BAD_HEADER, "protected header must be a byte string")
    if not isinstance(unprotected, dict):
        raise RemoteProtocolError(ErrorCode.BAD_HEADER, "unprotected header must be a map")
    if payload is None:
        raise RemoteProtocolError(ErrorCode.DETACHED_PAYLOAD, "detached payloads are not accepted")
    if not isinstance(payload, bytes):
        raise RemoteProtocolError(ErrorCode.NOT_COSE_SIGN1, "payload must be a byte string")
    if not isinstance(signature, bytes):
        raise RemoteProtocolError(ErrorCode.NOT_COSE_SIGN1, "signature must be a byte string")
    protected_header = _protected_map(protected)
    _check_buckets(protected_header, unprotected)
    return Sign1(
        protected=protected,
        protected_header=protected_header,
        unprotected_header=unprotected,
        payload=payload,
        signature=signature,
        algorithm=_algorithm(protected_header, unprotected),
        kid=_kid(protected_header, unprotected),
    )


def _parse_as_written(data: bytes, max_bytes: int) -> Sign1 | None:
    """The Sign1 smartlic writes (tag 18, a known protected bucket, ``{4: kid}``) read fast.

    Every message either side receives normally looks like this, so the deterministic-CBOR
    proof is done by rebuilding the bytes it must be and comparing: equal bytes mean exactly
    the message the general path would accept. Anything else returns ``None`` for the general
    path to judge (and name the rule it breaks).
    """
    if type(data) is not bytes or len(data) > max_bytes:
        return None
    try:
        value = cbor2.loads(data, max_depth=cbor.MAX_DEPTH)
    except Exception:  # noqa: BLE001 -- the general path says what is wrong with it
        return None
    items = value.value if type(value) is cbor2.CBORTag and value.tag == COSE_SIGN1_TAG else None
    if type(items) is not list or len(items) != 4:
        return None
    protected, unprotected, payload, signature = items
    header = _KNOWN_PROTECTED.get(protected) if type(protected) is bytes else None
    kid = (
        unprotected.get(HEADER_KID) if type(unprotected) is dict and len(unprotected) == 1 else None
    )
    if (
        header is None
        or type(kid) is not bytes
        or type(payload) is not bytes
        or type(signature) is not bytes
        or data != _written(protected, kid, payload, signature)
    ):
        return None
    return Sign1(
        protected=protected,
        protected_header=header,
        unprotected_header=unprotected,
        payload=payload,
        signature=signature,
        algorithm=_ALGORITHM_OF[protected],
        kid=kid,
    )


def _written(protected: bytes, kid: bytes, payload: bytes, signature: bytes) -> bytes:
    """The deterministic encoding of a tagged Sign1 whose unprotected bucket is ``{4: kid}``.

    Tag 18, an array of 4, then four items; a one-entry map needs no sorting (RFC 8949
    §4.2.1), so the bytes are the shortest heads and the contents, in order."""
    return b"".join(
        (
            _SIGN1_HEAD,
            _bstr(protected),
            _UNPROTECTED_KID,
            _bstr(kid),
            _bstr(payload),
            _bstr(signature),
        )
    )


def _protected_map(protected: bytes) -> Mapping[Any, Any]:
    # RFC 9052 §3: an empty protected bucket is the zero-length string; "a0" is tolerated.
    if not protected:
        return {}
    known = _KNOWN_PROTECTED.get(protected)
    if known is not None:
        return known
    header = cbor.decode(protected)
    if not isinstance(header, dict):
        raise RemoteProtocolError(ErrorCode.BAD_HEADER, "protected header must encode a map")
    return header


def _check_buckets(protected: Mapping[Any, Any], unprotected: Mapping[Any, Any]) -> None:
    for label in (*protected, *unprotected):
        if not isinstance(label, int | str) or isinstance(label, bool):
            raise RemoteProtocolError(ErrorCode.BAD_HEADER, "header labels are integers or text")
    both = protected.keys() & unprotected.keys()
    if both:
        raise RemoteProtocolError(
            ErrorCode.BAD_HEADER, f"header labels {sorted(map(str, both))} in both buckets"
        )
    _check_crit(protected, unprotected)
    _check_content_type(protected, unprotected)


def _check_crit(protected: Mapping[Any, Any], unprotected: Mapping[Any, Any]) -> None:
    if HEADER_CRIT in unprotected:
        raise RemoteProtocolError(ErrorCode.BAD_HEADER, "crit must be in the protected header")
    # Presence, not value: ``crit: null`` is a crit that is not an array, not an absent crit.
    if HEADER_CRIT not in protected:
        return
    crit = protected[HEADER_CRIT]
    if not isinstance(crit, list) or not crit:
        raise RemoteProtocolError(ErrorCode.BAD_HEADER, "crit must be a non-empty array")
    # ``type() is int``: ``true`` in crit is not label 1, however Python compares them.
    unknown = [label for label in crit if type(label) is not int or label not in _UNDERSTOOD_LABELS]
    if unknown:
        raise RemoteProtocolError(
            ErrorCode.UNKNOWN_CRITICAL_HEADER, f"critical header labels not understood: {unknown}"
        )
    # RFC 9052 §3.1: a label in crit whose parameter is not in the protected bucket is a fatal
    # error; an attacker could otherwise add it, unsigned, to the unprotected one.
    absent = [label for label in crit if label not in protected]
    if absent:
        raise RemoteProtocolError(
            ErrorCode.BAD_HEADER, f"critical header labels not in the protected header: {absent}"
        )


_CONTENT_FORMAT_MAX: Final = 0xFFFF
"""CoAP Content-Formats, what an integer content type names, are 16 bits (RFC 7252 §12.3)."""


def _check_content_type(protected: Mapping[Any, Any], unprotected: Mapping[Any, Any]) -> None:
    # RFC 9052 §3.1: content type is ``tstr / uint``. Checked in either bucket and whether crit
    # names it or not: smartlic claims to understand label 3, so it must refuse a bad one.
    bucket = protected if HEADER_CONTENT_TYPE in protected else unprotected
    if HEADER_CONTENT_TYPE not in bucket:
        return
    content_type = bucket[HEADER_CONTENT_TYPE]
    if type(content_type) is str:
        return
    # ``type() is int``: ``true`` is not content type 1.
    if type(content_type) is not int or not 0 <= content_type <= _CONTENT_FORMAT_MAX:
        raise RemoteProtocolError(
            ErrorCode.BAD_HEADER,
            "content type must be text or an integer from 0 to 65535 (RFC 9052 §3.1)",
        )


def _algorithm(protected: Mapping[Any, Any], unprotected: Mapping[Any, Any]) -> Algorithm:
    if HEADER_ALG not in protected:
        if HEADER_ALG in unprotected:
            raise RemoteProtocolError(
                ErrorCode.ALG_NOT_PROTECTED,
                "alg must be in the protected header (RFC 9052 §3.1: it MUST be authenticated)",
            )
        raise RemoteProtocolError(ErrorCode.BAD_HEADER, "no alg header")
    alg = protected[HEADER_ALG]
    if type(alg) is not int:
        raise RemoteProtocolError(ErrorCode.UNSUPPORTED_ALGORITHM, f"unsupported alg {alg!r}")
    try:
        return Algorithm(alg)
    except ValueError:
        raise RemoteProtocolError(
            ErrorCode.UNSUPPORTED_ALGORITHM, f"unsupported alg {alg} (accepted: -19, -8, -7)"
        ) from None


def _kid(protected: Mapping[Any, Any], unprotected: Mapping[Any, Any]) -> bytes | None:
    """The kid, or ``None`` when neither bucket has label 4.

    Presence, not value: a ``null`` kid would otherwise read as no kid at all, and
    :meth:`~smartlic.protocol.envelope.Opened.signed_bytes` skips the kid check for that.
    RFC 9052 §3.1: kid is a ``bstr``.
    """
    bucket = protected if HEADER_KID in protected else unprotected
    if HEADER_KID not in bucket:
        return None
    kid = bucket[HEADER_KID]
    if not isinstance(kid, bytes):
        raise RemoteProtocolError(ErrorCode.BAD_HEADER, "kid must be a byte string")
    return kid
