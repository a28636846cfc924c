"""Interoperability with python-cwt (a dev dependency): each side verifies what the other signs.

Findings (python-cwt 3.3), each pinned by a test below:

* cwt signs and verifies Ed25519 under both the fully-specified alg -19 (RFC 9864) and the
  polymorphic EdDSA -8, and ES256 (-7) with P-256: all three interoperate both ways, with the
  device id as external AAD, exactly as smartlic uses it.
* Gap: cwt writes header buckets in insertion order unless ``deterministic_header=True``
  (RFC 8949 §4.2.1 sorting). smartlic's profile requires deterministic CBOR for the whole
  envelope, so a cwt signer with more than one label in a bucket must set that flag; a test
  shows the refusal without it. (A single label per bucket, as in smartlic's own messages, is
  deterministic either way.)
* Gap: cwt verifies a message signed with alg -19 using a key declared for -8 and vice versa:
  it does not tie the key's ``alg`` to the message's. smartlic's check is by key type (an
  Ed25519 key verifies -19 and -8; a P-256 key only -7), so nothing is lost on our side.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from cwt import COSE, COSEKey
from hypothesis import given, settings
from protocol_strategies import DEVICE_ED25519, DEVICE_P256, messages, three_tag_report
from smartlic.protocol import (
    Algorithm,
    ErrorCode,
    Message,
    RemoteProtocolError,
    device_aad,
    encode_payload,
    open_message,
    parse_sign1,
    seal,
    sign1,
)

if TYPE_CHECKING:
    from smartlic.protocol import SigningKey

EMITTED = [
    pytest.param(DEVICE_ED25519, Algorithm.ED25519, id="ed25519-alg-19"),
    pytest.param(DEVICE_P256, Algorithm.ES256, id="es256-alg-7"),
]
"""What smartlic signs with: Ed25519 always as -19, P-256 as -7."""
ACCEPTED = [*EMITTED, pytest.param(DEVICE_ED25519, Algorithm.EDDSA, id="eddsa-alg-8")]
"""What smartlic verifies: also the polymorphic -8 that older COSE signers emit."""


def _cwt_private(key: SigningKey, algorithm: Algorithm) -> Any:
    return COSEKey.from_pem(key.to_pem(), alg=int(algorithm), kid=key.public.kid)


def _cwt_public(key: SigningKey, algorithm: Algorithm) -> Any:
    return COSEKey.from_pem(key.public.to_pem(), alg=int(algorithm), kid=key.public.kid)


@pytest.mark.parametrize(("key", "algorithm"), EMITTED)
def test_cwt_verifies_a_sealed_smartlic_message(key: SigningKey, algorithm: Algorithm) -> None:
    """cwt checks our COSE_Sign1, device-id AAD included, and returns our payload bytes."""
    report = three_tag_report()

    payload = COSE.new().decode(
        seal(report, key), _cwt_public(key, algorithm), external_aad=device_aad(report.device_id)
    )

    assert encode_payload(report) == payload


@pytest.mark.parametrize(("key", "algorithm"), ACCEPTED)
def test_smartlic_verifies_a_message_cwt_signed(key: SigningKey, algorithm: Algorithm) -> None:
    """We open and verify a COSE_Sign1 cwt made around a smartlic payload."""
    report = three_tag_report()
    data = COSE.new().encode_and_sign(
        encode_payload(report),
        _cwt_private(key, algorithm),
        protected={1: int(algorithm)},
        unprotected={4: key.public.kid},
        external_aad=device_aad(report.device_id),
    )

    opened = open_message(data)
    opened.verify(key.public)

    assert report == opened.message
    assert algorithm == opened.envelope.algorithm


@pytest.mark.parametrize(("key", "algorithm"), EMITTED)
def test_cwt_rejects_our_message_under_the_wrong_aad(key: SigningKey, algorithm: Algorithm) -> None:
    """The AAD binding is real COSE (RFC 9052 §4.3): cwt refuses it for another device too."""
    data = sign1(b"payload", key, external_aad=device_aad("A:1"))

    with pytest.raises(Exception, match="verify"):
        COSE.new().decode(data, _cwt_public(key, algorithm), external_aad=device_aad("A:2"))


@settings(max_examples=40)
@given(message=messages)
def test_smartlic_verifies_cwt_messages_of_every_type(message: Message) -> None:
    """Any message, signed by cwt with Ed25519 -19, opens and verifies here."""
    data = COSE.new().encode_and_sign(
        encode_payload(message),
        _cwt_private(DEVICE_ED25519, Algorithm.ED25519),
        protected={1: -19},
        unprotected={4: DEVICE_ED25519.public.kid},
        external_aad=device_aad(message.device_id),
    )

    opened = open_message(data)
    opened.verify(DEVICE_ED25519.public)

    assert message == opened.message


def test_cwt_headers_in_insertion_order_are_refused() -> None:
    """Gap: without deterministic_header, cwt may write labels unsorted; our profile refuses."""
    data = COSE.new().encode_and_sign(
        b"payload",
        _cwt_private(DEVICE_ED25519, Algorithm.ED25519),
        protected={1: -19},
        unprotected={4: DEVICE_ED25519.public.kid, 3: 0},
    )

    with pytest.raises(RemoteProtocolError) as caught:
        open_message(data)

    assert ErrorCode.NOT_DETERMINISTIC == caught.value.code


def test_cwt_with_deterministic_headers_interoperates() -> None:
    """With deterministic_header=True (RFC 8949 §4.2.1) the same headers are accepted."""
    data = COSE.new(deterministic_header=True).encode_and_sign(
        b"payload",
        _cwt_private(DEVICE_ED25519, Algorithm.ED25519),
        protected={1: -19},
        unprotected={4: DEVICE_ED25519.public.kid, 3: 0},
    )

    parse_sign1(data).verify(DEVICE_ED25519.public)


def test_cwt_does_not_tie_key_alg_to_message_alg() -> None:
    """Gap (cwt's, harmless here): a key declared for -8 verifies a -19 message in cwt."""
    data = sign1(b"payload", DEVICE_ED25519)

    assert b"payload" == COSE.new().decode(data, _cwt_public(DEVICE_ED25519, Algorithm.EDDSA))
