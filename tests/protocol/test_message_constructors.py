"""Messages cannot be built invalid: each constructor refuses bad values with the right code."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import TYPE_CHECKING, Any

import cbor2
import pytest
from protocol_strategies import COLLECTOR_ED25519, DEVICE_ED25519, DEVICE_P256, three_tag_report
from smartlic.protocol import (
    Algorithm,
    Authorization,
    ComplianceStatus,
    DeregistrationRequest,
    DeregistrationResult,
    ErrorCode,
    ErrorNotice,
    LocalProtocolError,
    OutOfComplianceNotice,
    RegistrationRequest,
    RegistrationResult,
    RegistrationToken,
    TagCompliance,
    Udi,
    UsageReport,
)
from smartlic.protocol.fields import FrozenMap

if TYPE_CHECKING:
    from collections.abc import Callable

TOKEN = str(RegistrationToken(token_id=b"i" * 8, secret=b"s" * 16, collector_fingerprint=b"f" * 32))


def _report(**changes: Any) -> UsageReport:
    return dataclasses.replace(three_tag_report(), **changes)


def _registration(**changes: Any) -> RegistrationRequest:
    fields: dict[str, Any] = {
        "udi": Udi(product_id="ISR4331/K9", serial="FOC1"),
        "algorithm": Algorithm.ED25519,
        "public_key": DEVICE_ED25519.public.raw,
        "token": TOKEN,
        "request_id": b"r" * 16,
        "issued_at": 10,
    }
    return RegistrationRequest(**{**fields, **changes})


def _notice(cls: type[Authorization | OutOfComplianceNotice], **changes: Any) -> object:
    fields: dict[str, Any] = {
        "device_id": "A:1",
        "notice_seq": 1,
        "issued_at": 100,
        "in_reply_to": None,
        "virtual_account": "default",
        "valid_until": 200,
        "next_report_at": 150,
        "nonce": b"n" * 8,
        "tags": {"net": TagCompliance(in_use=2, entitled=1)}
        if cls is OutOfComplianceNotice
        else {"net": TagCompliance(in_use=1, entitled=1)},
    }
    return cls(**{**fields, **changes})


def _error_notice(**changes: Any) -> ErrorNotice:
    fields: dict[str, Any] = {
        "device_id": "A:1",
        "notice_seq": 1,
        "issued_at": 1,
        "in_reply_to": None,
        "code": ErrorCode.REPLAYED,
        "message": "seq 4 was already accepted",
    }
    return ErrorNotice(**{**fields, **changes})


def _registration_result(**changes: Any) -> RegistrationResult:
    fields: dict[str, Any] = {
        "device_id": "A:1",
        "request_id": b"r" * 8,
        "notice_seq": 1,
        "issued_at": 1,
        "smart_account": "Acme",
        "virtual_account": "default",
        "report_interval": 86400,
        "collector_key": COLLECTOR_ED25519.public,
    }
    return RegistrationResult(**{**fields, **changes})


INVALID: list[tuple[str, Callable[[], object], ErrorCode]] = [
    ("report-seq-zero", lambda: _report(seq=0), ErrorCode.OUT_OF_RANGE),
    ("report-seq-bool", lambda: _report(seq=True), ErrorCode.WRONG_TYPE),
    ("report-seq-float", lambda: _report(seq=1.0), ErrorCode.WRONG_TYPE),
    ("report-issued-at-negative", lambda: _report(issued_at=-1), ErrorCode.OUT_OF_RANGE),
    (
        "report-period-too-long",
        lambda: _report(period=10 * 366 * 86400 + 1),
        ErrorCode.OUT_OF_RANGE,
    ),
    ("report-device-id-bad", lambda: _report(device_id="no serial"), ErrorCode.INVALID_VALUE),
    ("report-device-id-none", lambda: _report(device_id=None), ErrorCode.WRONG_TYPE),
    ("report-counts-list", lambda: _report(counts=[("a", 1)]), ErrorCode.WRONG_TYPE),
    ("report-count-negative", lambda: _report(counts={"a": -1}), ErrorCode.OUT_OF_RANGE),
    ("report-tag-empty", lambda: _report(counts={"": 1}), ErrorCode.INVALID_VALUE),
    ("report-tag-65-chars", lambda: _report(counts={"a" * 65: 1}), ErrorCode.INVALID_VALUE),
    ("report-nonce-short", lambda: _report(nonce=b"1234567"), ErrorCode.OUT_OF_RANGE),
    ("report-nonce-text", lambda: _report(nonce="12345678"), ErrorCode.WRONG_TYPE),
    ("registration-udi-text", lambda: _registration(udi="A:1"), ErrorCode.WRONG_TYPE),
    ("registration-algorithm-int", lambda: _registration(algorithm=-19), ErrorCode.WRONG_TYPE),
    (
        "registration-key-of-other-type",
        lambda: _registration(public_key=DEVICE_P256.public.raw),
        ErrorCode.MALFORMED_KEY,
    ),
    ("registration-token-bad", lambda: _registration(token=TOKEN[:40]), ErrorCode.MALFORMED_TOKEN),
    (
        "registration-token-padded",
        lambda: _registration(token=f" {TOKEN}\n"),
        ErrorCode.MALFORMED_TOKEN,
    ),
    (
        "registration-token-in-wide-spaces",
        lambda: _registration(token=f"\u3000{TOKEN}\u2003"),
        ErrorCode.MALFORMED_TOKEN,
    ),
    (
        "registration-request-id-7",
        lambda: _registration(request_id=b"1234567"),
        ErrorCode.OUT_OF_RANGE,
    ),
    (
        "authorization-with-shortfall",
        lambda: _notice(Authorization, tags={"net": TagCompliance(in_use=2, entitled=1)}),
        ErrorCode.INVALID_VALUE,
    ),
    (
        "out-of-compliance-without-shortfall",
        lambda: _notice(OutOfComplianceNotice, tags={"net": TagCompliance(in_use=1, entitled=1)}),
        ErrorCode.INVALID_VALUE,
    ),
    (
        "notice-valid-until-before-issued",
        lambda: _notice(Authorization, valid_until=99),
        ErrorCode.INVALID_VALUE,
    ),
    (
        "notice-next-report-before-issued",
        lambda: _notice(Authorization, next_report_at=99),
        ErrorCode.INVALID_VALUE,
    ),
    ("notice-seq-zero", lambda: _notice(Authorization, notice_seq=0), ErrorCode.OUT_OF_RANGE),
    (
        "notice-in-reply-to-zero",
        lambda: _notice(Authorization, in_reply_to=0),
        ErrorCode.OUT_OF_RANGE,
    ),
    (
        "notice-tags-plain-ints",
        lambda: _notice(Authorization, tags={"net": 1}),
        ErrorCode.WRONG_TYPE,
    ),
    (
        "notice-virtual-account-empty",
        lambda: _notice(Authorization, virtual_account=""),
        ErrorCode.OUT_OF_RANGE,
    ),
    (
        "tag-compliance-negative",
        lambda: TagCompliance(in_use=-1, entitled=0),
        ErrorCode.OUT_OF_RANGE,
    ),
    ("error-code-int", lambda: _error_notice(code=302), ErrorCode.WRONG_TYPE),
    ("error-message-empty", lambda: _error_notice(message=""), ErrorCode.OUT_OF_RANGE),
    ("error-message-newline", lambda: _error_notice(message="a\nb"), ErrorCode.INVALID_VALUE),
    ("error-message-513", lambda: _error_notice(message="x" * 513), ErrorCode.OUT_OF_RANGE),
    ("error-in-reply-to-short", lambda: _error_notice(in_reply_to=b"1"), ErrorCode.OUT_OF_RANGE),
    (
        "error-collector-key-bytes",
        lambda: _error_notice(collector_key=b"k" * 32),
        ErrorCode.WRONG_TYPE,
    ),
    (
        "result-interval-zero",
        lambda: _registration_result(report_interval=0),
        ErrorCode.OUT_OF_RANGE,
    ),
    (
        "result-smart-account-129",
        lambda: _registration_result(smart_account="a" * 129),
        ErrorCode.OUT_OF_RANGE,
    ),
    (
        "result-collector-key-raw",
        lambda: _registration_result(collector_key=COLLECTOR_ED25519.public.raw),
        ErrorCode.WRONG_TYPE,
    ),
    (
        "deregistration-request-id-none",
        lambda: DeregistrationRequest(device_id="A:1", request_id=None, issued_at=1),  # type: ignore[arg-type]  # the point of the test
        ErrorCode.WRONG_TYPE,
    ),
    (
        "deregistration-result-notice-seq-2-pow-63",
        lambda: DeregistrationResult(
            device_id="A:1", request_id=b"r" * 8, notice_seq=2**63, issued_at=1
        ),
        ErrorCode.OUT_OF_RANGE,
    ),
]


@pytest.mark.parametrize(("build", "code"), [pytest.param(b, c, id=i) for i, b, c in INVALID])
def test_constructor_refuses_invalid_value(build: Callable[[], object], code: ErrorCode) -> None:
    """Building a message with a bad field raises LocalProtocolError: this program erred."""
    with pytest.raises(LocalProtocolError) as caught:
        build()

    assert code == caught.value.code


def test_messages_are_frozen() -> None:
    """A built message cannot be changed into an invalid one afterwards."""
    report = three_tag_report()

    with pytest.raises(dataclasses.FrozenInstanceError):
        report.seq = 0  # type: ignore[misc]  # the point of the test


def test_report_counts_are_frozen_too() -> None:
    """The counts mapping is copied and frozen: mutating the caller's dict changes nothing."""
    counts = {"net": 1}
    report = _report(counts=counts)
    counts["net"] = -5

    assert {"net": 1} == dict(report.counts)
    with pytest.raises(TypeError):
        report.counts["net"] = 2  # type: ignore[index]  # the point of the test


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda m: m.__setitem__("net", 2), id="setitem"),
        pytest.param(lambda m: m.__delitem__("net"), id="delitem"),
        pytest.param(lambda m: m.clear(), id="clear"),
        pytest.param(lambda m: m.pop("net"), id="pop"),
        pytest.param(lambda m: m.popitem(), id="popitem"),
        pytest.param(lambda m: m.setdefault("other", 1), id="setdefault"),
        pytest.param(lambda m: m.update(other=1), id="update"),
        pytest.param(lambda m: m.__ior__({"other": 1}), id="ior"),
    ],
)
def test_a_message_map_refuses_every_change(change: Callable[[Any], object]) -> None:
    """Every way a dict can change is refused, and the map stays as it was built."""
    counts = _report(counts={"net": 1}).counts

    with pytest.raises(TypeError):
        change(counts)
    assert {"net": 1} == counts


