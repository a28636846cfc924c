"""The devices' records between batches, so a batch loads only what may have changed.

Every batch decides against its devices' records as they are in its write transaction: their
state, key, VA, last sequence number and counts. Loading them took two queries and a
``DeviceRecord`` per device per batch (≈ 15 % of a batch's time in the drain benchmark). Yet in
a steady stream nothing but the service's own batches changes those records, and each batch
already knows what it made of them. So the records a batch ends with are kept, and the next
batch uses them while the store's version (:class:`~smartlic.collector.store.Versions`) is
the one the last batch left: any other commit — an administrative command, a second
collector on the same database, another task of this service — changes it, and the kept
records are dropped.

Only records a batch reads back exactly as the store now holds them are kept: those it loaded
and those whose reports it applied. A device the batch registered or deregistered is forgotten
and loaded again when next needed. A record's ``notice_seq`` is not kept current (notice
numbers are reserved in the store, never read from the record).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from smartlic.collector.devices import DeviceRecord, find_devices

if TYPE_CHECKING:
    from collections.abc import Collection, Hashable, Iterable, Mapping

    from smartlic.collector.store import Transaction

RECORD_CACHE: Final = 100_000
"""Records kept (a few hundred bytes each); past this the cache starts again empty."""


def kept_records_hold(kept_at: Hashable | None, version: Hashable) -> bool:
    """Do the records kept after the last batch still match the store at ``version``?

    They do while nothing committed since that batch: the version its transaction left is
    the one the store is at now.
    """
    return kept_at == version


class DeviceRecords:
    """Device records carried from one committed batch to the next."""

    def __init__(self, limit: int = RECORD_CACHE) -> None:
        self._limit = limit
        self._kept: dict[str, DeviceRecord] = {}
        self._kept_at: Hashable | None = None
        self._pending: Hashable | None = None
        self.loaded = 0
        """Records read from the store so far (the tests read it)."""

    async def current(
        self, tx: Transaction, device_ids: Collection[str]
    ) -> dict[str, DeviceRecord]:
        """The records of the known devices among ``device_ids`` as ``tx`` sees them."""
        versions = await tx.versions()
        if not kept_records_hold(self._kept_at, versions.start):
            self._kept.clear()
        # Until this batch commits, what is kept matches no version: a batch that fails
        # (rolled back) leaves nothing behind for the next one to trust.
        self._kept_at, self._pending = None, versions.end
        found = {i: self._kept[i] for i in device_ids if i in self._kept}
        missing = [i for i in device_ids if i not in found]
        if missing:
            loaded = await find_devices(tx, missing)
            self.loaded += len(loaded)
            found.update(loaded)
        return found

    def committed(self, records: Mapping[str, DeviceRecord], *, changed: Iterable[str]) -> None:
        """The batch that called :meth:`current` committed, ending with ``records``; the
        devices in ``changed`` were registered or deregistered by it."""
        if len(self._kept) + len(records) > self._limit:
            self._kept.clear()
        self._kept.update(records)
        for device_id in changed:
            self._kept.pop(device_id, None)
        self._kept_at, self._pending = self._pending, None
