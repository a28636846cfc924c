"""The service's two watchers: the change feed the admin CLI writes, and the license terms.

Neither waits for a message. ``changes`` polls the feed and pushes notices for what other
processes changed; ``expiry`` sleeps until the next term license starts or ends, then
re-evaluates the pools concerned and pushes for their flips.

A failure of what they depend on (:func:`~.failures.is_outage`) is tried again at the next
look. A fault in the work itself (a change row this version cannot read, a broken constraint,
a bug) fails the same way every time: retried, it would hold back every later change for
good. So the change, or the terms, that fail alone are logged and skipped. Skipping costs at
most a push: the devices concerned learn their status from the answer to their next report,
which is decided from the store as it is then.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

import structlog

from smartlic.collector.changes import latest_change_id, next_change_id
from smartlic.collector.compliance import next_license_change_at
from smartlic.collector.service.failures import is_outage, log_outage
from smartlic.collector.service.outbox import service_mark, set_service_mark
from smartlic.collector.service.pushes import pushes_for_changes, pushes_for_expiry

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from smartlic.collector.service.clock import Clock
    from smartlic.collector.service.notices import ErrorRequest, NoticeRequest
    from smartlic.collector.service.outbox import Outgoing
    from smartlic.collector.store import Store, Transaction

log = structlog.get_logger("smartlic.collector")

CHANGES_MARK: Final = "changes"
EXPIRY_MARK: Final = "expiry"
CHANGES_PER_LOOK: Final = 1000
EXPIRY_RECHECK: Final = 30.0
"""Real seconds between looks for license terms (a deposit may bring an earlier one)."""
RETRY_DELAY: Final = 1.0


class QueuePushes(Protocol):
    """Number, seal and store notices in ``tx``; what to publish once it commits."""

    def __call__(
        self,
        tx: Transaction,
        requests: Sequence[NoticeRequest],
        errors: Sequence[ErrorRequest],
        now: int,
    ) -> Awaitable[list[Outgoing]]: ...


@dataclass(kw_only=True)
class Watchers:
    store: Store
    clock: Clock
    stopping: asyncio.Event
    queue: QueuePushes
    send: Callable[[Sequence[Outgoing]], Awaitable[bool]]
    """Publish; False when a shutdown left some unpublished (they stay in the outbox)."""
    actor: str
    poll_interval: float
    terms_changed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when licenses may have changed: the expiry watcher looks again at once."""

    def now(self) -> int:
        return int(self.clock.now())

    async def watch_changes(self) -> None:
        """Administrative changes made by other processes reach devices within a poll."""
        while not self.stopping.is_set():
            await self._pause(self.poll_interval)
            try:
                await self._follow_changes()
            except Exception as exc:  # noqa: BLE001 -- an outage, or skipping failed: next poll
                _log_failure(exc, task="changes")

    async def _follow_changes(self) -> None:
        try:
            await self._push_changes(limit=CHANGES_PER_LOOK)
        except Exception as fault:
            if is_outage(fault):
                raise
            log.exception("collector.changes_failed")
            await self._push_changes_one_by_one()

    async def _push_changes_one_by_one(self) -> None:
        """After a fault: the feed one change at a time, until the one that fails alone."""
        try:
            while await self._push_changes(limit=1):
                pass
        except Exception as fault:
            if is_outage(fault):
                raise
            await self._skip_change(fault)

    async def _push_changes(self, *, limit: int) -> bool:
        """Push for the next ``limit`` changes in the feed; whether there were any."""
        async with self.store.read() as tx:
            mark = await service_mark(tx, CHANGES_MARK) or 0
            latest = await latest_change_id(tx)
        if latest <= mark:
            return False
        now = self.now()
        async with self.store.write() as tx:
            mark = await service_mark(tx, CHANGES_MARK) or 0
            new_mark, requests, errors = await pushes_for_changes(
                tx, mark, now=now, actor=self.actor, limit=limit
            )
            outgoing = await self.queue(tx, requests, errors, now)
            await set_service_mark(tx, CHANGES_MARK, new_mark)
        log.info("collector.changes", up_to=new_mark, pushes=len(outgoing))
        self.terms_changed.set()
        await self._publish(outgoing)
        return new_mark > mark

    async def _publish(self, outgoing: Sequence[Outgoing]) -> None:
        """Publish what a committed transaction queued. A failure here is not the change's
        (nor the terms'): judged as theirs, it would skip the next change, which was never
        tried. The pushes wait in the outbox for the next connection or start."""
        try:
            await self.send(outgoing)
        except Exception:
            log.exception("collector.publish_failed", pushes=len(outgoing))

    async def _skip_change(self, fault: Exception) -> None:
        async with self.store.write() as tx:
            mark = await service_mark(tx, CHANGES_MARK) or 0
            skipped = await next_change_id(tx, mark)
            if skipped is None:
                return
            await set_service_mark(tx, CHANGES_MARK, skipped)
        log.error("collector.change_skipped", change=skipped, exc_info=fault)

    async def watch_terms(self) -> None:
        """Term licenses start and end by the clock alone; pools may flip with no event."""
        while not self.stopping.is_set():
            try:
                await self._next_terms()
            except Exception as fault:  # noqa: BLE001 -- judged below; the watcher goes on
                if is_outage(fault):
                    log_outage(fault, task="expiry")
                    await self._pause(RETRY_DELAY)
                else:
                    await self._skip_terms(fault)

    async def _next_terms(self) -> None:
        """Wait for the next term to start or end (or a change), then push for its flips."""
        async with self.store.read() as tx:
            mark = await service_mark(tx, EXPIRY_MARK) or self.now()
            upcoming = await next_license_change_at(tx, mark)
        wait = EXPIRY_RECHECK
        if upcoming is not None:
            wait = min(wait, self.clock.real_seconds(upcoming - self.now()))
        self.terms_changed.clear()
        await self._wait(wait)
        now = self.now()
        if upcoming is None or upcoming > now:
            return
        async with self.store.write() as tx:
            since = await service_mark(tx, EXPIRY_MARK) or mark
            requests = await pushes_for_expiry(tx, since, now, actor=self.actor)
            outgoing = await self.queue(tx, requests, [], now)
            await set_service_mark(tx, EXPIRY_MARK, now)
        log.info("collector.license_terms", until=now, pushes=len(outgoing))
        await self._publish(outgoing)

    async def _skip_terms(self, fault: Exception) -> None:
        """Give up on the terms up to now; the next look is a recheck interval away, so a
        fault that stays cannot spin."""
        now = self.now()
        try:
            async with self.store.write() as tx:
                await set_service_mark(tx, EXPIRY_MARK, now)
        except Exception as exc:
            # The terms stay due and are tried again after the recheck interval.
            log.error("collector.license_terms_failed", until=now, exc_info=fault)  # noqa: TRY400 -- the traceback is the fault's, not this exception's
            _log_failure(exc, task="expiry")
        else:
            log.error("collector.license_terms_skipped", until=now, exc_info=fault)
        self.terms_changed.clear()
        await self._wait(EXPIRY_RECHECK)

    async def _pause(self, seconds: float) -> None:
        """Up to ``seconds``, ended early by a shutdown only."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()

    async def _wait(self, seconds: float) -> None:
        """Up to ``seconds``, ended early by a shutdown or a change to the licenses."""
        stopping = asyncio.ensure_future(self.stopping.wait())
        changed = asyncio.ensure_future(self.terms_changed.wait())
        try:
            await asyncio.wait(
                [stopping, changed], timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
            changed.cancel()


def _log_failure(exc: Exception, *, task: str) -> None:
    if is_outage(exc):
        log_outage(exc, task=task)
    else:
        log.error("collector.watcher_failed", task=task, exc_info=exc)