def test_a_message_map_is_hashable_like_the_message() -> None:
    """Frozen messages hash; so must their maps (equal maps, equal hashes)."""
    assert hash(_report(counts={"net": 1, "dna": 2})) == hash(_report(counts={"dna": 2, "net": 1}))


def test_a_message_map_survives_copy_and_pickle() -> None:
    """Copies are rebuilt whole, not refilled through the refused __setitem__."""
    counts = _report(counts={"net": 1}).counts

    assert [counts, counts, counts] == [
        copy.copy(counts),
        copy.deepcopy(counts),
        pickle.loads(pickle.dumps(counts)),  # noqa: S301 -- our own bytes, just made
    ]
    assert FrozenMap is type(copy.deepcopy(counts))


def test_a_message_map_encodes_like_the_dict_it_was_made_from() -> None:
    """As CBOR it is a plain map: the wire cannot tell it from a dict."""
    assert cbor2.dumps({"dna": 2, "net": 1}) == cbor2.dumps(FrozenMap({"dna": 2, "net": 1}))


def test_tag_compliance_derives_shortfall_and_status() -> None:
    """Shortfall is in use - entitled when positive, and the status follows from it."""
    short = TagCompliance(in_use=5, entitled=3)
    fine = TagCompliance(in_use=3, entitled=5)

    assert (2, ComplianceStatus.OUT_OF_COMPLIANCE) == (short.shortfall, short.status)
    assert (0, ComplianceStatus.IN_COMPLIANCE) == (fine.shortfall, fine.status)


def test_out_of_compliance_notice_lists_only_short_tags() -> None:
    """out_of_compliance names exactly the tags with a shortfall."""
    notice = _notice(
        OutOfComplianceNotice,
        tags={
            "net": TagCompliance(in_use=2, entitled=1),
            "dna": TagCompliance(in_use=1, entitled=1),
        },
    )

    assert isinstance(notice, OutOfComplianceNotice)
    assert ["net"] == list(notice.out_of_compliance)


def test_registration_request_knows_its_device_and_key() -> None:
    """device_id and verifying_key are derived from the UDI and the public key bytes."""
    request = _registration()

    assert "ISR4331~K9:FOC1" == request.device_id
    assert DEVICE_ED25519.public == request.verifying_key
    assert b"f" * 32 == request.registration_token.collector_fingerprint


def test_error_notice_answers_a_request_id_or_a_seq() -> None:
    """in_reply_to may be a report seq or a request id."""
    assert 4 == _error_notice(in_reply_to=4).in_reply_to
    assert b"r" * 8 == _error_notice(in_reply_to=b"r" * 8).in_reply_to
