"""What deciding one batch gathers for the end of its transaction (``service/ingest.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from smartlic.collector.service.notices import NoticeRequest, ResultRequest

if TYPE_CHECKING:
    from smartlic.collector.changes import PoolFlip
    from smartlic.collector.compliance import PoolKey
    from smartlic.collector.devices import CountsUpdate, DeviceRecord
    from smartlic.collector.service.intake import Parsed
    from smartlic.collector.service.notices import ErrorRequest, NoticeOwed
    from smartlic.protocol import DeregistrationRequest, RegistrationRequest, VerifyingKey


@dataclass(frozen=True, slots=True)
class Accepted:
    """An accepted report, with what it changes and what identifies its content."""

    item: Parsed
    update: CountsUpdate
    digest: bytes


@dataclass(slots=True)
class Batch:
    """What deciding a batch produced, gathered for the end of its transaction."""

    items: list[Parsed]
    now: int
    records: dict[str, DeviceRecord]
    accepted: list[Accepted] = field(default_factory=list)
    pending: list[Accepted] = field(default_factory=list)
    """Accepted reports whose counts are not applied yet (applied in bulk by _flush)."""
    duplicates: list[tuple[Parsed, Parsed | bytes]] = field(default_factory=list)
    """Each with the report it copies in this batch, or the answer stored for it earlier."""
    errors: list[tuple[Parsed, ErrorRequest]] = field(default_factory=list)
    results: list[tuple[Parsed, DeviceRecord, RegistrationRequest | DeregistrationRequest]] = field(
        default_factory=list
    )
    flips: list[PoolFlip] = field(default_factory=list)
    pools: set[PoolKey] = field(default_factory=set)
    """Pools whose usage this batch moved: evaluated, and recorded if they flipped."""
    last_seq: dict[str, int] = field(default_factory=dict)
    reports: dict[tuple[str, int], Accepted] = field(default_factory=dict)
    answered_as: dict[int, DeviceRecord] = field(default_factory=dict)
    """Each accepted report's device (by the report's ``id``) as the report left it: a
    deregistration later in the batch must not take the counts its answer is about."""
    pushed: int = 0
    """How many pushes the batch queued."""
    superseded: set[int] = field(default_factory=set)
    """Accepted reports (by ``id``) of a registration that a later one in this batch replaced:
    answered, but not kept, since the new registration starts a new sequence window."""

    def open_new_window(self, device_id: str) -> None:
        """A device registered again in this batch: its sequence window starts anew (as in
        the store, where registering deletes its accepted reports), here as well as there."""
        self.last_seq.pop(device_id, None)
        for key in [key for key in self.reports if key[0] == device_id]:
            self.superseded.add(id(self.reports.pop(key)))

    def owed(self, collector_key: VerifyingKey) -> list[tuple[Parsed, NoticeOwed]]:
        """The batch's answers in arrival order, the order they are sent and numbered in."""
        by_item: dict[int, NoticeOwed] = {}
        for accepted in self.accepted:
            device = self.answered_as[id(accepted)]
            by_item[id(accepted.item)] = NoticeRequest(
                device=device, counts=device.counts, in_reply_to=accepted.update.seq
            )
        for item, error in self.errors:
            by_item[id(item)] = error
        for item, record, request in self.results:
            by_item[id(item)] = ResultRequest(
                device=record, request=request, collector_key=collector_key
            )
        return [(item, by_item[id(item)]) for item in self.items if id(item) in by_item]
