"""The COSE Working Group's public vectors (tests/protocol/vectors/cose-wg) get the right verdict.

Every ``sign-fail-*`` is rejected (with the code named below), every ``sign-pass-*`` verifies,
except the one this profile refuses on purpose, and the Ed25519 Sign1 example verifies and
reproduces the vector's ``ToBeSign`` bytes exactly.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any, Final

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from smartlic.protocol import (
    Algorithm,
    ErrorCode,
    LocalProtocolError,
    RemoteProtocolError,
    SigningKey,
    VerifyingKey,
    parse_sign1,
)

VECTORS: Final = Path(__file__).parent / "vectors" / "cose-wg"
SIGN1_TESTS: Final = sorted((VECTORS / "sign1-tests").glob("*.json"))

FAIL_CODES: Final = {
    "sign-fail-01": ErrorCode.NOT_COSE_SIGN1,  # tag 998 instead of 18
    "sign-fail-02": ErrorCode.BAD_SIGNATURE,  # payload changed after signing
    "sign-fail-03": ErrorCode.UNSUPPORTED_ALGORITHM,  # alg -999
    "sign-fail-04": ErrorCode.UNSUPPORTED_ALGORITHM,  # alg "unknown" (text)
    "sign-fail-06": ErrorCode.BAD_SIGNATURE,  # protected header gained ctyp after signing
    "sign-fail-07": ErrorCode.BAD_SIGNATURE,  # protected header lost ctyp after signing
}
REFUSED_ON_PURPOSE: Final = {
    # RFC 9052 §3.1: alg "MUST be authenticated where the ability to do so exists"; with
    # Sign1 it always exists, so smartlic reads alg only from the protected bucket.
    "sign-pass-01": (ErrorCode.ALG_NOT_PROTECTED, "alg-only-unprotected"),
}


def _load(path: Path) -> dict[str, Any]:
    vector: dict[str, Any] = json.loads(path.read_text())
    return vector


def _b64url(text: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")


def _vector_key(vector: dict[str, Any]) -> VerifyingKey:
    jwk = vector["input"]["sign0"]["key"]
    if jwk["kty"] == "OKP":
        return VerifyingKey(ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(jwk["x_hex"])))
    numbers = ec.EllipticCurvePublicNumbers(_b64url(jwk["x"]), _b64url(jwk["y"]), ec.SECP256R1())
    return VerifyingKey(numbers.public_key())


def _message(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(vector["output"]["cbor"])


def _external(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(vector["input"]["sign0"].get("external", ""))


def _verdict(vector: dict[str, Any]) -> None:
    """Parse and verify the vector's message, as a receiver would."""
    parse_sign1(_message(vector)).verify(_vector_key(vector), external_aad=_external(vector))


def test_every_sign1_vector_has_a_verdict() -> None:
    """A vector added to the folder without an expected verdict here fails the suite."""
    names = {path.stem for path in SIGN1_TESTS}
    passing = {name for name in names if name.startswith("sign-pass-")}

    assert names == set(FAIL_CODES) | passing
    assert set(REFUSED_ON_PURPOSE) <= passing
    assert len(names) == 9


@pytest.mark.parametrize(
    "path", [p for p in SIGN1_TESTS if p.stem in FAIL_CODES], ids=lambda p: p.stem
)
def test_sign_fail_vector_is_rejected(path: Path) -> None:
    """Each sign-fail-* vector is refused, with the error code that names its defect."""
    vector = _load(path)
    assert vector["fail"] is True

    with pytest.raises(RemoteProtocolError) as caught:
        _verdict(vector)

    assert FAIL_CODES[path.stem] == caught.value.code


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in SIGN1_TESTS
        if p.stem.startswith("sign-pass-") and p.stem not in REFUSED_ON_PURPOSE
    ],
    ids=lambda p: p.stem,
)
def test_sign_pass_vector_verifies_and_reproduces_to_be_signed(path: Path) -> None:
    """Each sign-pass-* vector verifies, and its Sig_structure is byte-for-byte the vector's."""
    vector = _load(path)
    envelope = parse_sign1(_message(vector))

    envelope.verify(_vector_key(vector), external_aad=_external(vector))

    expected = bytes.fromhex(vector["intermediates"]["ToBeSign_hex"])
    assert expected == envelope.to_be_signed(_external(vector))


