"""``smartlic-collector run``: where the collector's bytes meet the network.

One :class:`asyncio.TaskGroup`, named tasks:

* ``mqtt`` — the broker connection (``mqtt.native`` on this loop, manual acknowledgement, persistent
  session, shared subscription), reconnecting with backoff after an outage;
* ``ingest`` — takes received messages in batches, has :class:`~.ingest.Ingest` verify, decide
  and commit them, publishes the answers and pushes, then acknowledges the batch in arrival
  order (SPEC §5: acknowledged only once committed);
* ``changes`` — polls the change feed the admin CLI writes and pushes notices for it;
* ``expiry`` — sleeps until the next term license starts or ends, then re-evaluates;
* ``outbox`` — clears pushed notices from the store once the broker acknowledged them, and
  prunes old report receipts.

Received messages wait in a bounded buffer: MQTT 5 Receive Maximum keeps the broker from
sending more, and when it fills anyway (MQTT 3.1.1) the service stops reading the socket (TCP
back-pressure on the broker) until the ingest task catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import deque
from typing import TYPE_CHECKING, Final, TypeVar

import structlog

from smartlic.collector.receipts import DeadLetter, add_dead_letters, prune_accepted
from smartlic.collector.service.clock import Clock
from smartlic.collector.service.crypto import CryptoPool
from smartlic.collector.service.failures import is_outage, log_outage
from smartlic.collector.service.in_flight import PushesInFlight
from smartlic.collector.service.ingest import ACTOR, Ingest, Prepared, Settings
from smartlic.collector.service.intake import uplink_device, worth_keeping_after_reconnect
from smartlic.collector.service.notices import number_notices
from smartlic.collector.service.outbox import (
    Outgoing,
    forget_pushes,
    queue_pushes,
    service_mark,
    set_service_mark,
    unsent_pushes,
)
from smartlic.collector.service.pushes import pushes_after_downtime
from smartlic.collector.service.watchers import CHANGES_MARK, EXPIRY_MARK, RETRY_DELAY, Watchers
from smartlic.collector.signing_key import check_site_key, read_key_file
from smartlic.collector.site import site_info
from smartlic.collector.store import StoreError, open_store
from smartlic.mqtt.common import MqttError
from smartlic.mqtt.native import NativeMqttClient
from smartlic.protocol import ErrorCode, Topics

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

    from smartlic.collector.service.config import ServiceConfig
    from smartlic.collector.service.notices import ErrorRequest, NoticeRequest
    from smartlic.collector.store import Store, Transaction
    from smartlic.mqtt.common import MqttMessage
    from smartlic.protocol import SigningKey

T = TypeVar("T")
RESEND_PAGE: Final = 10_000
"""Outbox rows read at a time to send again after a (re)connection: the publish window."""
SHUTDOWN_ACK_WAIT: Final = 3.0
"""Seconds a clean shutdown waits for the broker to acknowledge the last pushes."""
PRUNE_EVERY: Final = 3600.0
"""Seconds between prunings of old report answers; the first comes at start-up."""
log = structlog.get_logger("smartlic.collector")


class CollectorService:
    def __init__(self, config: ServiceConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock(scale=config.time_scale, origin=config.time_origin or None)
        self.topics = Topics(prefix=config.topic_prefix)
        self._intake: deque[MqttMessage] = deque()
        self._arrived = asyncio.Event()
        self._stopping = asyncio.Event()
        self._paused = False
        self._in_flight = PushesInFlight()
        self._resend_wanted = False
        self._outbox_wake = asyncio.Event()
        self._acks_settled = asyncio.Event()
        """Set at shutdown once the last pushes' PUBACKs came, or were waited for long enough."""
        self.processed = 0
        self.started = asyncio.Event()
        self._client: NativeMqttClient | None = None
        self._store: Store | None = None
        self._crypto: CryptoPool | None = None
        self._ingest: Ingest | None = None
        self._key: SigningKey | None = None

    def now(self) -> int:
        return int(self.clock.now())

    async def wait_ready(self) -> None:
        """Until the service runs and its subscription is in place."""
        await self.started.wait()
        await self._require_client().wait_connected()

    def stop(self) -> None:
        """Begin a clean shutdown: stop reading, finish and commit what was received, ack."""
        if not self._stopping.is_set():
            log.info("collector.stopping")
            self._stopping.set()
            self._arrived.set()
            if self._client is not None:
                self._client.pause_reading()
                # What is left to publish is in the outbox or the stored answers: a broker
                # that is down must not hold the shutdown until it is back.
                self._client.release_window()

    async def run(self) -> None:
        """Run until :meth:`stop` (SIGTERM/SIGINT call it when installed by the CLI)."""
        try:
            watchers = await self._unless_stopped(self._start())
            if watchers is None:
                return
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._mqtt(), name="mqtt")
                tasks.create_task(self._ingest_loop(), name="ingest")
                tasks.create_task(watchers.watch_changes(), name="changes")
                tasks.create_task(watchers.watch_terms(), name="expiry")
                tasks.create_task(self._outbox_loop(), name="outbox")
                self.started.set()
        finally:
            if self._crypto is not None:
                await self._crypto.close()
            if self._store is not None:
                await self._store.close()
            # A store that never opened (no database) has only its error to say.
            if self._store is not None or self._stopping.is_set():
                log.info("collector.stopped", processed=self.processed)

    async def _unless_stopped(self, steps: Coroutine[object, object, T]) -> T | None:
        """What ``steps`` return; None when :meth:`stop` came first, the steps then cancelled.

        Start-up waits for the store (another process's write lock, for up to the busy
        timeout): a stop meanwhile must not wait with it, nor end the service with an error.
        """
        starting = asyncio.create_task(steps, name="collector-startup")
        stopped = asyncio.create_task(self._stopping.wait(), name="collector-stop")
        try:
            await asyncio.wait((starting, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not starting.done():
                starting.cancel()
                # What the steps raise as they are cancelled is no news: the stop won.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await starting
        return None if starting.cancelled() else starting.result()

    async def _start(self) -> Watchers:
        """Open the store, load the key, set up ingest and the MQTT client, catch up."""
        config = self.config
        store = self._store = await open_store(config.db)
        async with store.read() as tx:
            site = await site_info(tx)
        key = self._key = read_key_file(config.key_path)
        check_site_key(config.key_path, key, site.key_fingerprint)
        crypto = self._crypto = CryptoPool(config.crypto_workers)
        await crypto.start()
        self._ingest = Ingest(
            store,
            crypto,
            Settings(
                topics=self.topics,
                key=key,
                fingerprint=site.key_fingerprint,
                clock_skew=config.clock_skew,
            ),
        )
        subscription = config.subscription()
        self._client = NativeMqttClient(
            client_id=config.client_id,
            broker=config.broker_address(),
            on_message=self._received,
            subscriptions=[(subscription, 1)],
            protocol=config.mqtt_protocol,
            manual_ack=True,
            max_pending=10_000,
            # MQTT 5 flow control keeps the broker from sending more than we buffer
            receive_maximum=min(config.intake_limit, 65_535),
            on_connect=self._connected,
            on_disconnect=self._disconnected,
            on_published=self._acknowledged,
            on_refused=self._refused,
        )
        watchers = Watchers(
            store=store,
            clock=self.clock,
            stopping=self._stopping,
            queue=self._queue,
            send=self._send,
            actor=ACTOR,
            poll_interval=config.change_poll_ms / 1000,
        )
        await self._startup()
        log.info(
            "collector.started",
            broker=str(config.broker_address()),
            subscription=subscription,
            db=str(config.db),
            time_scale=self.clock.scale,
        )
        return watchers

    async def _startup(self) -> None:
        """Catch up with what happened while the service was down."""
        store, now = self._require_store(), self.now()
        async with store.write() as tx:
            mark = await service_mark(tx, CHANGES_MARK)
            if mark is None:
                latest = await tx.fetch_one("SELECT MAX(id) AS id FROM changes")
                await set_service_mark(tx, CHANGES_MARK, int(latest["id"] or 0) if latest else 0)
            requests = await pushes_after_downtime(tx, now=now, actor=ACTOR)
            await self._queue(tx, requests, [], now)
            await set_service_mark(tx, EXPIRY_MARK, now)

    async def _mqtt(self) -> None:
        client = self._require_client()

        def failed(error: MqttError, delay: float) -> None:
            log.warning("collector.broker_unreachable", error=str(error), retry_in=round(delay, 2))

        runner = asyncio.create_task(client.run(on_error=failed), name="mqtt-connection")
        try:
            await self._stopping.wait()
            await self._drained.wait()
            await self._await_last_acknowledgements(client)
        finally:
            self._acks_settled.set()
            self._outbox_wake.set()
            await client.disconnect()
            await runner

    async def _await_last_acknowledgements(self, client: NativeMqttClient) -> None:
        """Read on, briefly, until the broker has acknowledged the last pushes: their outbox
        rows then go now, rather than the pushes going out again at the next start. What is
        read meanwhile is not acknowledged, so the broker delivers it again then."""
        if not self._in_flight.awaiting or not client.connected:
            return
        self._in_flight.settled.clear()
        client.resume_reading()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_ACK_WAIT):
                await self._in_flight.settled.wait()

    def _connected(self, session_present: bool) -> None:  # noqa: FBT001 -- the clients' callback shape
        log.info("collector.connected", session_present=session_present)
        kept = worth_keeping_after_reconnect(
            self._intake,
            generation=self._require_client().generation,
            session_present=session_present,
        )
        if len(kept) < len(self._intake):
            log.info("collector.redelivery_expected", dropped=len(self._intake) - len(kept))
            self._intake = deque(kept)
        # Anything pushed before a crash or outage and not yet acknowledged goes out again,
        # from the outbox task, which waits out a store outage.
        self._resend_wanted = True
        self._outbox_wake.set()

    def _acknowledged(self, mid: int) -> None:
        self._in_flight.acknowledged(mid)

    def _refused(self, mid: int, reason: int) -> None:
        outbox_id = self._in_flight.refused(mid)
        log.warning("collector.notice_refused", outbox_id=outbox_id, reason=f"0x{reason:02x}")

    def _disconnected(self) -> None:
        self._in_flight.connection_lost()
        if not self._stopping.is_set():
            log.warning("collector.broker_lost")

    def _received(self, message: MqttMessage) -> None:
        self._intake.append(message)
        self._arrived.set()
        if not self._paused and len(self._intake) >= self.config.intake_limit:
            self._paused = True
            self._require_client().pause_reading()
            log.info("collector.backpressure", buffered=len(self._intake))

    @property
    def _drained(self) -> asyncio.Event:
        event = getattr(self, "_drained_event", None)
        if event is None:
            event = self._drained_event = asyncio.Event()
        return event

    async def _ingest_loop(self) -> None:
        """Batches in arrival order: decide, commit, publish, acknowledge.

        While one batch is decided (the event loop and SQLite busy), the next one is parsed
        and verified (the crypto workers busy), so neither waits for the other. Only the
        deciding, publishing and acknowledging are strictly one batch after another.
        """
        ahead: tuple[list[MqttMessage], asyncio.Task[Prepared | None]] | None = None
        try:
            while True:
                if ahead is not None:
                    batch, preparing = ahead
                    ahead = None
                    prepared = await preparing
                else:
                    taken = await self._take_batch()
                    if taken is None:
                        self._drained.set()
                        self._outbox_wake.set()
                        return
                    batch = taken
                    prepared = await self._prepare(batch)
                if prepared is not None and not prepared.changes_keys and self._intake:
                    upcoming = self._take(self.config.batch_size)
                    ahead = (
                        upcoming,
                        asyncio.create_task(self._prepare(upcoming), name="ingest-prepare"),
                    )
                outgoing = await self._process(batch, prepared)
                if outgoing is None:
                    log.warning(
                        "collector.stopped_in_outage",
                        unacknowledged=len(batch)
                        + len(ahead[0] if ahead else ())
                        + len(self._intake),
                    )
                    self._drained.set()
                    self._outbox_wake.set()
                    return
                await self._send_and_acknowledge(batch, outgoing)
        finally:
            if ahead is not None:
                ahead[1].cancel()

    async def _send_and_acknowledge(
        self, batch: Sequence[MqttMessage], outgoing: Sequence[Outgoing]
    ) -> None:
        """After the commit: publish what was decided, then acknowledge the batch in order.

        What could not be published (only in a shutdown) leaves the batch unacknowledged: the
        broker delivers it again to the next session, whose duplicates are answered from the
        stored decisions.
        """
        if not await self._send(outgoing):
            return
        client = self._require_client()
        for received in batch:
            client.ack(received)
        self.processed += len(batch)
        if self._paused and len(self._intake) <= self.config.intake_limit // 2:
            self._paused = False
            if not self._stopping.is_set():
                client.resume_reading()

    async def _take_batch(self) -> list[MqttMessage] | None:
        """The next batch, once one has waited ``batch_linger_ms`` to fill; None when stopped."""
        while not self._intake:
            if self._stopping.is_set():
                return None
            self._arrived.clear()
            await self._arrived.wait()
        if len(self._intake) < self.config.batch_size and not self._stopping.is_set():
            await asyncio.sleep(self.config.batch_linger_ms / 1000)
        return self._take(self.config.batch_size)

    def _take(self, size: int) -> list[MqttMessage]:
        return [self._intake.popleft() for _ in range(min(size, len(self._intake)))]

    async def _prepare(self, batch: Sequence[MqttMessage]) -> Prepared | None:
        """Parse and verify ``batch``; None when that failed (``_process`` starts over)."""
        try:
            return await self._require_ingest().prepare(batch)
        except Exception as exc:  # noqa: BLE001 -- _process retries and reports it, with the batch
            log.debug("collector.prepare_failed", error=str(exc) or type(exc).__name__)
            return None

    async def _process(
        self, batch: Sequence[MqttMessage], prepared: Prepared | None = None
    ) -> list[Outgoing] | None:
        """Decide a batch; a store failure retries it (nothing is acked until it commits), and a
        message that breaks the service itself is isolated and kept as a dead letter. None when
        the service is stopped during an outage: the batch is left unacknowledged, for the
        broker to deliver again to the next session."""
        ingest = self._require_ingest()
        while True:
            try:
                if prepared is not None:
                    # A prepared batch is spent by one attempt: a retry parses and verifies again.
                    spent, prepared = prepared, None
                    return await ingest.commit(spent, self.now())
                return await ingest.process(batch, self.now())
            except Exception as exc:  # noqa: BLE001 -- an outage is retried, a fault isolated
                if not is_outage(exc):
                    return await self._isolate(batch, exc)
                if not await self._wait_out(exc, batch=len(batch)):
                    return None

    async def _wait_out(self, outage: Exception, **context: object) -> bool:
        """Log ``outage`` and wait before the next try; False when the service is stopping,
        so that a store that stays down cannot hold a shutdown for ever."""
        log_outage(outage, **context)
        if self._stopping.is_set():
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(RETRY_DELAY):
                await self._stopping.wait()
        return True

    async def _isolate(
        self, batch: Sequence[MqttMessage], fault: Exception
    ) -> list[Outgoing] | None:
        """Decide a batch that broke the service one message at a time; the message that
        still breaks it alone is kept as a dead letter."""
        if len(batch) == 1:
            log.error("collector.internal_error", topic=batch[0].topic, exc_info=fault)
            return [] if await self._bury(batch[0]) else None
        log.error("collector.batch_failed", batch=len(batch), exc_info=fault)
        outgoing: list[Outgoing] = []
        for message in batch:
            decided = await self._process([message])
            if decided is None:
                return None
            outgoing.extend(decided)
        return outgoing

    async def _bury(self, message: MqttMessage) -> bool:
        """Keep ``message`` as a dead letter; False when the service stopped during an outage
        before it could."""
        letter = DeadLetter(
            received_at=self.now(),
            topic=message.topic,
            payload=message.payload[:65_536],
            reason="internal error while handling this message (see the service log)",
            code=int(ErrorCode.INTERNAL_ERROR),
            device_id=uplink_device(self.topics, message.topic),
        )
        while True:
            try:
                async with self._require_store().write() as tx:
                    await add_dead_letters(tx, [letter])
            except Exception as exc:
                if not is_outage(exc):
                    raise
                if not await self._wait_out(exc, task="dead-letter"):
                    return False
            else:
                return True

    async def _prune_receipts(self) -> None:
        """Forget the answers to reports accepted longer ago than the retention allows."""
        cutoff = self.now() - self.config.receipt_retention_days * 86_400
        async with self._require_store().write() as tx:
            pruned = await prune_accepted(tx, before=cutoff)
        if pruned:
            log.info("collector.receipts_pruned", count=pruned, before=cutoff)

    async def _outbox_loop(self) -> None:
        store = self._require_store()
        last_prune: float | None = None
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self._outbox_wake.wait()
            self._outbox_wake.clear()
            # Seen before this round's work: a round that ends after the last PUBACKs were
            # settled has forgotten what they delivered.
            last_round = self._acks_settled.is_set()
            resend, self._resend_wanted = self._resend_wanted, False
            try:
                if resend:
                    await self._resend_outbox()
                    resend = False
                await self._forget_delivered(store)
                if last_prune is None or time.monotonic() - last_prune > PRUNE_EVERY:
                    await self._prune_receipts()
                    last_prune = time.monotonic()
            except StoreError as exc:
                self._resend_wanted |= resend
                log.error(  # noqa: TRY400 -- an outage, not a bug: the message says it all
                    "collector.store_failed", task="outbox", error=str(exc)
                )
            if last_round:
                return

    async def _forget_delivered(self, store: Store) -> None:
        """Delete the outbox rows of the pushes the broker has acknowledged."""
        if delivered := self._in_flight.delivered():
            async with store.write() as tx:
                await forget_pushes(tx, delivered)
            self._in_flight.forgotten(len(delivered))

    async def _resend_outbox(self) -> None:
        """Everything in the outbox the client does not hold, a page at a time: after a crash
        during a deposit to 50,000 devices, the 40,000 beyond the first page must not wait
        for the next reconnect."""
        after = 0
        while True:
            async with self._require_store().read() as tx:
                page = await unsent_pushes(tx, after=after, limit=RESEND_PAGE)
            known = self._in_flight.known()
            if not await self._send([p for p in page if p.outbox_id not in known]):
                return
            if len(page) < RESEND_PAGE:
                return
            after = max(p.outbox_id or 0 for p in page)

    async def _queue(
        self,
        tx: Transaction,
        requests: Sequence[NoticeRequest],
        errors: Sequence[ErrorRequest],
        now: int,
    ) -> list[Outgoing]:
        if not requests and not errors:
            return []
        notices = await number_notices(tx, [*requests, *errors], now=now)
        sealed = await self._require_crypto().seal(self._require_key(), notices)
        return await queue_pushes(
            tx, [(n.device_id, b) for n, b in zip(notices, sealed, strict=True)], now=now
        )

    async def _send(self, outgoing: Sequence[Outgoing]) -> bool:
        """Publish ``outgoing`` in order; False when a shutdown left some of it unpublished.

        In a shutdown the window is released (:meth:`stop`), so with the broker away the
        publishes can use up all 65,535 packet ids (MQTT 3.1.1 §2.3.1). What is left is kept
        (pushes in the outbox, answers with their decisions) and goes out after the restart:
        that is no reason to end the service with an error.
        """
        client = self._require_client()
        claimed = self._in_flight.claim(m.outbox_id for m in outgoing if m.outbox_id is not None)
        try:
            for sent, message in enumerate(outgoing):
                try:
                    mid = await client.publish(
                        self.topics.downlink(message.device_id), message.payload
                    )
                except MqttError as exc:
                    if not self._stopping.is_set():
                        raise
                    log.warning(
                        "collector.publish_abandoned", left=len(outgoing) - sent, error=str(exc)
                    )
                    return False
                if message.outbox_id is not None:
                    self._in_flight.published(mid, message.outbox_id)
        finally:
            self._in_flight.release(claimed)
        return True

    def _require_client(self) -> NativeMqttClient:
        return _required(self._client, "MQTT client")

    def _require_store(self) -> Store:
        return _required(self._store, "store")

    def _require_crypto(self) -> CryptoPool:
        return _required(self._crypto, "crypto pool")

    def _require_ingest(self) -> Ingest:
        return _required(self._ingest, "ingest")

    def _require_key(self) -> SigningKey:
        return _required(self._key, "signing key")


def _required(value: T | None, what: str) -> T:
    if value is None:
        message = f"the service's {what} is used before run() set it up"
        raise RuntimeError(message)
    return value


def install_signal_handlers(service: CollectorService) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, service.stop)
