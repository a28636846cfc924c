"""One batch of received messages: verify, decide, commit — then what to send.

Theory of operation. A batch is handled in three steps so the database's write lock is held
only for the deciding:

1. **parse** every message (``intake.parse``) and, in one read transaction, load the keys of
   the devices whose topics they came on;
2. **verify** every signature in the crypto thread pool (reports and deregistrations with the
   device's registered key, registrations with their own key: proof of possession);
3. in **one write transaction**, decide each message in arrival order against the devices'
   current records (replay window, clock skew, registration and token rules), apply the
   accepted reports' counts to the pool counters, record the pools that flipped (audited),
   number and sign every answer and push, and store accepted reports with their answers,
   dead letters, and the pushes (in the notice outbox, so a crash cannot lose them).

The caller publishes the returned messages after the commit and only then acknowledges the
MQTT messages of the batch (SPEC §5). A crash before the commit loses nothing: the broker
redelivers. A crash after it changes nothing twice: a redelivered report is a duplicate and
gets its stored answer; the pushes are still in the outbox.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from smartlic.collector.compliance import load_pools_around, record_statuses
from smartlic.collector.devices import (
    CountsUpdate,
    DeviceRecord,
    DeviceState,
    apply_reports,
    deregister,
    register_device,
)
from smartlic.collector.errors import Refused
from smartlic.collector.receipts import (
    AcceptedReport,
    DeadLetter,
    add_dead_letters,
    find_accepted,
    save_accepted,
)
from smartlic.collector.requests import carried_out, is_replay, record_carried_out
from smartlic.collector.service.batch import Accepted, Batch
from smartlic.collector.service.decisions import (
    SequenceVerdict,
    classify_sequence,
    clock_skew_error,
    report_digest,
)
from smartlic.collector.service.intake import Parsed, parse
from smartlic.collector.service.notices import ErrorRequest, number_notices
from smartlic.collector.service.outbox import Outgoing, queue_pushes
from smartlic.collector.service.pushes import pushes_for_flips
from smartlic.collector.service.records import DeviceRecords
from smartlic.collector.service.verifying import Verifier
from smartlic.protocol import (
    DeregistrationRequest,
    ErrorCode,
    RegistrationRequest,
    UsageReport,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from smartlic.collector.service.crypto import CryptoPool
    from smartlic.collector.store import Store, Transaction
    from smartlic.mqtt.common import MqttMessage
    from smartlic.protocol import SigningKey, Topics

ACTOR = "collector"
log = structlog.get_logger("smartlic.collector")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    topics: Topics
    key: SigningKey
    fingerprint: bytes
    clock_skew: int


@dataclass(frozen=True, slots=True)
class Prepared:
    """A parsed and verified batch, waiting for its write transaction."""

    items: list[Parsed]
    changes_keys: bool
    """It holds registrations: deciding it may give devices new keys."""


class Ingest:
    """Turns batches of MQTT messages into committed decisions and messages to send."""

    def __init__(self, store: Store, crypto: CryptoPool, settings: Settings) -> None:
        self.store = store
        self.crypto = crypto
        self.settings = settings
        self.device_records = DeviceRecords()
        self.verifier = Verifier(store, crypto)

    async def process(self, messages: Sequence[MqttMessage], now: int) -> list[Outgoing]:
        """Decide a batch and commit; what to publish (answers in arrival order, then pushes)."""
        return await self.commit(await self.prepare(messages), now)

    async def prepare(self, messages: Sequence[MqttMessage]) -> Prepared:
        """Parse and verify a batch: steps 1 and 2, which change nothing.

        The service may prepare the next batch while this one is decided, unless deciding
        this one can change a device's key (:attr:`Prepared.changes_keys`): the next one's
        signatures would be checked against keys about to be replaced.
        """
        items = [
            parse(self.settings.topics, m.topic, m.payload, mid=m.mid, qos=m.qos) for m in messages
        ]
        changes_keys = any(
            isinstance(item.opened.message, RegistrationRequest)
            for item in items
            if item.opened is not None
        )
        await self.verifier.verify(items)
        return Prepared(items=items, changes_keys=changes_keys)

    async def commit(self, prepared: Prepared, now: int) -> list[Outgoing]:
        """Step 3: decide a prepared batch in one write transaction (once: it is spent)."""
        async with self.store.write() as tx:
            outgoing, batch = await self._decide(tx, prepared.items, now)
        self.device_records.committed(
            batch.records, changed=[record.device_id for _, record, _ in batch.results]
        )
        _log_decided(batch)
        return outgoing

    async def _decide(
        self, tx: Transaction, items: list[Parsed], now: int
    ) -> tuple[list[Outgoing], Batch]:
        ids = {item.device_id for item in items if item.device_id}
        batch = Batch(items=items, now=now, records=await self.device_records.current(tx, ids))
        for item in items:
            opened = item.opened
            if opened is not None:
                message = opened.message
                if isinstance(message, UsageReport):
                    await self._report(tx, batch, item, message)
                elif isinstance(message, RegistrationRequest):
                    await self._flush(tx, batch)
                    await self._register(tx, batch, item, message)
                elif isinstance(message, DeregistrationRequest):
                    await self._flush(tx, batch)
                    await self._deregister(tx, batch, item, message)
            if item.refusal is not None:
                self._answer_refusal(batch, item)
        await self._flush(tx, batch)
        return await self._finish(tx, batch), batch

    def _answer_refusal(self, batch: Batch, item: Parsed) -> None:
        refusal = item.refusal
        if refusal is None or not refusal.answer or item.device_id is None:
            return
        record = batch.records.get(item.device_id)
        registering = item.registering
        if record is None and not registering:
            return
        batch.errors.append(
            (
                item,
                ErrorRequest(
                    device_id=item.device_id,
                    device_pk=record.pk if record else None,
                    in_reply_to=item.reply_to,
                    code=refusal.code,
                    message=refusal.reason,
                    collector_key=self.settings.key.public if registering else None,
                ),
            )
        )

    async def _report(
        self, tx: Transaction, batch: Batch, item: Parsed, report: UsageReport
    ) -> None:
        record = batch.records.get(report.device_id)
        if record is None or item.verified_key is None:
            item.refuse(
                ErrorCode.UNKNOWN_DEVICE, "no device is registered on this topic", answer=False
            )
            return
        if self._refused_for_another_key(item, record):
            return
        assert item.opened is not None  # noqa: S101 -- _decide only hands over opened items
        digest = report_digest(item.opened.envelope.payload)
        last = batch.last_seq.get(record.device_id, record.last_seq)
        earlier = batch.reports.get((record.device_id, report.seq))
        stored = None
        if report.seq <= last and earlier is None:
            stored = (await find_accepted(tx, [(record.pk, report.seq)])).get(
                (record.pk, report.seq)
            )
        accepted_digest = earlier.digest if earlier else stored.digest if stored else None
        verdict = classify_sequence(
            seq=report.seq, last_accepted=last, accepted_digest=accepted_digest, digest=digest
        )
        if verdict is SequenceVerdict.DUPLICATE:
            # Whether or not the device is still registered: a copy redelivered after a
            # deregistration that came with it gets its answer again (SPEC §5), not an error.
            batch.duplicates.append((item, earlier.item if earlier else stored.answer))  # type: ignore[union-attr]  # one of them is set for a duplicate
            return
        if not record.registered:
            item.refuse(ErrorCode.NOT_REGISTERED, "this device is not registered", answer=True)
            return
        if verdict is SequenceVerdict.REPLAYED:
            item.refuse(
                ErrorCode.REPLAYED,
                f"report {report.seq} is not above the last accepted one ({last})",
                answer=True,
            )
            return
        if self._refused_as_stale(item, batch, report.issued_at):
            return
        accepted = Accepted(
            item=item,
            update=CountsUpdate(
                device=record, seq=report.seq, received_at=batch.now, counts=report.counts
            ),
            digest=digest,
        )
        batch.pending.append(accepted)
        batch.last_seq[record.device_id] = report.seq
        batch.reports[record.device_id, report.seq] = accepted

    def _refused_as_stale(self, item: Parsed, batch: Batch, issued_at: int) -> bool:
        """Refuse a message issued outside the clock-skew window (SPEC §4, *Replay and
        freshness*): a request or report kept and replayed later is refused, not acted on."""
        skew = clock_skew_error(issued_at=issued_at, now=batch.now, window=self.settings.clock_skew)
        if skew is None:
            return False
        item.refuse(ErrorCode.CLOCK_SKEW, skew, answer=True)
        return True

    async def _refused_as_replay(
        self, tx: Transaction, item: Parsed, record: DeviceRecord, request_id: bytes
    ) -> bool:
        """Refuse a copy of a request carried out before whose outcome has since been undone;
        a copy in the state it left is a retry (``smartlic.collector.requests``)."""
        registers = item.opened is not None and isinstance(item.opened.message, RegistrationRequest)
        if not await is_replay(tx, record, request_id, registers=registers):
            return False
        item.refuse(ErrorCode.REPLAYED, "carried out before; the device changed since", answer=True)
        return True

    def _refused_for_another_key(self, item: Parsed, record: DeviceRecord) -> bool:
        """Refuse a message not signed with the key ``record`` holds at this point of the batch.

        The signature was checked with the key the device had when the batch was parsed, or
        the one a registration earlier in the batch asked for: a registration decided since
        (here, or by another collector) may have replaced the one or refused the other.
        """
        if item.verified_key is not None and record.public_key == item.verified_key.raw:
            return False
        self.verifier.remember(record)
        item.refuse(
            ErrorCode.BAD_SIGNATURE,
            "not signed with the device's registered key (it changed while this was in flight)",
            answer=True,
        )
        return True

    async def _flush(self, tx: Transaction, batch: Batch) -> None:
        """Apply the pending reports' counts (one bulk write) and refresh the records."""
        if not batch.pending:
            return
        applied = await apply_reports(tx, [a.update for a in batch.pending])
        for device_id, counts in applied.counts.items():
            record = batch.records[device_id]
            batch.pools.update((record.va_id, tag) for tag in (*record.counts, *counts))
            batch.records[device_id] = record.after_reports(
                counts, last_seq=batch.last_seq[device_id], at=batch.now
            )
        batch.pools.update(applied.deltas)
        for accepted in batch.pending:
            batch.answered_as[id(accepted)] = batch.records[accepted.update.device.device_id]
        batch.accepted.extend(batch.pending)
        batch.pending.clear()

    async def _register(
        self, tx: Transaction, batch: Batch, item: Parsed, request: RegistrationRequest
    ) -> None:
        if self._refused_as_stale(item, batch, request.issued_at):
            return
        known = batch.records.get(request.device_id)
        if known is not None and await self._refused_as_replay(tx, item, known, request.request_id):
            return
        try:
            record, new = await register_device(
                tx,
                udi=request.udi,
                algorithm=request.algorithm,
                public_key=request.public_key,
                token=request.registration_token,
                collector_fingerprint=self.settings.fingerprint,
                now=batch.now,
            )
        except Refused as exc:
            item.refuse(exc.code or ErrorCode.TOKEN_UNKNOWN, exc.message, answer=True)
            return
        batch.records[record.device_id] = record
        self.verifier.remember(record)
        batch.results.append((item, record, request))
        if new:
            batch.open_new_window(record.device_id)
            await record_carried_out(
                tx, record.pk, request.request_id, now=batch.now, keep=2 * self.settings.clock_skew
            )

    async def _deregister(
        self, tx: Transaction, batch: Batch, item: Parsed, request: DeregistrationRequest
    ) -> None:
        record = batch.records.get(request.device_id)
        if record is not None and self._refused_for_another_key(item, record):
            return
        if record is None or not record.registered:
            fresh = clock_skew_error(
                issued_at=request.issued_at, now=batch.now, window=self.settings.clock_skew
            )
            if (
                record is not None
                and fresh is None
                and await carried_out(tx, record, request.request_id)
            ):
                # A copy of the deregistration that left the device as it is: a retry (the
                # answer was lost, or the broker redelivered it), answered as the first was.
                batch.results.append((item, record, request))
            else:
                item.refuse(ErrorCode.NOT_REGISTERED, "this device is not registered", answer=True)
            return
        if self._refused_as_stale(item, batch, request.issued_at):
            return
        if await self._refused_as_replay(tx, item, record, request.request_id):
            return
        batch.flips.extend(
            await deregister(tx, record, actor=f"device {record.device_id}", now=batch.now)
        )
        await record_carried_out(
            tx, record.pk, request.request_id, now=batch.now, keep=2 * self.settings.clock_skew
        )
        batch.records[record.device_id] = dataclasses.replace(
            record, state=DeviceState.DEREGISTERED, counts={}
        )
        batch.results.append((item, record, request))

    async def _finish(self, tx: Transaction, batch: Batch) -> list[Outgoing]:
        now = batch.now
        states = await load_pools_around(tx, batch.pools, now) if batch.pools else {}
        batch.flips.extend(await record_statuses(tx, states.values(), actor=ACTOR, now=now))
        answered = {a.update.device.device_id for a in batch.accepted}
        pushes = await pushes_for_flips(tx, batch.flips, now=now, exclude=answered)
        owed = batch.owed(self.settings.key.public)
        notices = await number_notices(tx, [*(o for _, o in owed), *pushes], now=now, pools=states)
        sealed = await self.crypto.seal(self.settings.key, notices)
        for (item, _), payload in zip(owed, sealed[: len(owed)], strict=True):
            item.answer = payload
        push_bytes = sealed[len(owed) :]
        for item, source in batch.duplicates:
            item.answer = source if isinstance(source, bytes) else source.answer
        await save_accepted(
            tx,
            [
                AcceptedReport(
                    device_pk=a.update.device.pk,
                    seq=a.update.seq,
                    digest=a.digest,
                    answer=a.item.answer or b"",
                    accepted_at=now,
                )
                for a in batch.accepted
                if id(a) not in batch.superseded
            ],
        )
        batch.pushed = len(pushes)
        await add_dead_letters(
            tx,
            [
                DeadLetter(
                    received_at=now,
                    topic=item.topic,
                    payload=item.stored_payload,
                    reason=item.refusal.reason,
                    code=int(item.refusal.code),
                    device_id=item.device_id,
                )
                for item in batch.items
                if item.refusal is not None
            ],
        )
        queued = await queue_pushes(
            tx, [(p.device.device_id, b) for p, b in zip(pushes, push_bytes, strict=True)], now=now
        )
        direct = [
            Outgoing(device_id=item.device_id, payload=item.answer)
            for item in batch.items
            if item.answer is not None and item.device_id is not None
        ]
        return [*direct, *queued]


def _log_decided(batch: Batch) -> None:
    """Once the batch is committed: a batch that failed to commit is decided again, and its
    refusals logged each time would be refusals that never happened."""
    for item in batch.items:
        if item.refusal is not None:
            log.info(
                "collector.refused",
                device_id=item.device_id,
                mid=item.mid,
                in_reply_to=item.reply_to.hex()
                if isinstance(item.reply_to, bytes)
                else item.reply_to,
                code=item.refusal.code.name,
                reason=item.refusal.reason,
                answered=item.answer is not None,
            )
    log.debug(
        "collector.batch",
        messages=len(batch.items),
        accepted=len(batch.accepted),
        duplicates=len(batch.duplicates),
        flips=len(batch.flips),
        pushes=batch.pushed,
    )
