"""Hypothesis strategies for every smartlic message, and a few fixed keys to sign them with.

Shared by the protocol tests (imported by module name: pytest puts this folder on sys.path).
Every strategy draws only valid values, so building the message never fails; the constructor
tests draw invalid ones themselves.
"""

from __future__ import annotations

import hashlib
from typing import Final

from hypothesis import strategies as st
from smartlic.protocol import (
    Algorithm,
    Authorization,
    DeregistrationRequest,
    DeregistrationResult,
    ErrorCode,
    ErrorNotice,
    KeyType,
    Message,
    OutOfComplianceNotice,
    RegistrationRequest,
    RegistrationResult,
    RegistrationToken,
    SigningKey,
    TagCompliance,
    Udi,
    UsageReport,
)
from smartlic.protocol.fields import COUNT_MAX, PERIOD_MAX, SEQ_MAX, TIME_MAX, UINT64_MAX


def fixed_key(key_type: KeyType, label: str) -> SigningKey:
    """A deterministic key, so failures reproduce (the seed is a hash of ``label``)."""
    seed = hashlib.sha512(label.encode()).digest()
    return SigningKey.from_seed(key_type, seed[:32] if key_type is KeyType.ED25519 else seed)


DEVICE_ED25519: Final = fixed_key(KeyType.ED25519, "device ed25519")
DEVICE_P256: Final = fixed_key(KeyType.P256, "device p256")
COLLECTOR_ED25519: Final = fixed_key(KeyType.ED25519, "collector ed25519")
COLLECTOR_P256: Final = fixed_key(KeyType.P256, "collector p256")
SIGNING_KEYS: Final = (DEVICE_ED25519, DEVICE_P256, COLLECTOR_ED25519, COLLECTOR_P256)

_ID_CHARS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
_TAG_FIRST: Final = "abcdefghijklmnopqrstuvwxyz0123456789"
_TAG_REST: Final = _TAG_FIRST + "._-"

udis = st.builds(
    Udi,
    product_id=st.text(_ID_CHARS + "/", min_size=1, max_size=40),
    serial=st.text(_ID_CHARS, min_size=1, max_size=40),
)
device_ids = udis.map(lambda udi: udi.device_id)
times = st.integers(0, TIME_MAX)
seqs = st.integers(1, SEQ_MAX)
identifiers = st.binary(min_size=8, max_size=32)
license_tags = st.builds(
    str.__add__,
    st.sampled_from(_TAG_FIRST),
    st.text(_TAG_REST, max_size=63),
)
names = st.text(
    st.characters(exclude_categories=("C", "Z"), include_characters=" "), min_size=1, max_size=128
)
messages_text = st.text(
    st.characters(exclude_categories=("C", "Z"), include_characters=" "), min_size=1, max_size=512
)
tokens = st.builds(
    RegistrationToken,
    token_id=st.binary(min_size=8, max_size=8),
    secret=st.binary(min_size=16, max_size=16),
    collector_fingerprint=st.binary(min_size=32, max_size=32),
).map(str)
verifying_keys = st.sampled_from([key.public for key in SIGNING_KEYS])
in_compliance = st.integers(0, UINT64_MAX).flatmap(
    lambda entitled: st.builds(
        TagCompliance, in_use=st.integers(0, entitled), entitled=st.just(entitled)
    )
)
out_of_compliance = st.integers(0, UINT64_MAX - 1).flatmap(
    lambda entitled: st.builds(
        TagCompliance, in_use=st.integers(entitled + 1, UINT64_MAX), entitled=st.just(entitled)
    )
)


@st.composite
def registration_requests(draw: st.DrawFn) -> RegistrationRequest:
    key = draw(st.sampled_from(SIGNING_KEYS))
    algorithm = (
        Algorithm.ES256
        if key.key_type is KeyType.P256
        else draw(st.sampled_from([Algorithm.ED25519, Algorithm.EDDSA]))
    )
    return RegistrationRequest(
        udi=draw(udis),
        algorithm=algorithm,
        public_key=key.public.raw,
        token=draw(tokens),
        request_id=draw(identifiers),
        issued_at=draw(times),
    )


usage_reports = st.builds(
    UsageReport,
    device_id=device_ids,
    seq=seqs,
    issued_at=times,
    period=st.integers(0, PERIOD_MAX),
    counts=st.dictionaries(license_tags, st.integers(0, COUNT_MAX), max_size=8),
    nonce=st.none() | identifiers,
)
registration_results = st.builds(
    RegistrationResult,
    device_id=device_ids,
    request_id=identifiers,
    notice_seq=seqs,
    issued_at=times,
    smart_account=names,
    virtual_account=names,
    report_interval=st.integers(1, PERIOD_MAX),
    collector_key=verifying_keys,
)


@st.composite
def _compliance_notices(
    draw: st.DrawFn,
    cls: type[Authorization | OutOfComplianceNotice],
    tags: st.SearchStrategy[dict[str, TagCompliance]],
) -> Authorization | OutOfComplianceNotice:
    issued_at = draw(times)
    return cls(
        device_id=draw(device_ids),
        notice_seq=draw(seqs),
        issued_at=issued_at,
        in_reply_to=draw(st.none() | seqs),
        virtual_account=draw(names),
        valid_until=draw(st.integers(issued_at, TIME_MAX)),
        next_report_at=draw(st.integers(issued_at, TIME_MAX)),
        nonce=draw(identifiers),
        tags=draw(tags),
    )


