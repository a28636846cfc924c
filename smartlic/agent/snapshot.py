"""What the agent keeps across restarts, and its file format.

A :class:`Snapshot` is a plain frozen value; :func:`encode_snapshot` turns it into bytes that
carry their own integrity check, and :func:`decode_snapshot` refuses anything truncated,
corrupted or of another version with a :class:`StateFileError` that says so — never a default
that would silently forget a registration or reuse a report sequence number.

File layout: ``MAGIC`` (8 bytes) | SHA-256 of the body (32) | body (a CBOR map with text keys,
so ``python -m cbor2.tool`` can show it to a person).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, TypeVar

import cbor2

from smartlic.agent.errors import StateFileError
from smartlic.agent.states import LicenseState
from smartlic.agent.timekeeping import Deadline
from smartlic.protocol import KeyType, ProtocolError, Udi, VerifyingKey, fields

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

MAGIC: Final = b"SLAGENT\x01"
_DIGEST_BYTES: Final = 32
FORMAT_VERSION: Final = 1
_T = TypeVar("_T")


class RequestKind(Enum):
    REGISTER = "register"
    DEREGISTER = "deregister"


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingRequest:
    """A (de)registration request sent or to be sent, kept until its answer arrives."""

    kind: RequestKind
    request_id: bytes
    payload: bytes
    """The signed request, re-sent until answered (signed again when stale, with the same id)."""
    fingerprint: bytes | None = None
    """For a registration: the collector fingerprint from the token, to verify the answer."""
    copies: int = 0
    """Copies of ``payload`` sent so far."""
    older_copies: int = 0
    """Copies signed before ``payload`` was (with an older issue time) whose answers are still
    to come: a clock-skew refusal is taken for one of theirs. Kept across a restart, so that the
    refusal of a copy sent before a crash does not end the request."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredReport:
    seq: int
    created_at: float
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredTag:
    in_use: int
    entitled: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """Everything durable about one device agent. Times are wall seconds unless named elapsed."""

    udi: str
    key_fingerprint: bytes
    state: LicenseState = LicenseState.EVALUATION
    clean: bool = True
    """False while an agent runs on this state: after a crash it is still False at restart."""
    use_elapsed: float = 0.0
    evaluation_used: float = 0.0
    next_seq: int = 1
    seq_jumps: int = 0
    last_notice_seq: int = 0
    last_nonce: bytes | None = None
    collector_key: bytes | None = None
    collector_key_type: str | None = None
    smart_account: str | None = None
    virtual_account: str | None = None
    report_interval: int | None = None
    registered_at: float | None = None
    pending: PendingRequest | None = None
    authorization: Deadline | None = None
    next_report: Deadline | None = None
    usage: Mapping[str, int] = field(default_factory=dict)
    reported: Mapping[str, int] = field(default_factory=dict)
    tags: Mapping[str, StoredTag] = field(default_factory=dict)
    last_report_at: float | None = None
    last_answer_at: float | None = None
    outbox: tuple[StoredReport, ...] = ()


def collector_key_from(key_type: str, raw: bytes) -> VerifyingKey:
    """The pinned collector key as a snapshot stores it (key type name, raw public key)."""
    try:
        return VerifyingKey.from_raw(KeyType(key_type), raw)
    except (ValueError, ProtocolError) as exc:
        raise StateFileError(f"the pinned collector key is unusable: {exc}") from None


def _deadline_out(value: Deadline | None) -> list[float] | None:
    return None if value is None else [value.wall, value.elapsed]


