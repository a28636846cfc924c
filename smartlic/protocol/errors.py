"""The protocol's errors: who erred, and the wire code that says what went wrong.

Two kinds, after h11: a :class:`LocalProtocolError` means *this* program misused the API
(built a message that cannot exist, asked to sign with a key that does not fit); a
:class:`RemoteProtocolError` means the peer sent something we refuse. The one boundary where
remote bytes enter (the decoders) turns every local validation failure into a remote one, so a
caller that decodes never sees anything but :class:`RemoteProtocolError`.

Every error carries an :class:`ErrorCode`. The same codes travel in error notices, so a device
learns exactly why the collector refused it.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

MAX_ERROR_MESSAGE: Final = 300
"""Longest error message in characters: short enough that any error fits an error notice."""


class ErrorCode(IntEnum):
    """Wire codes. Never renumber: agents in the field know these numbers."""

    # 1xx: the bytes (size, CBOR well-formedness and determinism, RFC 8949 §4.2.1)
    OVERSIZE = 100
    MALFORMED_CBOR = 101
    NOT_DETERMINISTIC = 102
    INDEFINITE_LENGTH = 103
    DUPLICATE_KEY = 104
    TOO_DEEP = 105
    UNSUPPORTED_CBOR = 106

    # 11x: the COSE_Sign1 envelope (RFC 9052 §4.2, §3)
    NOT_COSE_SIGN1 = 110
    BAD_HEADER = 111
    UNSUPPORTED_ALGORITHM = 112
    ALG_NOT_PROTECTED = 113
    BAD_SIGNATURE = 114
    KEY_MISMATCH = 115
    UNKNOWN_CRITICAL_HEADER = 116
    DETACHED_PAYLOAD = 117

    # 2xx: the payload grammar (messages.cddl)
    UNKNOWN_VERSION = 200
    UNKNOWN_MESSAGE_TYPE = 201
    MISSING_FIELD = 202
    WRONG_TYPE = 203
    OUT_OF_RANGE = 204
    UNKNOWN_FIELD = 205
    INVALID_VALUE = 206
    MALFORMED_TOKEN = 210
    MALFORMED_TOPIC = 211
    MALFORMED_KEY = 212

    # 3xx: the collector's decisions, sent to devices in error notices
    UNKNOWN_DEVICE = 300
    WRONG_TOPIC = 301
    REPLAYED = 302
    CLOCK_SKEW = 303
    NOT_REGISTERED = 304
    TOKEN_UNKNOWN = 310
    TOKEN_EXPIRED = 311
    TOKEN_REVOKED = 312
    TOKEN_USED_UP = 313
    TOKEN_HOLDING_ACCOUNT = 314
    PROOF_OF_POSSESSION = 315
    ALREADY_REGISTERED = 316

    # 9xx: the rest
    INVALID_ARGUMENT = 900
    INTERNAL_ERROR = 999


class ProtocolError(Exception):
    """Base of every error the protocol package raises."""

    code: ErrorCode

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(_fit(message))
        self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.name}, {self.message!r})"


class LocalProtocolError(ProtocolError):
    """This program misused the protocol API (e.g. tried to build an invalid message)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent input that the protocol refuses."""


def as_remote(error: LocalProtocolError) -> RemoteProtocolError:
    """The same complaint, blamed on the peer: used where remote input was being validated."""
    return RemoteProtocolError(error.code, error.message)


def _fit(message: str) -> str:
    """``message`` made printable and cut to :data:`MAX_ERROR_MESSAGE` characters.

    Messages quote remote input (a topic, a header label, a license tag), and a collector sends
    them back in an :class:`~smartlic.protocol.ErrorNotice`, whose text must be printable and
    at most 512 characters: bounding them here means refusing bad input can never fail.
    """
    text = "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in message)
    if len(text) > MAX_ERROR_MESSAGE:
        text = text[: MAX_ERROR_MESSAGE - 1] + "…"
    return text
