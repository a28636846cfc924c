"""Hostile: a share of the devices turns hostile and sends, at random moments of the run, every
kind of message of :mod:`smartlic.simulator.hostile`, while the fleet keeps reporting. The
run's checks then prove each one was refused (or, for a forged notice, ignored)."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from typing import TYPE_CHECKING, Final

from smartlic.simulator import hostile
from smartlic.simulator.hostile import (
    FORGED_NOTICE_SEQ_BASE,
    HOSTILE_SEQ_BASE,
    HostileKind,
    HostileMessage,
)
from smartlic.simulator.stories.base import Run, Story, change_usage, phase_in

if TYPE_CHECKING:
    from collections.abc import Sequence
    from random import Random

    from smartlic.simulator.device import VirtualDevice

_DAY: Final = 86_400
_SEND_WITHIN: Final = 0.8
"""Hostile messages go out in the first 80 % of the run, so their answers arrive within it."""


_AIMED: Final = frozenset({HostileKind.WRONG_TOPIC, HostileKind.FORGED_NOTICE})
"""The kinds aimed at another device: its uplink, or its downlink."""


def _victim(
    rng: Random, device: VirtualDevice, kind: HostileKind, pool: Sequence[VirtualDevice]
) -> VirtualDevice | None:
    """Whom ``device``'s message of ``kind`` is aimed at: never itself, for a report on its own
    uplink is a valid report (it would be accepted and take its sequence numbers); ``device``
    for the kinds aimed at nobody; None when no other device can be the target."""
    if kind not in _AIMED:
        return device
    others = [d for d in pool if d is not device]
    return rng.choice(others) if others else None


class Hostile(Story):
    name = "hostile"

    async def play(self, run: Run) -> None:
        params, rng = run.params, run.rng
        registered = run.registered()
        count = math.ceil(len(registered) * params.hostile_share)
        attackers, honest = registered[:count], registered[count:]
        kinds = [HostileKind(k) for k in params.hostile_kinds]
        self._seqs = itertools.count(HOSTILE_SEQ_BASE)
        self._notice_seqs = itertools.count(FORGED_NOTICE_SEQ_BASE)
        plan = [
            (rng.uniform(0, params.duration * _SEND_WITHIN), device, kind, victim)
            for device in attackers
            for kind in kinds
            for _ in range(params.hostile_each)
            if (victim := _victim(rng, device, kind, honest or attackers)) is not None
        ]
        for device in attackers:
            device.hostile = True
        run.fleet.watched = frozenset(
            d.device_id for _, attacker, _, victim in plan for d in (attacker, victim)
        )
        run.fleet.observer = run.ledger.observe
        loop = asyncio.get_running_loop()
        for delay, device, kind, victim in plan:
            loop.call_later(delay, self._send, run, device, kind, victim)
        await run.show(f"{count} hostile devices will send {len(plan)} messages")
        phase_in(run)
        await change_usage(run, until=time.monotonic() + params.duration)
        run.narrator.line(f"{len(run.ledger.sent)} hostile messages sent")

    def _send(
        self, run: Run, device: VirtualDevice, kind: HostileKind, victim: VirtualDevice
    ) -> None:
        if device.client is None or not device.connected:
            # Offline at that moment (never in this story): it would be queued, then dropped
            # by the session rules; send nothing rather than count a message never sent.
            return
        message = self._build(run, device, kind, victim)
        if message is not None:
            run.fleet.send_raw(device, message.topic, message.payload)
            run.ledger.record(message)

    def _build(  # noqa: PLR0911 -- one return per kind
        self, run: Run, device: VirtualDevice, kind: HostileKind, victim: VirtualDevice
    ) -> HostileMessage | None:
        now, topics, sender = run.clock.now(), run.topics, device.device_id
        counts = dict(device.usage) or {"network-advantage": 1}
        if kind is HostileKind.FORGED:
            return hostile.forged_report(
                seq=next(self._seqs),
                counts=counts,
                entropy=run.rng.randbytes,
                device_id=sender,
                now=now,
                topics=topics,
            )
        if kind is HostileKind.TAMPERED:
            return hostile.tampered_report(
                key=device.key,
                seq=next(self._seqs),
                counts=counts,
                device_id=sender,
                now=now,
                topics=topics,
            )
        if kind is HostileKind.REPLAYED:
            if not device.answered:
                return None
            return hostile.replayed_report(
                key=device.key,
                accepted_seq=max(device.answered),
                counts=counts,
                device_id=sender,
                now=now,
                topics=topics,
            )
        if kind is HostileKind.SKEWED:
            skew = 10 * run.clock_skew + _DAY
            return hostile.skewed_report(
                key=device.key,
                seq=next(self._seqs),
                counts=counts,
                skew=skew,
                device_id=sender,
                now=now,
                topics=topics,
            )
        if kind is HostileKind.OVERSIZE:
            return hostile.oversize_report(
                key=device.key,
                seq=next(self._seqs),
                counts=counts,
                device_id=sender,
                now=now,
                topics=topics,
            )
        if kind is HostileKind.WRONG_TOPIC:
            return hostile.wrong_topic_report(
                key=device.key,
                victim=victim.device_id,
                seq=next(self._seqs),
                counts=counts,
                device_id=sender,
                now=now,
                topics=topics,
            )
        if kind is HostileKind.GARBAGE:
            return hostile.garbage(
                device_id=device.device_id, topics=topics, entropy=run.rng.randbytes
            )
        return hostile.forged_notice(
            key=device.key,
            victim=victim.device_id,
            notice_seq=next(self._notice_seqs),
            device_id=sender,
            now=now,
            topics=topics,
        )
