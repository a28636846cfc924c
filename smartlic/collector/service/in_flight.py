"""Which outbox rows are out with the broker, and which it has taken: the service's bookkeeping
between publishing a push and deleting its row.

A push's row is deleted only once the broker acknowledged it (SPEC §5: a crash in between sends
it again rather than losing it), and a row is published by one task at a time: the resend after
a reconnection leaves alone what a task is publishing, what awaits its PUBACK, and what was
delivered but is not deleted yet (a store outage may hold the deletion up).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable


class PushesInFlight:
    def __init__(self) -> None:
        self._rows_by_mid: dict[int, int] = {}
        """The outbox row of each push published and not yet acknowledged, by packet id."""
        self._claimed: set[int] = set()
        """Rows a task is publishing, not yet given a packet id (it may wait for room in the
        publish window)."""
        self._delivered: list[int] = []
        """Rows whose push the broker acknowledged, not yet deleted: kept through a store
        outage so that they are deleted once it ends, and not sent again meanwhile."""
        self.settled = asyncio.Event()
        """Set when no push awaits its PUBACK any more, or the connection is gone."""

    @property
    def awaiting(self) -> bool:
        """Some push awaits its PUBACK."""
        return bool(self._rows_by_mid)

    def known(self) -> set[int]:
        """The rows a resend must leave alone."""
        return {*self._rows_by_mid.values(), *self._claimed, *self._delivered}

    def claim(self, rows: Iterable[int]) -> set[int]:
        """A task is about to publish ``rows``; what it claimed, for :meth:`release`."""
        claimed = set(rows)
        self._claimed |= claimed
        return claimed

    def published(self, mid: int, row: int) -> None:
        self._rows_by_mid[mid] = row
        self._claimed.discard(row)

    def release(self, claimed: set[int]) -> None:
        """The task is done: what it did not publish is the next resend's to take."""
        self._claimed -= claimed

    def acknowledged(self, mid: int) -> None:
        """The broker has the push of ``mid``. Resolved at the PUBACK, while the packet id still
        names this push: once it is free, the next publish may take it (MQTT 3.1.1 §2.3.1),
        and a row looked up later by that id would be another push, deleted undelivered."""
        row = self._rows_by_mid.pop(mid, None)
        if row is not None:
            self._delivered.append(row)
        self._settle_if_done()

    def refused(self, mid: int) -> int | None:
        """The broker will not deliver the push of ``mid`` (its ACL, a quota, its size): the
        row stays, to go again at the next connection or start. Which row that was."""
        row = self._rows_by_mid.pop(mid, None)
        self._settle_if_done()
        return row

    def connection_lost(self) -> None:
        self.settled.set()

    def delivered(self) -> list[int]:
        """The rows to delete now; :meth:`forgotten` once they are."""
        return self._delivered[:]

    def forgotten(self, count: int) -> None:
        """The first ``count`` rows :meth:`delivered` gave are deleted."""
        del self._delivered[:count]

    def _settle_if_done(self) -> None:
        if not self._rows_by_mid:
            self.settled.set()
