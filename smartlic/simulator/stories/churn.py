"""Churn: devices join, leave (deregistering themselves, or deregistered by the SA admin) and
are moved between VAs by the admin, every ``churn_every`` seconds, while the rest report."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from typing import TYPE_CHECKING

from smartlic.agent import LicenseState
from smartlic.simulator.stories.base import Run, Story, change_usage, initial_usage, phase_in

if TYPE_CHECKING:
    from smartlic.simulator.device import VirtualDevice


class Churn(Story):
    name = "churn"

    def _rounds(self) -> int:
        return max(1, math.ceil(self.params.duration / self.params.churn_every))

    def capacity(self) -> int:
        joins = math.ceil(self.params.devices * self.params.join_share)
        return self.params.devices + joins * self._rounds()

    async def play(self, run: Run) -> None:
        params = run.params
        self.joined: list[VirtualDevice] = []
        self.left: list[VirtualDevice] = []
        self.moved = 0
        self._ramps: set[asyncio.Task[None]] = set()
        phase_in(run)
        end = time.monotonic() + params.duration
        background = asyncio.create_task(change_usage(run, until=end))
        try:
            for _ in range(self._rounds()):
                await asyncio.sleep(min(params.churn_every, max(0.0, end - time.monotonic())))
                await self._round(run)
            await background
            await asyncio.gather(*self._ramps)
        finally:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
        await self._settle(run)

    async def _round(self, run: Run) -> None:
        params, fleet, rng = run.params, run.fleet, run.rng
        vas = self.vas()
        joins: list[VirtualDevice] = []
        for _ in range(round(params.devices * params.join_share)):
            va = vas[rng.randrange(len(vas))]
            joins.append(fleet.add(va=va, token=run.token_for(va), usage=initial_usage(rng)))
        self.joined += joins
        ramp = asyncio.create_task(fleet.ramp(joins, rate=params.rate, jitter=params.jitter))
        self._ramps.add(ramp)
        ramp.add_done_callback(self._ramps.discard)

        settled = [
            d
            for d in run.registered()
            if d.quiet() and d.device_id not in run.frozen and d.core.pending is None
        ]
        rng.shuffle(settled)
        leaving = settled[: round(params.devices * params.leave_share)]
        moving = settled[len(leaving) : len(leaving) + round(params.devices * params.move_share)]
        run.frozen.update(d.device_id for d in leaving)
        self.left += leaving
        by_admin = leaving[1::2] if run.admin is not None else []
        for device in leaving:
            if device not in by_admin:
                fleet.deregister(device)
        if run.admin is not None:
            if by_admin:
                await run.admin.deregister(self.account, [str(d.udi) for d in by_admin])
            moves = [(d, vas[(vas.index(d.va) + 1) % len(vas)]) for d in moving]
            if moves:
                await run.admin.move(self.account, [(str(d.udi), va) for d, va in moves])
                for device, va in moves:
                    device.va = va
                self.moved += len(moves)
        run.narrator.line(
            f"churn: +{len(joins)} joining, -{len(leaving)} leaving"
            f" ({len(by_admin)} by the admin), {len(moving) if run.admin else 0} moved"
        )

    async def _settle(self, run: Run) -> None:
        timeout = run.params.step_timeout
        stayed = [d for d in self.joined if d not in self.left]
        joined = await run.fleet.wait_for(
            lambda: all(d.core.state is LicenseState.AUTHORIZED for d in stayed),
            timeout=timeout,
        )
        run.expect(
            f"the {len(stayed)} devices that joined (and stayed) are authorized",
            joined,
            str(run.fleet.states(stayed)),
        )
        gone = await run.fleet.wait_for(
            lambda: not any(d.registered for d in self.left), timeout=timeout
        )
        run.expect(
            f"the {len(self.left)} devices that left are deregistered",
            gone,
            str(run.fleet.states(self.left)),
        )
