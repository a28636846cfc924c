"""What a run shows while it runs: one updating status line on a terminal (a plain line every
few seconds otherwise), and the story's steps with, in verbose mode, the compliance view."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Final, TextIO

if TYPE_CHECKING:
    from collections.abc import Sequence

    from smartlic.simulator.fleet import Fleet
    from smartlic.simulator.metrics import Metrics
    from smartlic.simulator.setup import PoolUsage
    from smartlic.simulator.stories.base import Run

_TTY_EVERY: Final = 0.5
_LOG_EVERY: Final = 5.0
_SHORT: Final = {"AUTHORIZED": "AUTH", "OUT_OF_COMPLIANCE": "OOC", "REGISTERED": "REG"}


class Progress:
    def __init__(self, fleet: Fleet, metrics: Metrics, stream: TextIO, *, tty: bool) -> None:
        self.fleet = fleet
        self.metrics = metrics
        self.stream = stream
        self.tty = tty
        self.started = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._shown = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="progress")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.clear()

    def status(self) -> str:
        fleet, counters = self.fleet, self.metrics.counters
        states = " ".join(
            f"{_SHORT.get(name, name)} {n:,}" for name, n in sorted(fleet.states().items())
        )
        return (
            f"{time.monotonic() - self.started:6.1f}s {self.metrics.phase.name:<6}"
            f" connected {fleet.connected:,}/{len(fleet.devices):,}"
            f" · sent {counters.reports_sent:,} · answered {counters.reports_answered:,}"
            f" · {states}"
        )

    def clear(self) -> None:
        if self.tty and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

    async def _run(self) -> None:
        every = _TTY_EVERY if self.tty else _LOG_EVERY
        while True:
            await asyncio.sleep(every)
            line = self.status()
            if self.tty:
                width = shutil.get_terminal_size().columns - 1
                self.stream.write("\r" + line[:width] + "\x1b[K")
                self._shown = True
            else:
                self.stream.write(line + "\n")
            self.stream.flush()


class Narrator:
    """Prints the story's lines above the status line."""

    def __init__(self, stream: TextIO, *, verbose: bool, progress: Progress | None = None) -> None:
        self.stream = stream
        self.verbose = verbose
        self.progress = progress

    def line(self, text: str) -> None:
        if self.progress is not None:
            self.progress.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    async def step(self, title: str, run: Run) -> None:
        if not self.verbose:
            self.line(f"· {title}")
            return
        self.line(f"\n── {title} " + "─" * max(3, 76 - len(title)))
        if run.admin is not None:
            self.line(usage_table(await run.admin.usage(run.account)))
        self.line(device_states(run))


def usage_table(pools: Sequence[PoolUsage]) -> str:
    """The collector's compliance view, as ``smartlic-collector usage`` prints it."""
    header = ("VA", "TAG", "PURCHASED", "IN_USE", "BALANCE", "STATUS")
    rows = [
        (
            p.va,
            p.tag,
            str(p.purchased),
            str(p.in_use),
            str(p.balance),
            p.compliance.status.name,
        )
        for p in pools
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    right = {2, 3, 4}
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in (header, *rows)
    )


def device_states(run: Run) -> str:
    """Device states per VA, as the devices themselves see them."""
    per_va: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for device in run.fleet.devices:
        if device.client is not None:
            per_va[device.va][device.core.state.name] += 1
    return "devices: " + " · ".join(
        f"{va}: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        for va, states in sorted(per_va.items())
    )
