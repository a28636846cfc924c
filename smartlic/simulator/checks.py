"""The run's verdicts: reports lost, reports double-counted, committed state gone stale.

Pure functions over two sets of facts: what every device sent and was told (kept by the fleet
beside each core) and what the collector committed (read from its store after the run,
:class:`Committed`). The definitions, also in ``docs/simulator.md``:

**Lost.** The reports that count are those a device first sent before the drain began. One is
*lost* when no answer to it — nor to a newer report of the same device, which retires it (every
report states the device's whole usage, and the collector would refuse the older one as a
replay once the newer is accepted) — arrived by the end of the drain. Reports the device
dropped itself because it was deregistered are *abandoned*, not lost.

**Double-counted.** The collector's committed state disagreeing with what the devices sent,
counted as the sum of:

* *phantom reports*: accepted-report rows of a device for a sequence number it never sent, or
  whose payload digest is not that of the report it sent with that number;
* *unrecorded answers*: reports a device saw accepted (an authorization or an
  out-of-compliance notice answering it) with no accepted-report row;
* *device mismatches*: devices whose committed counts are not the merge, in sequence order, of
  the counts of their accepted reports (SPEC §3: a report sets the tags it names, a zero
  removes one), or that still have counts although deregistered;
* *pool mismatches*: pools whose in-use counter is not the sum of those counts over the devices
  registered in the VA (where the simulator put them).

**Stale usage** (also a failure): registered devices whose committed counts are not their
usage at the end, after the drain — a change the collector never got.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from smartlic.simulator.hostile import DeadLetterRow

_EXAMPLES: Final = 10


def merge_counts(previous: Mapping[str, int], reported: Mapping[str, int]) -> dict[str, int]:
    """A device's counts after a report: the tags it names are set, zeros dropped."""
    merged = {**previous, **reported}
    return {tag: n for tag, n in merged.items() if n > 0}


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceFacts:
    """What one device sent and was told, as the fleet recorded it."""

    device_id: str
    registered: bool
    va: str
    usage: Mapping[str, int]
    sent: Mapping[int, tuple[int, Mapping[str, int]]]
    """seq -> (first 8 bytes of the payload's SHA-256, counts)."""
    answered: frozenset[int]
    """Reports answered with an authorization or an out-of-compliance notice."""
    max_answered: int
    """The newest report answered at all (error notices included)."""
    abandoned: frozenset[int] = frozenset()
    mark: int | None = None
    """The newest report sent before the drain; ``None``: every report counts."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Committed:
    """The collector's committed state for one smart account's devices."""

    reports: dict[str, dict[int, int]] = field(default_factory=dict)
    """device id -> accepted seq -> the first 8 bytes of the payload's SHA-256."""
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    vas: dict[str, str] = field(default_factory=dict)
    pools: dict[tuple[str, str], int] = field(default_factory=dict)
    """(VA, tag) -> in use, for the account's pools."""
    dead_letters: list[DeadLetterRow] = field(default_factory=list)


@dataclass(slots=True)
class Verdict:
    lost: int = 0
    phantom_reports: int = 0
    unrecorded_answers: int = 0
    device_mismatches: int = 0
    pool_mismatches: int = 0
    stale_usage: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def double_counted(self) -> int:
        return (
            self.phantom_reports
            + self.unrecorded_answers
            + self.device_mismatches
            + self.pool_mismatches
        )

    def note(self, text: str) -> None:
        if len(self.examples) < _EXAMPLES:
            self.examples.append(text)

    def detail(self) -> dict[str, int]:
        return {
            "phantom_reports": self.phantom_reports,
            "unrecorded_answers": self.unrecorded_answers,
            "device_mismatches": self.device_mismatches,
            "pool_mismatches": self.pool_mismatches,
        }


def lost_reports(facts: DeviceFacts) -> list[int]:
    """The device's reports sent before the drain and never answered, nor retired."""
    return sorted(
        seq
        for seq in facts.sent
        if (facts.mark is None or seq <= facts.mark)
        and seq > facts.max_answered
        and seq not in facts.abandoned
    )


def expected_counts(facts: DeviceFacts, accepted: Iterable[int]) -> dict[str, int]:
    """The counts the collector should hold after accepting ``accepted`` of these reports."""
    counts: dict[str, int] = {}
    for seq in sorted(accepted):
        if seq in facts.sent:
            counts = merge_counts(counts, facts.sent[seq][1])
    return counts


def judge(facts: Iterable[DeviceFacts], committed: Committed | None) -> Verdict:
    """Lost always; the rest only when the committed state could be read."""
    verdict = Verdict()
    devices = list(facts)
    for device in devices:
        lost = lost_reports(device)
        verdict.lost += len(lost)
        if lost:
            verdict.note(f"{device.device_id}: reports {lost[:5]} never answered")
    if committed is None:
        return verdict
    expected_pools: Counter[tuple[str, str]] = Counter()
    for device in devices:
        expected = _check_device(device, committed, verdict)
        if device.registered:
            for tag, n in expected.items():
                expected_pools[device.va, tag] += n
    for pool in sorted(set(committed.pools) | set(expected_pools)):
        actual_in_use, expected_in_use = committed.pools.get(pool, 0), expected_pools[pool]
        if actual_in_use != expected_in_use:
            verdict.pool_mismatches += 1
            verdict.note(f"pool {pool}: in use {actual_in_use}, devices sum to {expected_in_use}")
    return verdict


def _check_device(device: DeviceFacts, committed: Committed, verdict: Verdict) -> dict[str, int]:
    """Check one device's rows and counts; the counts it should have."""
    rows = committed.reports.get(device.device_id, {})
    _check_rows(device, rows, verdict)
    expected = expected_counts(device, rows) if device.registered else {}
    actual = committed.counts.get(device.device_id, {})
    if expected != actual:
        verdict.device_mismatches += 1
        verdict.note(f"{device.device_id}: committed {actual}, reports say {expected}")
    if device.registered and actual != {t: n for t, n in device.usage.items() if n > 0}:
        verdict.stale_usage += 1
        verdict.note(f"{device.device_id}: committed {actual}, uses {dict(device.usage)}")
    return expected


def _check_rows(device: DeviceFacts, rows: Mapping[int, int], verdict: Verdict) -> None:
    for seq, digest in rows.items():
        sent = device.sent.get(seq)
        if sent is None or sent[0] != digest:
            verdict.phantom_reports += 1
            what = "never sent" if sent is None else "other bytes than sent"
            verdict.note(f"{device.device_id}: accepted report {seq} was {what}")
    for seq in sorted(device.answered - rows.keys()):
        verdict.unrecorded_answers += 1
        verdict.note(f"{device.device_id}: report {seq} answered but not recorded")