def encode_snapshot(snapshot: Snapshot) -> bytes:
    pending = snapshot.pending
    body = cbor2.dumps(
        {
            "version": FORMAT_VERSION,
            "udi": snapshot.udi,
            "key_fingerprint": snapshot.key_fingerprint,
            "state": snapshot.state.value,
            "clean": snapshot.clean,
            "use_elapsed": float(snapshot.use_elapsed),
            "evaluation_used": float(snapshot.evaluation_used),
            "next_seq": snapshot.next_seq,
            "seq_jumps": snapshot.seq_jumps,
            "last_notice_seq": snapshot.last_notice_seq,
            "last_nonce": snapshot.last_nonce,
            "collector_key": snapshot.collector_key,
            "collector_key_type": snapshot.collector_key_type,
            "smart_account": snapshot.smart_account,
            "virtual_account": snapshot.virtual_account,
            "report_interval": snapshot.report_interval,
            "registered_at": snapshot.registered_at,
            "pending": None
            if pending is None
            else [
                pending.kind.value,
                pending.request_id,
                pending.payload,
                pending.fingerprint,
                pending.copies,
                pending.older_copies,
            ],
            "authorization": _deadline_out(snapshot.authorization),
            "next_report": _deadline_out(snapshot.next_report),
            "usage": dict(snapshot.usage),
            "reported": dict(snapshot.reported),
            "tags": {t: [c.in_use, c.entitled] for t, c in snapshot.tags.items()},
            "last_report_at": snapshot.last_report_at,
            "last_answer_at": snapshot.last_answer_at,
            "outbox": [[r.seq, r.created_at, r.payload] for r in snapshot.outbox],
        }
    )
    return MAGIC + hashlib.sha256(body).digest() + body


class _Reader:
    """Typed access to the decoded body; any surprise is a StateFileError naming the field."""

    def __init__(self, body: Mapping[Any, Any], where: str) -> None:
        self.body = body
        self.where = where

    def fail(self, key: str, what: str) -> StateFileError:
        return StateFileError(f"{self.where}: field {key!r} {what}")

    def get(self, key: str, kind: type[_T]) -> _T:
        value = self.opt(key, kind)
        if value is None:
            raise self.fail(key, "is missing")
        return value

    def opt(self, key: str, kind: type[_T]) -> _T | None:
        if key not in self.body:
            raise self.fail(key, "is missing")
        value = self.body[key]
        if value is None:
            return None
        if kind is float and type(value) in {int, float}:
            try:
                value = _time(value)
            except ValueError as exc:
                raise self.fail(key, f"is not a usable time ({exc})") from None
        if type(value) is not kind:
            raise self.fail(key, f"should be {kind.__name__}, is {type(value).__name__}")
        return value  # type was checked just above

    def number(self, key: str, *, low: int = 0, high: int = fields.UINT64_MAX) -> int:
        """A whole number in ``low..high``: what the agent's counters and the protocol allow."""
        value = self.get(key, int)
        if not low <= value <= high:
            raise self.fail(key, f"is {value}, outside {low}..{high}")
        return value

    def convert(self, key: str, fn: Callable[[Any], _T]) -> _T:
        try:
            return fn(self.body.get(key))
        except (
            TypeError,
            ValueError,
            KeyError,
            IndexError,
            AttributeError,
            OverflowError,
            ProtocolError,
        ) as exc:
            raise self.fail(key, f"is malformed ({exc})") from None

    def convert_opt(self, key: str, fn: Callable[[Any], _T]) -> _T | None:
        return None if self.body.get(key) is None else self.convert(key, fn)


def _time(value: float) -> float:
    """A stored time or duration, in seconds: within the protocol's times (0..2**40), as
    every clock reading the agent saves is. Far beyond, a float's step outgrows the seconds
    added to it, and a deadline computed from it would never come or always be due."""
    if type(value) not in {int, float}:
        raise TypeError(f"a time is a number, not {type(value).__name__}")
    if not 0 <= value <= fields.TIME_MAX:
        raise ValueError(f"a time is 0..{fields.TIME_MAX} s, not {value}")
    return float(value)


def _deadline_in(value: Any) -> Deadline:  # noqa: ANN401 -- decoded CBOR, checked here
    wall, elapsed = value
    return Deadline(wall=_time(wall), elapsed=_time(elapsed))


def _counts_in(value: Any) -> dict[str, int]:  # noqa: ANN401 -- decoded CBOR, checked here
    if not isinstance(value, dict):
        raise TypeError("not a map of license tag to count")
    return {
        fields.license_tag(tag): fields.uint(f"the count of {tag}", count, high=fields.COUNT_MAX)
        for tag, count in value.items()
    }


def _udi_in(value: Any) -> str:  # noqa: ANN401 -- decoded CBOR, checked here
    if type(value) is not str:
        raise TypeError(f"a UDI is text, not {type(value).__name__}")
    Udi.parse(value)
    return value


def _interval_in(value: Any) -> int:  # noqa: ANN401 -- decoded CBOR, checked here
    return fields.uint("a report interval", value, low=1, high=fields.PERIOD_MAX)


