"""The smartlic messages, as frozen dataclasses that cannot be built invalid.

Every constructor checks its fields (``fields.py``) and the rules that tie fields together
(an authorization has no tag out of compliance, a shortfall is in use minus entitled, ...);
violations raise :class:`LocalProtocolError`. The wire form is in ``codec.py`` and the grammar
in ``messages.cddl``.

Device → collector: :class:`RegistrationRequest`, :class:`UsageReport`,
:class:`DeregistrationRequest`. Collector → device (all signed by the collector):
:class:`RegistrationResult`, :class:`Authorization`, :class:`OutOfComplianceNotice`,
:class:`ErrorNotice`, :class:`DeregistrationResult`. Every collector message carries the
device's ``notice_seq``, which only grows, so a device can tell a fresh notice from a replayed one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Final, TypeAlias

from smartlic.protocol import fields
from smartlic.protocol.cose import Algorithm
from smartlic.protocol.errors import ErrorCode, LocalProtocolError
from smartlic.protocol.identity import Udi, check_device_id
from smartlic.protocol.keys import VerifyingKey
from smartlic.protocol.tokens import RegistrationToken, parse_token

if TYPE_CHECKING:
    from collections.abc import Mapping

PROTOCOL_VERSION: Final = 1


class MessageType(IntEnum):
    REGISTRATION_REQUEST = 1
    REGISTRATION_RESULT = 2
    USAGE_REPORT = 3
    AUTHORIZATION = 4
    OUT_OF_COMPLIANCE = 5
    ERROR_NOTICE = 6
    DEREGISTRATION_REQUEST = 7
    DEREGISTRATION_RESULT = 8


class ComplianceStatus(IntEnum):
    IN_COMPLIANCE = 0
    OUT_OF_COMPLIANCE = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class TagCompliance:
    """One license tag's standing in the device's virtual account (SPEC §3)."""

    in_use: int
    entitled: int
    shortfall: int = field(init=False, compare=False)
    """In use beyond what is entitled (0 when in compliance)."""
    status: ComplianceStatus = field(init=False, compare=False)

    def __post_init__(self) -> None:
        fields.uint("in_use", self.in_use, high=fields.UINT64_MAX)
        fields.uint("entitled", self.entitled, high=fields.UINT64_MAX)
        # Derived once: every notice reads them several times (encoding, its kind's rule).
        shortfall = max(0, self.in_use - self.entitled)
        object.__setattr__(self, "shortfall", shortfall)
        object.__setattr__(
            self,
            "status",
            ComplianceStatus.OUT_OF_COMPLIANCE if shortfall else ComplianceStatus.IN_COMPLIANCE,
        )


def _device(message: object) -> None:
    check_device_id(getattr(message, "device_id", None))


def _collector_key(value: object) -> None:
    if not isinstance(value, VerifyingKey):
        raise LocalProtocolError(ErrorCode.WRONG_TYPE, "collector_key must be a VerifyingKey")


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationRequest:
    """A device asks to join the virtual account its token names.

    The envelope must be signed by ``public_key`` itself: that is the proof of possession.
    """

    udi: Udi
    algorithm: Algorithm
    public_key: bytes
    token: str = field(repr=False)
    """Not in the repr: its secret would end up in logs and tracebacks."""
    request_id: bytes
    issued_at: int
    message_type: MessageType = field(default=MessageType.REGISTRATION_REQUEST, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.udi, Udi):
            raise LocalProtocolError(ErrorCode.WRONG_TYPE, "udi must be a Udi")
        if not isinstance(self.algorithm, Algorithm):
            raise LocalProtocolError(ErrorCode.WRONG_TYPE, "algorithm must be an Algorithm")
        fields.bstr("public_key", self.public_key, low=32, high=65)
        VerifyingKey.from_raw(self.algorithm.key_type, self.public_key)
        if str(parse_token(self.token)) != self.token:
            # parse_token forgives the spaces of a paste; the wire carries the token exactly
            # (CDDL: tstr .regexp "slt1_[A-Za-z0-9_-]{80}").
            raise LocalProtocolError(
                ErrorCode.MALFORMED_TOKEN,
                "malformed registration token: it has spaces or line breaks around it",
            )
        fields.identifier("request_id", self.request_id)
        fields.timestamp("issued_at", self.issued_at)

    @property
    def device_id(self) -> str:
        return self.udi.device_id

    @property
    def verifying_key(self) -> VerifyingKey:
        return VerifyingKey.from_raw(self.algorithm.key_type, self.public_key)

    @property
    def registration_token(self) -> RegistrationToken:
        return parse_token(self.token)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationResult:
    """The collector accepted a registration; the device now belongs to ``virtual_account``."""

    device_id: str
    request_id: bytes
    notice_seq: int
    issued_at: int
    smart_account: str
    virtual_account: str
    report_interval: int
    collector_key: VerifyingKey
    """The collector's public key; the device checks it against its token's fingerprint."""
    message_type: MessageType = field(default=MessageType.REGISTRATION_RESULT, init=False)

    def __post_init__(self) -> None:
        _device(self)
        fields.identifier("request_id", self.request_id)
        fields.uint("notice_seq", self.notice_seq, low=1, high=fields.SEQ_MAX)
        fields.timestamp("issued_at", self.issued_at)
        fields.name("smart_account", self.smart_account)
        fields.name("virtual_account", self.virtual_account)
        fields.uint("report_interval", self.report_interval, low=1, high=fields.PERIOD_MAX)
        _collector_key(self.collector_key)


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageReport:
    """What a device uses now: per license tag, a count (SPEC §3 sums the latest ones)."""

    device_id: str
    seq: int
    issued_at: int
    period: int
    counts: Mapping[str, int]
    nonce: bytes | None = None
    message_type: MessageType = field(default=MessageType.USAGE_REPORT, init=False)

    def __post_init__(self) -> None:
        _device(self)
        fields.uint("seq", self.seq, low=1, high=fields.SEQ_MAX)
        fields.timestamp("issued_at", self.issued_at)
        fields.uint("period", self.period, high=fields.PERIOD_MAX)
        counts = fields.tag_map(
            "counts",
            self.counts,
            lambda tag, n: fields.uint(f"count of {tag}", n, high=fields.COUNT_MAX),
        )
        object.__setattr__(self, "counts", counts)
        if self.nonce is not None:
            fields.identifier("nonce", self.nonce)


@dataclass(frozen=True, slots=True, kw_only=True)
class _ComplianceNotice:
    device_id: str
    notice_seq: int
    issued_at: int
    in_reply_to: int | None
    """The ``seq`` of the report this answers; ``None`` when the collector pushed it."""
    virtual_account: str
    valid_until: int
    next_report_at: int
    nonce: bytes
    tags: Mapping[str, TagCompliance]

    def __post_init__(self) -> None:
        _device(self)
        fields.uint("notice_seq", self.notice_seq, low=1, high=fields.SEQ_MAX)
        fields.timestamp("issued_at", self.issued_at)
        if self.in_reply_to is not None:
            fields.uint("in_reply_to", self.in_reply_to, low=1, high=fields.SEQ_MAX)
        fields.name("virtual_account", self.virtual_account)
        fields.timestamp("valid_until", self.valid_until)
        fields.timestamp("next_report_at", self.next_report_at)
        if self.valid_until < self.issued_at or self.next_report_at < self.issued_at:
            raise LocalProtocolError(
                ErrorCode.INVALID_VALUE, "valid_until and next_report_at cannot precede issued_at"
            )
        fields.identifier("nonce", self.nonce)
        object.__setattr__(self, "tags", fields.tag_map("tags", self.tags, _tag_compliance))

    @property
    def out_of_compliance(self) -> dict[str, TagCompliance]:
        return {
            t: c for t, c in self.tags.items() if c.status is ComplianceStatus.OUT_OF_COMPLIANCE
        }


def _tag_compliance(tag: str, value: object) -> TagCompliance:
    if not isinstance(value, TagCompliance):
        raise LocalProtocolError(ErrorCode.WRONG_TYPE, f"compliance of {tag} must be TagCompliance")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Authorization(_ComplianceNotice):
    """Every tag the device uses is within its virtual account's licenses."""

    message_type: MessageType = field(default=MessageType.AUTHORIZATION, init=False)

    def __post_init__(self) -> None:
        super(Authorization, self).__post_init__()
        if any(c.shortfall for c in self.tags.values()):
            raise LocalProtocolError(
                ErrorCode.INVALID_VALUE,
                "an authorization cannot carry tags out of compliance: "
                f"{sorted(self.out_of_compliance)}",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class OutOfComplianceNotice(_ComplianceNotice):
    """At least one tag the device uses is short of licenses in its virtual account."""

    message_type: MessageType = field(default=MessageType.OUT_OF_COMPLIANCE, init=False)

    def __post_init__(self) -> None:
        super(OutOfComplianceNotice, self).__post_init__()
        if not any(c.shortfall for c in self.tags.values()):
            raise LocalProtocolError(
                ErrorCode.INVALID_VALUE, "an out-of-compliance notice needs a tag out of compliance"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorNotice:
    """The collector refused something the device sent; ``code`` says why."""

    device_id: str
    notice_seq: int
    issued_at: int
    in_reply_to: int | bytes | None
    """A report's ``seq``, a request's ``request_id``, or ``None``."""
    code: ErrorCode
    message: str
    collector_key: VerifyingKey | None = None
    """Set when refusing a registration, so a device without a pinned key can verify it."""
    message_type: MessageType = field(default=MessageType.ERROR_NOTICE, init=False)

    def __post_init__(self) -> None:
        _device(self)
        fields.uint("notice_seq", self.notice_seq, low=1, high=fields.SEQ_MAX)
        fields.timestamp("issued_at", self.issued_at)
        if isinstance(self.in_reply_to, bytes):
            fields.identifier("in_reply_to", self.in_reply_to)
        elif self.in_reply_to is not None:
            fields.uint("in_reply_to", self.in_reply_to, low=1, high=fields.SEQ_MAX)
        if not isinstance(self.code, ErrorCode):
            raise LocalProtocolError(ErrorCode.WRONG_TYPE, "code must be an ErrorCode")
        fields.text("message", self.message, low=1)
        if self.collector_key is not None:
            _collector_key(self.collector_key)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeregistrationRequest:
    """A device leaves its virtual account and stops consuming licenses."""

    device_id: str
    request_id: bytes
    issued_at: int
    message_type: MessageType = field(default=MessageType.DEREGISTRATION_REQUEST, init=False)

    def __post_init__(self) -> None:
        _device(self)
        fields.identifier("request_id", self.request_id)
        fields.timestamp("issued_at", self.issued_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeregistrationResult:
    device_id: str
    request_id: bytes
    notice_seq: int
    issued_at: int
    message_type: MessageType = field(default=MessageType.DEREGISTRATION_RESULT, init=False)

    def __post_init__(self) -> None:
        _device(self)
        fields.identifier("request_id", self.request_id)
        fields.uint("notice_seq", self.notice_seq, low=1, high=fields.SEQ_MAX)
        fields.timestamp("issued_at", self.issued_at)


DeviceMessage: TypeAlias = RegistrationRequest | UsageReport | DeregistrationRequest
CollectorMessage: TypeAlias = (
    RegistrationResult | Authorization | OutOfComplianceNotice | ErrorNotice | DeregistrationResult
)
ComplianceNotice: TypeAlias = Authorization | OutOfComplianceNotice
Message: TypeAlias = DeviceMessage | CollectorMessage
