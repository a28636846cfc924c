"""The status line of a run: rewritten in place on a terminal, a plain line otherwise."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from smartlic.simulator import progress
from smartlic.simulator.metrics import Metrics
from smartlic.simulator.progress import Narrator, Progress

if TYPE_CHECKING:
    import pytest


@dataclass
class _Fleet:
    """What the status line reads of a fleet."""

    connected: int = 2
    devices: list[object] = field(default_factory=lambda: [object(), object(), object()])
    counts: Counter[str] = field(
        default_factory=lambda: Counter({"AUTHORIZED": 2, "OUT_OF_COMPLIANCE": 1})
    )

    def states(self) -> Counter[str]:
        return self.counts


def _progress(stream: io.StringIO, *, tty: bool) -> Progress:
    metrics = Metrics(scale=1.0, now=0.0)
    metrics.counters.reports_sent = 1234
    fleet: Any = _Fleet()
    return Progress(fleet, metrics, stream, tty=tty)


async def _shown_twice(shown: Progress, stream: io.StringIO) -> None:
    """Run ``shown`` until it has shown the status twice, then stop it."""
    shown.start()
    async with asyncio.timeout(5):
        while stream.getvalue().count("connected") < 2:
            await asyncio.sleep(0.01)
    await shown.stop()


def test_the_status_line_counts_devices_reports_and_states_in_short() -> None:
    line = _progress(io.StringIO(), tty=False).status()

    assert "setup  connected 2/3 · sent 1,234 · answered 0 · AUTH 2 OOC 1" == line[8:]


async def test_on_a_terminal_the_line_is_rewritten_in_place_and_cut_to_its_width(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress, "_TTY_EVERY", 0.01)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda: os.terminal_size((31, 24)))
    stream = io.StringIO()

    await _shown_twice(_progress(stream, tty=True), stream)

    writes = stream.getvalue().split("\r")[1:]
    assert "\x1b[K" == writes[-1], "stop() erases the line it left"
    assert all(len(w) == 30 + len("\x1b[K") for w in writes[:-1])


async def test_off_a_terminal_each_status_is_a_line_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress, "_LOG_EVERY", 0.01)
    stream = io.StringIO()

    await _shown_twice(_progress(stream, tty=False), stream)

    lines = stream.getvalue().splitlines()
    assert len(lines) >= 2
    assert [] == [line for line in lines if "\r" in line or "\x1b" in line]


def test_a_story_line_clears_the_status_line_first() -> None:
    stream = io.StringIO()
    shown = _progress(stream, tty=True)
    stream.write("\rstatus")
    shown._shown = True

    Narrator(stream, verbose=False, progress=shown).line("· a step")

    assert "\rstatus\r\x1b[K· a step\n" == stream.getvalue()
