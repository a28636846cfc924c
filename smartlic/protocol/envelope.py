"""Signed messages: a payload in a COSE_Sign1 bound to the device it concerns.

Every smartlic message is signed with the device id as external AAD (RFC 9052 §4.3), in both
directions. That binds the signature to the device: a report re-published on another device's
topic, or a notice forwarded to another device, fails verification even with the right key.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smartlic.protocol.codec import decode_payload, encode_payload
from smartlic.protocol.cose import (
    SIGNATURE_DOES_NOT_VERIFY,
    Sign1,
    ToSign,
    parse_sign1,
    prepare_sign1,
)
from smartlic.protocol.errors import ErrorCode, RemoteProtocolError
from smartlic.protocol.keys import VerifyingKey
from smartlic.protocol.messages import Message, RegistrationRequest

if TYPE_CHECKING:
    from smartlic.protocol.keys import SigningKey

_AAD_CONTEXT = b"smartlic/1 device "


def device_aad(device_id: str) -> bytes:
    """The external AAD that binds a signature to ``device_id``."""
    return _AAD_CONTEXT + device_id.encode("ascii")


def seal(message: Message, key: SigningKey) -> bytes:
    """Encode and sign ``message`` (bound to its device) into COSE_Sign1 bytes."""
    pending = prepare_seal(message, key.public)
    return pending.finish(key.sign(pending.to_be_signed))


def prepare_seal(message: Message, key: VerifyingKey) -> ToSign:
    """Encode ``message`` for sealing by ``key``'s private half, which signs it elsewhere."""
    return prepare_sign1(encode_payload(message), key, external_aad=device_aad(message.device_id))


@dataclass(frozen=True, slots=True, kw_only=True)
class Opened:
    """A decoded message whose signature has not been checked yet.

    The receiver looks up the key from ``message.device_id`` (collector) or its pinned
    collector key (device), then calls :meth:`verify`; until then, trust nothing in it.
    """

    envelope: Sign1
    message: Message

    def verify(self, key: VerifyingKey) -> None:
        """Raise :class:`RemoteProtocolError` unless ``key`` signed this message for its device."""
        if not key.verify(self.envelope.signature, self.signed_bytes(key)):
            raise RemoteProtocolError(ErrorCode.BAD_SIGNATURE, SIGNATURE_DOES_NOT_VERIFY)

    def signed_bytes(self, key: VerifyingKey) -> bytes:
        """What ``key`` must have signed, for checking the signature elsewhere.

        Raises :class:`RemoteProtocolError` at once when the headers already rule ``key`` out
        (another ``kid``, an algorithm of another key type): no signature check is needed then.
        """
        if self.envelope.kid is not None and self.envelope.kid != key.kid:
            raise RemoteProtocolError(
                ErrorCode.BAD_SIGNATURE, "kid does not name the expected signer"
            )
        self.envelope.check_algorithm(key)
        return self.envelope.to_be_signed(device_aad(self.message.device_id))

    def verify_first_reply(self, fingerprint: bytes) -> VerifyingKey:
        """Verify a reply by a collector known only by ``fingerprint``; return its key to pin.

        A new device has only the fingerprint from its registration token; the collector's
        answer to a registration carries the key itself, which must hash to that fingerprint.
        """
        key = getattr(self.message, "collector_key", None)
        if not isinstance(key, VerifyingKey):
            raise RemoteProtocolError(ErrorCode.BAD_SIGNATURE, "the reply carries no collector key")
        if not hmac.compare_digest(key.fingerprint, fingerprint):
            raise RemoteProtocolError(
                ErrorCode.BAD_SIGNATURE,
                "the reply's collector key does not match the registration token's fingerprint",
            )
        self.verify(key)
        return key

    def verify_proof_of_possession(self) -> None:
        """For a registration request: the new key must have signed the request itself."""
        if not isinstance(self.message, RegistrationRequest):
            raise RemoteProtocolError(
                ErrorCode.UNKNOWN_MESSAGE_TYPE, "only registration requests carry their own key"
            )
        try:
            self.verify(self.message.verifying_key)
        except RemoteProtocolError as exc:
            raise RemoteProtocolError(
                ErrorCode.PROOF_OF_POSSESSION,
                f"the request is not signed by the key it registers ({exc.message})",
            ) from None


def open_message(data: bytes) -> Opened:
    """Parse COSE_Sign1 bytes and decode the payload, without verifying anything yet."""
    envelope = parse_sign1(data)
    return Opened(envelope=envelope, message=decode_payload(envelope.payload))