@pytest.mark.parametrize(
    ("name", "code"),
    [
        pytest.param(name, code, id=f"{name}-{why}")
        for name, (code, why) in REFUSED_ON_PURPOSE.items()
    ],
)
def test_sign_pass_vector_refused_on_purpose(name: str, code: ErrorCode) -> None:
    """sign-pass-01 carries alg only unprotected: smartlic refuses it (RFC 9052 §3.1 MUST).

    The signature itself is sound: with alg taken from the unprotected bucket, as the COSE WG
    vector intends, it verifies. The refusal is the profile's, not a verification failure.
    """
    vector = _load(VECTORS / "sign1-tests" / f"{name}.json")

    with pytest.raises(RemoteProtocolError) as caught:
        _verdict(vector)

    assert code == caught.value.code
    to_be_signed = bytes.fromhex(vector["intermediates"]["ToBeSign_hex"])
    signature = bytes.fromhex(vector["output"]["cbor"])[-64:]
    assert _vector_key(vector).verify(signature, to_be_signed)


def test_ed25519_sign1_example_verifies_and_reproduces_to_be_signed() -> None:
    """eddsa-sig-01 (alg -8, ctyp in the protected bucket) verifies with its Ed25519 key."""
    vector = _load(VECTORS / "eddsa-examples" / "eddsa-sig-01.json")
    envelope = parse_sign1(_message(vector))

    envelope.verify(_vector_key(vector))

    assert Algorithm.EDDSA == envelope.algorithm
    assert b"11" == envelope.kid
    assert b"This is the content." == envelope.payload
    assert bytes.fromhex(vector["intermediates"]["ToBeSign_hex"]) == envelope.to_be_signed()


def test_ed25519_sign1_example_signature_is_reproduced_by_our_signing_key() -> None:
    """Ed25519 is deterministic (RFC 8032 §5.1.6): our key signs the ToBeSign to the same bytes."""
    vector = _load(VECTORS / "eddsa-examples" / "eddsa-sig-01.json")
    private = bytes.fromhex(vector["input"]["sign0"]["key"]["d_hex"])
    key = SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(private))

    signature = key.sign(bytes.fromhex(vector["intermediates"]["ToBeSign_hex"]))

    assert parse_sign1(_message(vector)).signature == signature


def test_ed448_sign1_example_parses_but_has_no_key_type_here() -> None:
    """eddsa-sig-02 is Ed448 (alg -8): it parses and its ToBeSign matches, but smartlic keys
    are Ed25519 or P-256 only, so an Ed448 key is refused before any verification."""
    vector = _load(VECTORS / "eddsa-examples" / "eddsa-sig-02.json")
    envelope = parse_sign1(_message(vector))
    x = bytes.fromhex(vector["input"]["sign0"]["key"]["x_hex"])

    with pytest.raises(LocalProtocolError) as caught:
        VerifyingKey(ed448.Ed448PublicKey.from_public_bytes(x))  # type: ignore[arg-type]  # the point of the test

    assert ErrorCode.MALFORMED_KEY == caught.value.code
    assert bytes.fromhex(vector["intermediates"]["ToBeSign_hex"]) == envelope.to_be_signed()


@pytest.mark.parametrize("name", ["eddsa-01", "eddsa-02"])
def test_cose_sign_examples_are_not_sign1(name: str) -> None:
    """eddsa-01/02 are multi-signer COSE_Sign (tag 98); smartlic speaks only COSE_Sign1."""
    vector = _load(VECTORS / "eddsa-examples" / f"{name}.json")

    with pytest.raises(RemoteProtocolError) as caught:
        parse_sign1(bytes.fromhex(vector["output"]["cbor"]))

    assert ErrorCode.NOT_COSE_SIGN1 == caught.value.code


def test_cose_sign_ed25519_signer_signature_verifies_with_our_key_layer() -> None:
    """The Ed25519 signer's signature in eddsa-01 verifies over its ToBeSign with VerifyingKey."""
    vector = _load(VECTORS / "eddsa-examples" / "eddsa-01.json")
    signer = vector["input"]["sign"]["signers"][0]
    key = VerifyingKey(
        ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(signer["key"]["x_hex"]))
    )
    to_be_signed = bytes.fromhex(vector["intermediates"]["signers"][0]["ToBeSign_hex"])
    signature = bytes.fromhex(vector["output"]["cbor"])[-64:]

    assert key.verify(signature, to_be_signed)
    assert not key.verify(signature, to_be_signed + b"\x00")
