"""Step 2 of a batch: every signature checked, with the key each message must be signed with.

Reports and deregistrations are checked with the device's registered key, registrations with
the key they register (proof of possession, SPEC §4). Registered keys are kept in memory, so
verifying needs no database round trip in the steady state. A key only changes by a
registration; the collector's own are remembered as it decides them, but another collector
sharing the database can register a device again with a new key at any moment. So a signature
that fails with a key from memory is not refused on that alone: the device's key is read
again, and where it changed the signature is checked with the new one. Only failures pay for
that second look, a read for the whole batch's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from smartlic.collector.devices import find_devices
from smartlic.collector.service.decisions import refuse_unverified
from smartlic.protocol import ErrorCode, RegistrationRequest

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from smartlic.collector.devices import DeviceRecord
    from smartlic.collector.service.crypto import CryptoPool
    from smartlic.collector.service.intake import Parsed
    from smartlic.collector.store import Store
    from smartlic.protocol import Opened, VerifyingKey

KEYS_KEPT: Final = 200_000
"""Keys kept in memory (about 1 KiB each with their cryptography objects)."""


@dataclass(slots=True, kw_only=True)
class _Check:
    """One signature to check, with the key it is checked with."""

    item: Parsed
    device_id: str
    opened: Opened
    key: VerifyingKey
    remembered: bool
    """The key came from memory, not from the store in this batch or from a registration."""
    alternatives: list[VerifyingKey] = field(default_factory=list)
    """The other keys the device may hold when deciding reaches this message, the likeliest
    first: the key it had before the batch, then those of the batch's earlier registrations of
    it (any of those registrations may be refused)."""


class Verifier:
    def __init__(self, store: Store, crypto: CryptoPool) -> None:
        self.store = store
        self.crypto = crypto
        self._keys: dict[str, VerifyingKey] = {}

    def remember(self, record: DeviceRecord) -> None:
        """The key ``record`` holds is the device's from now on."""
        self._keys[record.device_id] = record.verifying_key()

    def _make_room(self, batch: Collection[str], loading: int) -> None:
        """Forget keys, when ``loading`` more would not fit, but none of ``batch``'s devices:
        the batch's checks read them after the load, and a key forgotten in between would
        refuse a registered device's report as from an unknown one."""
        if len(self._keys) + loading > KEYS_KEPT:
            self._keys = {d: k for d, k in self._keys.items() if d in batch}

    async def verify(self, items: Sequence[Parsed]) -> None:
        """Check every opened item's signature; refuse, with the reason, those that fail."""
        batch = {i.device_id for i in items if i.device_id and i.opened}
        missing = {d for d in batch if d not in self._keys}
        self._make_room(batch, len(missing))
        loaded = await self._load(missing)
        checks = self._checks(items, loaded)
        problems = await self.crypto.verify([(c.opened, c.key) for c in checks])
        problems = await self._second_look(checks, problems)
        problems = await self._other_keys(checks, problems)
        for check, problem in zip(checks, problems, strict=True):
            if problem is None:
                check.item.verified_key = check.key
            elif isinstance(check.opened.message, RegistrationRequest):
                check.item.refuse(
                    ErrorCode.PROOF_OF_POSSESSION,
                    f"the request is not signed by the key it registers ({problem})",
                    answer=True,
                )
            else:
                refusal = refuse_unverified(problem, device_known=True)
                check.item.refuse(refusal.code, refusal.reason, answer=refusal.answer)

    async def _load(self, device_ids: Collection[str]) -> set[str]:
        """Read the keys of ``device_ids`` into memory; the ids of the devices found."""
        if not device_ids:
            return set()
        async with self.store.read() as tx:
            found = await find_devices(tx, device_ids)
        for record in found.values():
            self.remember(record)
        return set(found)

    def _checks(self, items: Sequence[Parsed], loaded: Collection[str]) -> list[_Check]:
        checks: list[_Check] = []
        # A key registered earlier in the batch is the device's key from there on, if the
        # registration goes through (deciding checks which key the device holds by then).
        registering: dict[str, list[VerifyingKey]] = {}
        for item in items:
            if item.opened is None or item.device_id is None:
                continue
            message = item.opened.message
            device_id = item.device_id
            alternatives: list[VerifyingKey] = []
            if isinstance(message, RegistrationRequest):
                key, remembered = message.verifying_key, False
                registering.setdefault(device_id, []).append(key)
            elif device_id in registering:
                *earlier, key = registering[device_id]
                remembered = False
                before = self._keys.get(device_id)
                # Likeliest first: the key it had (a registered device's new keys are refused),
                # then the first the batch registered (which later ones cannot replace).
                alternatives = _distinct([*([before] if before is not None else []), *earlier], key)
            elif device_id in self._keys:
                key, remembered = self._keys[device_id], device_id not in loaded
            else:
                item.refuse(
                    ErrorCode.UNKNOWN_DEVICE, "no device is registered on this topic", answer=False
                )
                continue
            checks.append(
                _Check(
                    item=item,
                    device_id=device_id,
                    opened=item.opened,
                    key=key,
                    remembered=remembered,
                    alternatives=alternatives,
                )
            )
        return checks

    async def _other_keys(
        self, checks: Sequence[_Check], problems: Sequence[str | None]
    ) -> list[str | None]:
        """Check again, with the next key the device may hold by then, what failed with the
        key of a registration earlier in the batch: that registration may be refused, and
        the report be signed, rightly, with the key the device keeps. Deciding refuses what
        was checked with a key the device does not hold at that point."""
        outcome = list(problems)
        while again := [n for n, c in enumerate(checks) if outcome[n] and c.alternatives]:
            for n in again:
                checks[n].key = checks[n].alternatives.pop(0)
            verdicts = await self.crypto.verify([(checks[n].opened, checks[n].key) for n in again])
            for n, problem in zip(again, verdicts, strict=True):
                outcome[n] = problem
        return outcome

    async def _second_look(
        self, checks: Sequence[_Check], problems: Sequence[str | None]
    ) -> list[str | None]:
        """Check again, with the key now stored, what failed with a key from memory that
        another collector may have replaced."""
        outcome = list(problems)
        doubtful = [n for n, check in enumerate(checks) if outcome[n] and check.remembered]
        if not doubtful:
            return outcome
        await self._load({checks[n].device_id for n in doubtful})
        again = [n for n in doubtful if self._took_stored_key(checks[n])]
        verdicts = await self.crypto.verify([(checks[n].opened, checks[n].key) for n in again])
        for n, problem in zip(again, verdicts, strict=True):
            outcome[n] = problem
        return outcome

    def _took_stored_key(self, check: _Check) -> bool:
        """Give ``check`` the device's key as now stored; whether it is another key."""
        stored = self._keys.get(check.device_id)
        if stored is None or stored.raw == check.key.raw:
            return False
        check.key = stored
        return True


ALTERNATIVES_KEPT: Final = 3
"""Keys a message is checked with besides its first: a device registering again and again in
one batch (a hostile one) must not make each of its messages cost a check per registration."""


def _distinct(keys: Sequence[VerifyingKey], first: VerifyingKey) -> list[VerifyingKey]:
    """``keys`` without repeats nor ``first``, the first ALTERNATIVES_KEPT of them."""
    seen = {first.raw}
    kept: list[VerifyingKey] = []
    for key in keys:
        if key.raw not in seen and len(kept) < ALTERNATIVES_KEPT:
            seen.add(key.raw)
            kept.append(key)
    return kept