def _pending_in(value: Any) -> PendingRequest:  # noqa: ANN401 -- decoded CBOR, checked here
    # Files written before the copies were counted hold four items: none counted.
    kind, request_id, payload, fingerprint, *counts = value
    if type(request_id) is not bytes or type(payload) is not bytes:
        raise TypeError("request id and payload are bytes")
    if fingerprint is not None and type(fingerprint) is not bytes:
        raise TypeError("a fingerprint is bytes")
    copies, older_copies = counts or (0, 0)
    if not all(type(n) is int and n >= 0 for n in (copies, older_copies)):
        raise TypeError("the copies sent are counts")
    return PendingRequest(
        kind=RequestKind(kind),
        request_id=request_id,
        payload=payload,
        fingerprint=fingerprint,
        copies=copies,
        older_copies=older_copies,
    )


def _tags_in(value: Any) -> dict[str, StoredTag]:  # noqa: ANN401 -- decoded CBOR, checked here
    return {
        fields.license_tag(t): StoredTag(
            in_use=fields.uint(f"in use of {t}", u), entitled=fields.uint(f"entitled to {t}", e)
        )
        for t, (u, e) in value.items()
    }


def _outbox_in(value: Any) -> tuple[StoredReport, ...]:  # noqa: ANN401 -- decoded CBOR, checked here
    reports = tuple(
        StoredReport(
            seq=fields.uint("a report's seq", s, low=1, high=fields.SEQ_MAX),
            created_at=_time(c),
            payload=p,
        )
        for s, c, p in value
    )
    if any(type(report.payload) is not bytes for report in reports):
        raise TypeError("a report is [seq, created_at, payload bytes]")
    return reports


def decode_snapshot(data: bytes, *, where: str = "state") -> Snapshot:
    """The snapshot in ``data``; :class:`StateFileError` if it is not a whole, intact one."""
    header = len(MAGIC) + _DIGEST_BYTES
    if len(data) < header or not data.startswith(MAGIC):
        if MAGIC.startswith(data[: len(MAGIC)]) and len(data) < header:
            raise StateFileError(f"{where} is truncated ({len(data)} bytes)")
        raise StateFileError(f"{where} is not a smartlic agent state file (wrong magic)")
    digest, body = data[len(MAGIC) : header], data[header:]
    if hashlib.sha256(body).digest() != digest:
        raise StateFileError(f"{where} is corrupted or truncated (checksum mismatch)")
    try:
        decoded = cbor2.loads(body)
    except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
        raise StateFileError(f"{where} does not decode: {exc}") from None
    if not isinstance(decoded, dict):
        raise StateFileError(f"{where} does not hold a map")
    r = _Reader(decoded, where)
    if r.get("version", int) != FORMAT_VERSION:
        raise StateFileError(
            f"{where} has format version {decoded['version']}; this agent reads {FORMAT_VERSION}"
        )
    return Snapshot(
        udi=r.convert("udi", _udi_in),
        key_fingerprint=r.get("key_fingerprint", bytes),
        state=r.convert("state", LicenseState),
        clean=r.get("clean", bool),
        use_elapsed=r.get("use_elapsed", float),
        evaluation_used=r.get("evaluation_used", float),
        next_seq=r.number("next_seq", low=1, high=fields.SEQ_MAX),
        seq_jumps=r.number("seq_jumps"),
        last_notice_seq=r.number("last_notice_seq"),
        last_nonce=r.convert_opt("last_nonce", functools.partial(fields.identifier, "a nonce")),
        collector_key=r.opt("collector_key", bytes),
        collector_key_type=r.opt("collector_key_type", str),
        smart_account=r.opt("smart_account", str),
        virtual_account=r.opt("virtual_account", str),
        report_interval=r.convert_opt("report_interval", _interval_in),
        registered_at=r.opt("registered_at", float),
        pending=r.convert_opt("pending", _pending_in),
        authorization=r.convert_opt("authorization", _deadline_in),
        next_report=r.convert_opt("next_report", _deadline_in),
        usage=r.convert("usage", _counts_in),
        reported=r.convert("reported", _counts_in),
        tags=r.convert("tags", _tags_in),
        last_report_at=r.opt("last_report_at", float),
        last_answer_at=r.opt("last_answer_at", float),
        outbox=r.convert("outbox", _outbox_in),
    )
