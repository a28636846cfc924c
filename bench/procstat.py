"""What the benchmarks read from ``/proc`` about the processes they measure (Linux only).

CPU time per process and per thread, the whole machine's busy and idle time, and how often
each thread is runnable: a thread that is runnable most of the time while the machine still
has idle time is what a pipeline waits for.
"""

from __future__ import annotations

import collections
import os
import threading
from pathlib import Path
from typing import Self


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (the collector's crypto workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """CPU seconds of process ``pid`` and its child processes: everything the collector costs."""
    total = cpu_seconds_of(Path(f"/proc/{pid}/stat"))
    for child in children(pid):
        try:
            total += cpu_seconds_of(Path(f"/proc/{child}/stat"))
        except OSError:
            continue
    return total


def tasks(pid: int) -> dict[str, Path]:
    """The ``stat`` file of each thread of ``pid`` and of each child process, by name."""
    found: dict[str, Path] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        # Python does not name OS threads: the event loop is the main thread (tid == pid).
        name = "event loop" if task.name == str(pid) else f"thread {task.name}"
        found[name] = task / "stat"
    for child in children(pid):
        found[f"worker process {child}"] = Path(f"/proc/{child}/stat")
    return found


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name of process ``pid``, and per child process."""
    found: dict[str, float] = {}
    for name, stat in tasks(pid).items():
        try:
            found[name] = cpu_seconds_of(stat)
        except OSError:
            continue
    return found


def machine_cpu() -> tuple[float, float]:
    """Busy and idle CPU seconds of the whole machine so far, all cores (``/proc/stat``)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / tick, idle / tick


def cpu_seconds_of(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _state(stat: Path) -> str | None:
    try:
        return stat.read_text().rsplit(")", 1)[1].split(maxsplit=1)[0]
    except (OSError, IndexError):
        return None


class RunnableSampler:
    """Samples, in a thread, which of a process tree's threads are runnable (state ``R``).

    ``R`` means running or waiting for a core. Reading a few ``stat`` files every
    ``interval`` seconds costs a few per cent of a core, which is why it is opt-in.
    """

    def __init__(self, pids: dict[str, int], *, interval: float = 0.005) -> None:
        self._pids = pids
        """What to watch, by label: "collector" is its every thread and worker process; any
        other label is one process's main thread (the broker)."""
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="runnable-sampler", daemon=True)
        self.samples = 0
        self.runnable: collections.Counter[str] = collections.Counter()
        self.counts: collections.Counter[int] = collections.Counter()
        """How many samples saw n of the watched threads runnable."""
        self.alone: collections.Counter[str] = collections.Counter()
        """Samples in which this was the only watched thread runnable."""

    def _watched(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for label, pid in self._pids.items():
            try:
                if label == "collector":
                    found.update(tasks(pid))
                else:
                    found[label] = Path(f"/proc/{pid}/stat")
            except OSError:
                continue
        return found

    def _run(self) -> None:
        watched = self._watched()
        while not self._stop.wait(self._interval):
            if self.samples % 100 == 0:
                watched = self._watched()  # workers start and restart
            running = [name for name, stat in watched.items() if _state(stat) == "R"]
            self.samples += 1
            self.counts[len(running)] += 1
            self.runnable.update(running)
            if len(running) == 1:
                self.alone[running[0]] += 1

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        total = max(1, self.samples)
        shares = ", ".join(f"{name} {n / total:.0%}" for name, n in self.runnable.most_common())
        alone = ", ".join(f"{name} {n / total:.0%}" for name, n in self.alone.most_common(3))
        nothing = self.counts[0] / total
        return (
            f"runnable share of {self.samples} samples: {shares}; only one runnable:"
            f" {alone or 'never'}; none runnable {nothing:.0%}"
        )
