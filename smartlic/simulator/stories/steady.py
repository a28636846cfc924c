"""Steady reporting, and the two disturbances played over it: a storm and a broker outage."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final

from smartlic.agent import LicenseState
from smartlic.simulator.stories.base import Run, Story, change_usage, changed_usage, phase_in

_RECONNECT_GRACE: Final = 30.0
"""Real seconds, beyond the reconnection backoff, for every device to be back."""


class Steady(Story):
    """The fleet reports on its interval; a share of it changes usage every interval."""

    name = "steady"

    async def play(self, run: Run) -> None:
        # One interval to spread the reports out (measured apart), then the steady part.
        run.phase("phase-in")
        phase_in(run)
        await change_usage(run, until=time.monotonic() + run.real_interval())
        run.phase("main")
        await change_usage(run, until=time.monotonic() + run.params.duration)
        run.expect(
            "every device stays authorized (the pools have room for the most they can use)",
            all(d.core.state is LicenseState.AUTHORIZED for d in run.registered()),
            str(run.fleet.states()),
        )


class Storm(Story):
    """Every device disconnects, then all reconnect and report at the same moment."""

    name = "storm"

    async def play(self, run: Run) -> None:
        params = run.params
        phase_in(run)
        end = time.monotonic() + params.duration
        background = asyncio.create_task(change_usage(run, until=end))
        try:
            for storm in range(1, params.storms + 1):
                await asyncio.sleep(params.duration / (params.storms + 1))
                await self._storm(run, storm)
            await background
        finally:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background

    async def _storm(self, run: Run, number: int) -> None:
        fleet = run.fleet
        devices = run.registered()
        await run.show(f"storm {number}: {len(devices)} devices disconnect")
        await fleet.disconnect(devices)
        targets = {}
        for device in devices:
            fleet.set_usage(device, changed_usage(device.usage, run.rng))
            targets[device.device_id] = device.core.snapshot().next_seq
        started = time.monotonic()
        fleet.reconnect(devices)
        back = await fleet.wait_for(
            lambda: all(d.connected for d in devices),
            timeout=_RECONNECT_GRACE + run.params.reconnect_max,
        )
        reconnected = time.monotonic() - started
        # Answered: the report each device made while offline (or a newer one).
        answered = await fleet.wait_for(
            lambda: all(d.max_answered >= targets[d.device_id] for d in devices),
            timeout=run.params.step_timeout,
        )
        took = time.monotonic() - started
        run.narrator.line(
            f"storm {number}: {len(devices)} reconnected in {reconnected:.2f} s"
            f" ({len(devices) / max(reconnected, 1e-6):,.0f}/s), all answered after {took:.2f} s"
        )
        run.expect(f"storm {number}: every device reconnects", back)
        run.expect(f"storm {number}: every report made offline is answered", answered)


class Outage(Story):
    """The broker is stopped (or killed) mid-run and restarted on the same port."""

    name = "outage"

    async def play(self, run: Run) -> None:
        params, broker = run.params, run.broker
        if not broker.restartable:
            run.expect("the broker can be restarted (the run must start its own)", met=False)
            return
        phase_in(run)
        end = time.monotonic() + params.duration
        await change_usage(run, until=time.monotonic() + params.outage_at)
        how = "killed" if params.outage_kill else "stopped"
        await run.show(f"broker {how} for {params.outage_for:g} s")
        await asyncio.to_thread(broker.kill if params.outage_kill else broker.stop)
        down = time.monotonic()
        await run.fleet.wait_for(lambda: run.fleet.connected == 0, timeout=10)
        # Usage keeps changing while the broker is down: those reports wait in the outboxes.
        await change_usage(run, until=down + params.outage_for)
        await asyncio.to_thread(broker.start)
        restarted = time.monotonic()
        devices = [d for d in run.fleet.devices if d.client is not None]
        back = await run.fleet.wait_for(
            lambda: all(d.connected for d in devices),
            timeout=_RECONNECT_GRACE + params.reconnect_max,
        )
        run.narrator.line(
            f"broker back after {restarted - down:.1f} s; {len(devices)} devices reconnected"
            f" in {time.monotonic() - restarted:.2f} s"
        )
        run.expect("every device reconnects after the outage", back)
        await change_usage(run, until=end)
