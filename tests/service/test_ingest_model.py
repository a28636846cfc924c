"""The collector's batches against a model of the rules, for any mix of messages (SPEC §3 to §5).

Devices send fresh, clock-skewed, replayed and re-sent reports, garbage and deregistrations,
in batches of any make-up; a few lines of model decide the same messages one by one. The
collector must refuse exactly what the model refuses, count exactly what it counts, answer a
duplicate with the very answer it gave first, and leave each device's newest compliance notice
saying what the final counts say.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from smartlic.collector.service.decisions import report_digest
from smartlic.protocol import (
    Authorization,
    ComplianceNotice,
    ErrorCode,
    OutOfComplianceNotice,
    UsageReport,
    open_message,
)

from .ingest_support import collector, devices, refusals, uplink
from .support import Device, Site, now

if TYPE_CHECKING:
    from collections.abc import Sequence

    from smartlic.collector.service.outbox import Outgoing

ENTITLED = {"a": 3, "b": 1}
DEVICES = 3
LONG_AGO = 86_400

counts = st.dictionaries(st.sampled_from(sorted(ENTITLED)), st.integers(0, 3), max_size=2)
operations = st.tuples(
    st.integers(0, DEVICES - 1),
    st.sampled_from(["report", "report", "skewed", "replayed", "resent", "garbage", "leave"]),
    counts,
    st.integers(0, 7),
)
"""(which device, what it sends, the counts it reports, which earlier report it re-sends)."""


@dataclass
class Model:
    """One device as the rules see it."""

    registered: bool = True
    last_seq: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    accepted: dict[int, bytes] = field(default_factory=dict)
    """Accepted sequence numbers, each with its report's payload digest."""

    def decide(self, payload: bytes) -> ErrorCode | None:
        """What the collector must make of ``payload``; None when it is accepted or a duplicate."""
        message = open_message(payload).message
        if not isinstance(message, UsageReport):
            if not self.registered:
                return ErrorCode.NOT_REGISTERED
            self.registered, self.counts = False, {}
            return None
        if not self.registered:
            return ErrorCode.NOT_REGISTERED
        digest = report_digest(open_message(payload).envelope.payload)
        if message.seq <= self.last_seq:
            return None if self.accepted.get(message.seq) == digest else ErrorCode.REPLAYED
        if abs(message.issued_at - now()) > 3600:
            return ErrorCode.CLOCK_SKEW
        # SPEC §3: a report sets the tags it names and leaves the others at their last count.
        merged = {**self.counts, **message.counts}
        self.last_seq, self.counts = message.seq, {t: n for t, n in merged.items() if n}
        self.accepted[message.seq] = digest
        return None


def _payload(
    device: Device, operation: tuple[int, str, dict[str, int], int], earlier: list[bytes]
) -> bytes:
    _, kind, reported, pick = operation
    if kind == "garbage":
        return b"\xa1\x01"
    if kind == "leave":
        return device.deregistration_bytes()[0]
    if kind == "resent" and earlier:
        return earlier[pick % len(earlier)]
    if kind == "replayed" and device.seq:
        payload = device.report_bytes({**reported, "a": 9}, seq=max(1, device.seq - pick % 3))
    elif kind == "skewed":
        payload = device.report_bytes(reported, issued_at=now() - LONG_AGO)
    else:
        payload = device.report_bytes(reported)
    earlier.append(payload)
    return payload


@dataclass
class Run:
    fleet: list[Device]
    models: list[Model]
    expected: list[ErrorCode | None] = field(default_factory=list)
    refused: list[ErrorCode | None] = field(default_factory=list)
    sent: list[Outgoing] = field(default_factory=list)
    in_use: Counter[str] = field(default_factory=Counter)
    first_answers: dict[tuple[str, bytes], bytes] = field(default_factory=dict)
    duplicate_answers: list[tuple[bytes, bytes]] = field(default_factory=list)
    """(the answer a duplicate got, the answer its original got)."""


async def _run(batches: Sequence[Sequence[tuple[int, str, dict[str, int], int]]]) -> Run:
    with tempfile.TemporaryDirectory() as folder:
        site = await Site.create(Path(folder))
        await site.account("ACME")
        for n, (tag, quantity) in enumerate(ENTITLED.items()):
            await site.deposit(f"PO-{n}", tag=tag, quantity=quantity)
        fleet = await devices(site, *(f"M{n}" for n in range(DEVICES)))
        run = Run(fleet=fleet, models=[Model() for _ in fleet])
        earlier: list[list[bytes]] = [[] for _ in fleet]
        async with collector(site) as ingest:
            for batch in batches:
                payloads = [(op[0], _payload(fleet[op[0]], op, earlier[op[0]])) for op in batch]
                for n, payload in payloads:
                    garbage = payload == b"\xa1\x01"
                    run.expected.append(
                        ErrorCode.MALFORMED_CBOR if garbage else run.models[n].decide(payload)
                    )
                prepared = await ingest.prepare([uplink(fleet[n], p) for n, p in payloads])
                run.sent += await ingest.commit(prepared, now())
                run.refused += refusals(prepared)
                for (n, payload), item in zip(payloads, prepared.items, strict=True):
                    if item.refusal is None and item.answer is not None:
                        key = (fleet[n].device_id, payload)
                        first = run.first_answers.setdefault(key, item.answer)
                        if first is not item.answer:
                            run.duplicate_answers.append((item.answer, first))
        for tag in ENTITLED:
            run.in_use[tag] = await site.in_use(tag)
        return run


def _newest_compliance_notice(device: Device, sent: Sequence[Outgoing]) -> ComplianceNotice | None:
    newest: ComplianceNotice | None = None
    for outgoing in sent:
        if outgoing.device_id != device.device_id:
            continue
        message = open_message(outgoing.payload).message
        if isinstance(message, ComplianceNotice) and (
            newest is None or message.notice_seq > newest.notice_seq
        ):
            newest = message
    return newest


batches = st.lists(st.lists(operations, min_size=1, max_size=10), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches)
def test_the_collector_decides_every_batch_as_the_rules_do(
    batches: list[list[tuple[int, str, dict[str, int], int]]],
) -> None:
    run = asyncio.run(_run(batches))
    assert run.expected == run.refused
    in_use: Counter[str] = Counter()
    for model in run.models:
        if model.registered:
            in_use.update(model.counts)
    assert +in_use == +run.in_use
    assert all(answer == first for answer, first in run.duplicate_answers)
    for device, model in zip(run.fleet, run.models, strict=True):
        newest = _newest_compliance_notice(device, run.sent)
        if not model.registered or newest is None:
            continue
        short = any(n > 0 and in_use[tag] > ENTITLED[tag] for tag, n in model.counts.items())
        assert (OutOfComplianceNotice if short else Authorization) is type(newest), device
