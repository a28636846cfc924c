"""Hostile messages, and the ledger that proves each one was refused.

A share of the fleet's devices turns hostile (a compromised or broken device: it holds its own
key, and the broker has no ACL stopping it from publishing on other topics). Each builder
below returns a :class:`HostileMessage` — topic, bytes, and what the collector must do with it:

==============  ===========================================================  ==================
kind            what                                                         refused with
==============  ===========================================================  ==================
forged          a report for the device, signed by a key it never registered  BAD_SIGNATURE
tampered        a validly signed report whose payload was changed after       BAD_SIGNATURE
replayed        a report reusing a sequence number already accepted, with     REPLAYED
                other counts (signed with the device's own key)
skewed          a fresh report dated days away from the collector's clock     CLOCK_SKEW
oversize        a signed report padded past the 4 KiB message limit           OVERSIZE
wrong_topic     the device's own signed report published on another           WRONG_TOPIC
                device's uplink
garbage         random bytes                                                  any 1xx/2xx code
forged_notice   an authorization for another device, signed by the hostile    (the *device*
                device, published on that device's downlink                   ignores it)
==============  ===========================================================  ==================

Reports that should never count carry sequence numbers from :data:`HOSTILE_SEQ_BASE` up, far
above any a real core reaches, so an answer naming one is unambiguously an answer to a hostile
message, and a collector that accepted one would refuse the device's later honest reports —
which the run's other checks would catch too. An exact copy of an accepted report is not in
the list: SPEC §4 answers it with the stored answer, and the fleet's own re-sends after an
outage or a storm exercise that already.

The :class:`HostileLedger` decides afterwards, from the collector's committed state: a hostile
message was refused when the collector kept it as a dead letter (same topic, same bytes) with
an expected code and nothing answered it with anything but an error notice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Final

import cbor2

from smartlic.protocol import (
    Authorization,
    CollectorMessage,
    ErrorCode,
    ErrorNotice,
    KeyType,
    ProtocolError,
    SigningKey,
    TagCompliance,
    UsageReport,
    encode_payload,
    open_message,
    parse_sign1,
    seal,
)
from smartlic.protocol import cbor as wire
from smartlic.protocol.cbor import MAX_MESSAGE_BYTES
from smartlic.protocol.cose import COSE_SIGN1_TAG

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from smartlic.protocol import Topics

HOSTILE_SEQ_BASE: Final = 1 << 40
FORGED_NOTICE_SEQ_BASE: Final = 1 << 40
_DAY: Final = 86_400
_GARBAGE_CODES: Final = frozenset(c for c in ErrorCode if c < ErrorCode.UNKNOWN_DEVICE)


class HostileKind(StrEnum):
    FORGED = "forged"
    TAMPERED = "tampered"
    REPLAYED = "replayed"
    SKEWED = "skewed"
    OVERSIZE = "oversize"
    WRONG_TOPIC = "wrong_topic"
    GARBAGE = "garbage"
    FORGED_NOTICE = "forged_notice"


EXPECTED_CODES: Final[Mapping[HostileKind, frozenset[ErrorCode]]] = {
    HostileKind.FORGED: frozenset({ErrorCode.BAD_SIGNATURE, ErrorCode.KEY_MISMATCH}),
    HostileKind.TAMPERED: frozenset({ErrorCode.BAD_SIGNATURE}),
    HostileKind.REPLAYED: frozenset({ErrorCode.REPLAYED}),
    HostileKind.SKEWED: frozenset({ErrorCode.CLOCK_SKEW}),
    HostileKind.OVERSIZE: frozenset({ErrorCode.OVERSIZE}),
    HostileKind.WRONG_TOPIC: frozenset({ErrorCode.WRONG_TOPIC}),
    HostileKind.GARBAGE: _GARBAGE_CODES,
    HostileKind.FORGED_NOTICE: frozenset(),
}
"""The refusal codes the collector may give each kind (a forged notice never reaches it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HostileMessage:
    kind: HostileKind
    sender: str
    """The hostile device's id."""
    target: str
    """The device whose topic it is published on (the sender, or a victim)."""
    topic: str
    payload: bytes
    seq: int | None = None
    """The report sequence number it carries, when readable."""
    notice_seq: int | None = None
    """For a forged notice: the notice sequence number it claims."""

    @property
    def expected(self) -> frozenset[ErrorCode]:
        return EXPECTED_CODES[self.kind]


def _report(
    device_id: str, seq: int, counts: Mapping[str, int], now: float, *, issued_at: int | None = None
) -> UsageReport:
    return UsageReport(
        device_id=device_id,
        seq=seq,
        issued_at=int(now) if issued_at is None else issued_at,
        period=0,
        counts=dict(counts),
    )


def forged_report(
    *,
    device_id: str,
    seq: int,
    counts: Mapping[str, int],
    now: float,
    topics: Topics,
    entropy: Callable[[int], bytes],
) -> HostileMessage:
    impostor = SigningKey.from_seed(KeyType.ED25519, entropy(32))
    return HostileMessage(
        kind=HostileKind.FORGED,
        sender=device_id,
        target=device_id,
        topic=topics.uplink(device_id),
        payload=seal(_report(device_id, seq, counts, now), impostor),
        seq=seq,
    )


def tampered_report(
    *,
    key: SigningKey,
    device_id: str,
    seq: int,
    counts: Mapping[str, int],
    now: float,
    topics: Topics,
) -> HostileMessage:
    """Signed with the device's key, then the counts changed under the signature."""
    signed = parse_sign1(seal(_report(device_id, seq, counts, now), key))
    bigger = {tag: n + 1000 for tag, n in counts.items()} or {"tampered": 1000}
    payload = encode_payload(_report(device_id, seq, bigger, now))
    forged = wire.encode(
        cbor2.CBORTag(
            COSE_SIGN1_TAG,
            [signed.protected, dict(signed.unprotected_header), payload, signed.signature],
        )
    )
    return HostileMessage(
        kind=HostileKind.TAMPERED,
        sender=device_id,
        target=device_id,
        topic=topics.uplink(device_id),
        payload=forged,
        seq=seq,
    )


def replayed_report(
    *,
    key: SigningKey,
    device_id: str,
    accepted_seq: int,
    counts: Mapping[str, int],
    now: float,
    topics: Topics,
) -> HostileMessage:
    """A report reusing ``accepted_seq`` (already accepted) with other counts."""
    other = {tag: n + 7 for tag, n in counts.items()} or {"replayed": 7}
    return HostileMessage(
        kind=HostileKind.REPLAYED,
        sender=device_id,
        target=device_id,
        topic=topics.uplink(device_id),
        payload=seal(_report(device_id, accepted_seq, other, now), key),
        seq=accepted_seq,
    )


def skewed_report(
    *,
    key: SigningKey,
    device_id: str,
    seq: int,
    counts: Mapping[str, int],
    now: float,
    skew: float,
    topics: Topics,
) -> HostileMessage:
    """Dated ``skew`` seconds in the past (pick it well outside the collector's window)."""
    issued_at = max(0, int(now - skew))
    return HostileMessage(
        kind=HostileKind.SKEWED,
        sender=device_id,
        target=device_id,
        topic=topics.uplink(device_id),
        payload=seal(_report(device_id, seq, counts, now, issued_at=issued_at), key),
        seq=seq,
    )


def oversize_report(
    *,
    key: SigningKey,
    device_id: str,
    seq: int,
    counts: Mapping[str, int],
    now: float,
    topics: Topics,
    size: int = MAX_MESSAGE_BYTES + 1024,
) -> HostileMessage:
    """A validly signed report with an unprotected header padded past the size limit."""
    signed = parse_sign1(seal(_report(device_id, seq, counts, now), key))
    padded = wire.encode(
        cbor2.CBORTag(
            COSE_SIGN1_TAG,
            [
                signed.protected,
                {**signed.unprotected_header, -65537: bytes(size)},
                signed.payload,
                signed.signature,
            ],
        )
    )
    return HostileMessage(
        kind=HostileKind.OVERSIZE,
        sender=device_id,
        target=device_id,
        topic=topics.uplink(device_id),
        payload=padded,
        seq=seq,
    )


def wrong_topic_report(
    *,
    key: SigningKey,
    device_id: str,
    victim: str,
    seq: int,
    counts: Mapping[str, int],
    now: float,
    topics: Topics,
) -> HostileMessage:
    return HostileMessage(
        kind=HostileKind.WRONG_TOPIC,
        sender=device_id,
        target=victim,
        topic=topics.uplink(victim),
        payload=seal(_report(device_id, seq, counts, now), key),
        seq=seq,
    )


def garbage(
    *, device_id: str, topics: Topics, entropy: Callable[[int], bytes], size: int = 64
) -> HostileMessage:
    return HostileMessage(
        kind=HostileKind.GARBAGE,
        sender=device_id,
        target=device_id,
        topic=topics.uplink(device_id),
        payload=entropy(size),
    )


def forged_notice(
    *,
    key: SigningKey,
    device_id: str,
    victim: str,
    notice_seq: int,
    now: float,
    topics: Topics,
) -> HostileMessage:
    """A pushed authorization for ``victim`` signed by the hostile device, not the collector."""
    issued = int(now)
    notice = Authorization(
        device_id=victim,
        notice_seq=notice_seq,
        issued_at=issued,
        in_reply_to=None,
        virtual_account="forged",
        valid_until=issued + 3650 * _DAY,
        next_report_at=issued + 3650 * _DAY,
        nonce=hashlib.sha256(victim.encode()).digest()[:16],
        tags={"network-advantage": TagCompliance(in_use=1, entitled=1_000_000)},
    )
    return HostileMessage(
        kind=HostileKind.FORGED_NOTICE,
        sender=device_id,
        target=victim,
        topic=topics.downlink(victim),
        payload=seal(notice, key),
        notice_seq=notice_seq,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterRow:
    """A refused message as the collector keeps it."""

    topic: str
    payload: bytes
    code: int | None


@dataclass(slots=True)
class HostileLedger:
    """Every hostile message sent, and what came back for it."""

    sent: list[HostileMessage] = field(default_factory=list)
    answered_ok: set[tuple[str, int]] = field(default_factory=set)
    """(device, seq) of hostile reports answered with something other than an error."""
    refusal_codes: dict[tuple[str, int], ErrorCode] = field(default_factory=dict)
    _by_seq: dict[tuple[str, int], HostileMessage] = field(default_factory=dict)

    def record(self, message: HostileMessage) -> None:
        self.sent.append(message)
        if message.seq is not None and message.seq >= HOSTILE_SEQ_BASE:
            self._by_seq[message.target, message.seq] = message

    @property
    def watched(self) -> frozenset[str]:
        """Devices whose downlink may carry an answer to a hostile message."""
        return frozenset(m.target for m in self.sent)

    def observe(self, device_id: str, payload: bytes) -> None:
        """A message on ``device_id``'s downlink: is it an answer to a hostile report?"""
        try:
            message = open_message(payload).message
        except ProtocolError:
            return
        if not isinstance(message, CollectorMessage):
            return
        reply_to = getattr(message, "in_reply_to", None)
        if not isinstance(reply_to, int) or (device_id, reply_to) not in self._by_seq:
            return
        if isinstance(message, ErrorNotice):
            self.refusal_codes[device_id, reply_to] = message.code
        else:
            self.answered_ok.add((device_id, reply_to))

    def verdicts(
        self,
        dead_letters: Iterable[DeadLetterRow],
        *,
        notice_seqs: Mapping[str, int],
    ) -> dict[HostileKind, tuple[int, int]]:
        """Per kind: (sent, accepted). ``notice_seqs``: each victim's last applied notice_seq.

        A message to the collector counts as accepted unless a dead letter holds its exact
        topic and bytes with one of the codes its kind expects, and nothing answered it
        other than with an error notice. A forged notice counts as accepted when its victim
        applied a notice_seq at or above the forged one.
        """
        letters: dict[tuple[str, bytes], set[int | None]] = {}
        for row in dead_letters:
            letters.setdefault((row.topic, row.payload), set()).add(row.code)
        result: dict[HostileKind, tuple[int, int]] = {}
        for message in self.sent:
            sent, accepted = result.get(message.kind, (0, 0))
            result[message.kind] = (
                sent + 1,
                accepted + (not self._refused(message, letters, notice_seqs)),
            )
        return result

    def _refused(
        self,
        message: HostileMessage,
        letters: Mapping[tuple[str, bytes], set[int | None]],
        notice_seqs: Mapping[str, int],
    ) -> bool:
        if message.kind is HostileKind.FORGED_NOTICE:
            applied = notice_seqs.get(message.target, 0)
            return message.notice_seq is not None and applied < message.notice_seq
        if message.seq is not None and (message.target, message.seq) in self.answered_ok:
            return False
        codes = letters.get((message.topic, message.payload), set())
        return any(code is not None and code in message.expected for code in codes)