def _with_one_short(tags: dict[str, TagCompliance]) -> st.SearchStrategy[dict[str, TagCompliance]]:
    return st.builds(lambda tag, short: {**tags, tag: short}, license_tags, out_of_compliance)


authorizations = _compliance_notices(
    Authorization, st.dictionaries(license_tags, in_compliance, max_size=6)
)
out_of_compliance_notices = _compliance_notices(
    OutOfComplianceNotice,
    st.dictionaries(license_tags, in_compliance | out_of_compliance, max_size=5).flatmap(
        _with_one_short
    ),
)
error_notices = st.builds(
    ErrorNotice,
    device_id=device_ids,
    notice_seq=seqs,
    issued_at=times,
    in_reply_to=st.none() | seqs | identifiers,
    code=st.sampled_from(ErrorCode),
    message=messages_text,
    collector_key=st.none() | verifying_keys,
)
deregistration_requests = st.builds(
    DeregistrationRequest, device_id=device_ids, request_id=identifiers, issued_at=times
)
deregistration_results = st.builds(
    DeregistrationResult,
    device_id=device_ids,
    request_id=identifiers,
    notice_seq=seqs,
    issued_at=times,
)

MESSAGE_STRATEGIES: Final[dict[str, st.SearchStrategy[Message]]] = {
    "registration_request": registration_requests(),
    "registration_result": registration_results,
    "usage_report": usage_reports,
    "authorization": authorizations,
    "out_of_compliance": out_of_compliance_notices,
    "error_notice": error_notices,
    "deregistration_request": deregistration_requests,
    "deregistration_result": deregistration_results,
}
messages = st.one_of(*MESSAGE_STRATEGIES.values())


def three_tag_report(seq: int = 1) -> UsageReport:
    """The benchmark's and the docs' typical report: a router using three license tags."""
    return UsageReport(
        device_id=Udi(product_id="ISR4331/K9", serial="FDO21520TGH").device_id,
        seq=seq,
        issued_at=1_764_288_000,
        period=86_400,
        counts={"network-advantage": 1, "dna-advantage": 1, "throughput-1g": 1},
        nonce=bytes(range(16)),
    )


def sample_messages() -> list[Message]:
    """A fixed handful of every message type, optional fields present and absent.

    For the mutation fuzzers: drawing fresh messages costs more than mutating known ones, and
    the mutations, not the messages, are what explore the decoders.
    """
    report = three_tag_report()
    token = str(
        RegistrationToken(
            token_id=b"\x01" * 8, secret=b"\x02" * 16, collector_fingerprint=b"\x03" * 32
        )
    )
    notice: dict[str, object] = {
        "device_id": report.device_id,
        "notice_seq": 9,
        "issued_at": 1_764_288_100,
        "virtual_account": "Engineering",
        "valid_until": 1_772_064_100,
        "next_report_at": 1_764_374_500,
        "nonce": b"\x05" * 16,
    }
    return [
        report,
        UsageReport(device_id="C9300~24T:FOC1", seq=2**40, issued_at=0, period=0, counts={}),
        RegistrationRequest(
            udi=Udi(product_id="ISR4331/K9", serial="FDO21520TGH"),
            algorithm=Algorithm.ED25519,
            public_key=DEVICE_ED25519.public.raw,
            token=token,
            request_id=b"\x04" * 16,
            issued_at=1_764_288_000,
        ),
        RegistrationRequest(
            udi=Udi(product_id="C9300-24T", serial="FOC1"),
            algorithm=Algorithm.ES256,
            public_key=DEVICE_P256.public.raw,
            token=token,
            request_id=b"\x04" * 8,
            issued_at=1,
        ),
        RegistrationResult(
            device_id=report.device_id,
            request_id=b"\x04" * 16,
            notice_seq=1,
            issued_at=1_764_288_001,
            smart_account="Acme Corp",
            virtual_account="Engineering",
            report_interval=86_400,
            collector_key=COLLECTOR_ED25519.public,
        ),
        Authorization(
            **notice,  # type: ignore[arg-type]  # the shared notice fields, typed above
            in_reply_to=1,
            tags={"network-advantage": TagCompliance(in_use=40, entitled=50)},
        ),
        OutOfComplianceNotice(
            **notice,  # type: ignore[arg-type]  # the shared notice fields, typed above
            in_reply_to=None,
            tags={
                "network-advantage": TagCompliance(in_use=40, entitled=50),
                "dna-advantage": TagCompliance(in_use=51, entitled=50),
            },
        ),
        ErrorNotice(
            device_id=report.device_id,
            notice_seq=3,
            issued_at=5,
            in_reply_to=b"\x04" * 16,
            code=ErrorCode.TOKEN_EXPIRED,
            message="registration token expired",
            collector_key=COLLECTOR_P256.public,
        ),
        ErrorNotice(
            device_id=report.device_id,
            notice_seq=4,
            issued_at=5,
            in_reply_to=7,
            code=ErrorCode.REPLAYED,
            message="seq 7 was already accepted",
        ),
        DeregistrationRequest(device_id=report.device_id, request_id=b"\x06" * 8, issued_at=9),
        DeregistrationResult(
            device_id=report.device_id, request_id=b"\x06" * 8, notice_seq=10, issued_at=10
        ),
    ]
