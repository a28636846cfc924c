"""smartlic's wire protocol: signed CBOR messages in COSE_Sign1, sans-I/O.

Nothing here opens a socket or a file, reads a clock, draws randomness or logs: callers pass
``now`` and random bytes in. Remote input enters through :func:`open_message` (and the lower
:func:`parse_sign1`, :func:`decode_payload`) and leaves as a message or a
:class:`RemoteProtocolError` carrying a wire :class:`ErrorCode`, never as anything else.
"""

from __future__ import annotations

from smartlic.protocol.codec import decode_payload, encode_payload
from smartlic.protocol.cose import Algorithm, Sign1, parse_sign1, sign1
from smartlic.protocol.envelope import Opened, device_aad, open_message, seal
from smartlic.protocol.errors import (
    ErrorCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from smartlic.protocol.identity import Udi
from smartlic.protocol.keys import KeyType, SigningKey, VerifyingKey, format_fingerprint
from smartlic.protocol.messages import (
    PROTOCOL_VERSION,
    Authorization,
    CollectorMessage,
    ComplianceNotice,
    ComplianceStatus,
    DeregistrationRequest,
    DeregistrationResult,
    DeviceMessage,
    ErrorNotice,
    Message,
    MessageType,
    OutOfComplianceNotice,
    RegistrationRequest,
    RegistrationResult,
    TagCompliance,
    UsageReport,
)
from smartlic.protocol.tokens import RegistrationToken, parse_token
from smartlic.protocol.topics import Topics

__all__ = [
    "PROTOCOL_VERSION",
    "Algorithm",
    "Authorization",
    "CollectorMessage",
    "ComplianceNotice",
    "ComplianceStatus",
    "DeregistrationRequest",
    "DeregistrationResult",
    "DeviceMessage",
    "ErrorCode",
    "ErrorNotice",
    "KeyType",
    "LocalProtocolError",
    "Message",
    "MessageType",
    "Opened",
    "OutOfComplianceNotice",
    "ProtocolError",
    "RegistrationRequest",
    "RegistrationResult",
    "RegistrationToken",
    "RemoteProtocolError",
    "Sign1",
    "SigningKey",
    "TagCompliance",
    "Topics",
    "Udi",
    "UsageReport",
    "VerifyingKey",
    "decode_payload",
    "device_aad",
    "encode_payload",
    "format_fingerprint",
    "open_message",
    "parse_sign1",
    "parse_token",
    "seal",
    "sign1",
]
