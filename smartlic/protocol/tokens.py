"""Registration tokens: what an administrator pastes into a new device.

A token string is ``slt1_`` followed by base64url (no padding) of 60 bytes::

    token id (8) | secret (16) | collector key fingerprint (32) | check (4)

The token id names the token in listings and revocations; the secret proves the holder was
given the token (the collector stores only its SHA-256); the fingerprint lets a brand-new device
verify the very first reply it gets, before it has pinned any key; the check (the first 4 bytes
of SHA-256 over the rest) catches a mistyped or truncated paste with a clear message instead of
a confusing "unknown token" from the collector.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

from smartlic.protocol.errors import ErrorCode, LocalProtocolError
from smartlic.protocol.keys import FINGERPRINT_BYTES

TOKEN_PREFIX: Final = "slt1_"
TOKEN_ID_BYTES: Final = 8
SECRET_BYTES: Final = 16
_CHECK_BYTES: Final = 4
_BODY_BYTES: Final = TOKEN_ID_BYTES + SECRET_BYTES + FINGERPRINT_BYTES
TOKEN_TEXT_LENGTH: Final = len(TOKEN_PREFIX) + 80


def _malformed(reason: str) -> LocalProtocolError:
    return LocalProtocolError(ErrorCode.MALFORMED_TOKEN, f"malformed registration token: {reason}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationToken:
    token_id: bytes
    secret: bytes
    collector_fingerprint: bytes

    def __post_init__(self) -> None:
        for field, value, size in (
            ("token id", self.token_id, TOKEN_ID_BYTES),
            ("secret", self.secret, SECRET_BYTES),
            ("collector fingerprint", self.collector_fingerprint, FINGERPRINT_BYTES),
        ):
            if type(value) is not bytes or len(value) != size:
                raise LocalProtocolError(
                    ErrorCode.INVALID_ARGUMENT, f"{field} must be {size} bytes"
                )

    @property
    def token_id_text(self) -> str:
        """The token id as administrators see and type it (16 hex digits)."""
        return self.token_id.hex()

    @property
    def secret_digest(self) -> bytes:
        """What the collector stores instead of the secret."""
        return hashlib.sha256(self.secret).digest()

    def matches(self, secret_digest: bytes) -> bool:
        """Constant-time check of this token's secret against a stored digest."""
        return hmac.compare_digest(self.secret_digest, secret_digest)

    def __str__(self) -> str:
        body = self.token_id + self.secret + self.collector_fingerprint
        check = hashlib.sha256(body).digest()[:_CHECK_BYTES]
        return TOKEN_PREFIX + base64.urlsafe_b64encode(body + check).decode("ascii").rstrip("=")

    def __repr__(self) -> str:
        return f"RegistrationToken(token_id={self.token_id_text!r}, secret=<hidden>)"


def parse_token(text: str) -> RegistrationToken:
    """Read a token string; a malformed one raises with a reason a person can act on."""
    if type(text) is not str:
        raise _malformed("a token is text")
    text = text.strip()
    if not text.startswith(TOKEN_PREFIX):
        raise _malformed(f"it must start with {TOKEN_PREFIX!r}")
    if len(text) != TOKEN_TEXT_LENGTH:
        raise _malformed(
            f"it is {len(text)} characters long, a token has {TOKEN_TEXT_LENGTH} (truncated paste?)"
        )
    encoded = text[len(TOKEN_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise _malformed("it contains characters outside base64url") from None
    if base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=") != encoded:
        raise _malformed("it contains characters outside base64url")
    body, check = raw[:_BODY_BYTES], raw[_BODY_BYTES:]
    if hashlib.sha256(body).digest()[:_CHECK_BYTES] != check:
        raise _malformed("its checksum does not match (a character was mistyped)")
    return RegistrationToken(
        token_id=body[:TOKEN_ID_BYTES],
        secret=body[TOKEN_ID_BYTES : TOKEN_ID_BYTES + SECRET_BYTES],
        collector_fingerprint=body[TOKEN_ID_BYTES + SECRET_BYTES :],
    )
