"""What every story shares: the run it plays in, the usage model, background changes.

A story says what accounts and licenses it needs (:meth:`Story.plan`), which devices start and
where (:meth:`Story.initial`), and what happens once they are all authorized
(:meth:`Story.play`). It states what it expects to see on the way (:meth:`Run.expect`): each
expectation that fails makes the run fail, like a lost report would.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Final

from smartlic.simulator.setup import DEFAULT_VA, AccountPlan, Deposit, OrderLine

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable, Mapping

    from smartlic.agent import LicenseState
    from smartlic.protocol import Topics
    from smartlic.simulator.clock import VirtualClock
    from smartlic.simulator.device import VirtualDevice
    from smartlic.simulator.fleet import Fleet
    from smartlic.simulator.hostile import HostileLedger
    from smartlic.simulator.infra import Broker
    from smartlic.simulator.metrics import Metrics
    from smartlic.simulator.progress import Narrator
    from smartlic.simulator.scenarios import Parameters
    from smartlic.simulator.setup import Admin

VA_NAMES: Final = ("DEFAULT", "Engineering", "Operations", "Sales", "Lab", "Branches")
ADVANTAGE: Final = "network-advantage"
ESSENTIALS: Final = "dna-essentials"
MOST: Final = {ADVANTAGE: 3, ESSENTIALS: 1}
"""The most of each tag one device of the usage model uses."""
_BACKGROUND_STEP: Final = 0.1


def va_names(count: int) -> list[str]:
    named = list(VA_NAMES[:count])
    return named + [f"VA-{n}" for n in range(len(named) + 1, count + 1)]


def initial_usage(rng: random.Random) -> dict[str, int]:
    return {ADVANTAGE: rng.randint(1, 2), ESSENTIALS: 1}


def changed_usage(usage: Mapping[str, int], rng: random.Random) -> dict[str, int]:
    """One step of the usage model: network-advantage moves by one within 1..3."""
    current = usage.get(ADVANTAGE, 1)
    step = rng.choice((-1, 1))
    if not 1 <= current + step <= MOST[ADVANTAGE]:
        step = -step
    return {**usage, ADVANTAGE: current + step}


@dataclass(frozen=True, slots=True)
class Expectation:
    what: str
    met: bool
    detail: str = ""

    def __str__(self) -> str:
        """What was expected, and what was seen when there is something to say."""
        return f"{self.what} ({self.detail})" if self.detail else self.what


def token_for(tokens: Mapping[str, str], va: str) -> str | None:
    """The registration token for a device of ``va``: its own, or any one when ``va`` has none
    (tokens given on the command line rather than made through ``--db``)."""
    return tokens.get(va) or next(iter(tokens.values()), None)


@dataclass(slots=True, kw_only=True)
class Run:
    """Everything a story acts on."""

    params: Parameters
    fleet: Fleet
    clock: VirtualClock
    rng: random.Random
    run_id: str
    account: str
    holding: str
    tokens: dict[str, str]
    admin: Admin | None
    broker: Broker
    ledger: HostileLedger
    topics: Topics
    clock_skew: int
    narrator: Narrator
    metrics: Metrics
    expectations: list[Expectation] = field(default_factory=list)
    frozen: set[str] = field(default_factory=set)
    """Devices whose usage the background changes leave alone (on their way out)."""

    def expect(self, what: str, met: bool, detail: str = "") -> bool:  # noqa: FBT001 -- reads as a sentence
        expectation = Expectation(what, met, detail)
        self.expectations.append(expectation)
        if not met:
            self.narrator.line(f"expectation failed: {expectation}")
        return met

    def token_for(self, va: str) -> str | None:
        return token_for(self.tokens, va)

    def registered(self, devices: Iterable[VirtualDevice] | None = None) -> list[VirtualDevice]:
        pool = self.fleet.devices if devices is None else devices
        return [d for d in pool if d.client is not None and d.registered]

    def in_va(self, va: str) -> list[VirtualDevice]:
        return [d for d in self.fleet.devices if d.va == va and d.client is not None]

    async def all_in(
        self,
        devices: list[VirtualDevice],
        state: LicenseState,
        *,
        timeout: float,  # noqa: ASYNC109 -- real seconds
    ) -> bool:
        return await self.fleet.wait_for(
            lambda: all(d.core.state is state for d in devices), timeout=timeout
        )

    async def show(self, title: str) -> None:
        """A step of the story: its title, and in verbose mode the compliance view."""
        await self.narrator.step(title, self)

    def phase(self, name: str) -> None:
        """Measure what follows apart (the report's throughput is the last "main" phase's)."""
        self.metrics.begin(name, time.monotonic())

    def real_interval(self) -> float:
        """How long one report interval lasts in real seconds."""
        return self.clock.real_seconds(self.params.report_interval)


class Story:
    name: ClassVar[str] = ""

    def __init__(
        self, params: Parameters, rng: random.Random, *, account: str, holding: str
    ) -> None:
        self.params = params
        self.rng = rng
        self.account = account
        self.holding = holding
        self.order_prefix = f"PO-{account}"

    def vas(self) -> list[str]:
        return va_names(self.params.vas)

    def capacity(self) -> int:
        """Devices that may exist at once (the initial ones; churn adds joins)."""
        return self.params.devices

    def initial(self) -> list[tuple[str, dict[str, int]]]:
        vas = self.vas()
        return [(vas[i % len(vas)], initial_usage(self.rng)) for i in range(self.params.devices)]

    def token_vas(self) -> list[str]:
        return self.vas()

    def plan(self) -> AccountPlan:
        """Licenses for the most each VA's devices can use, times ``headroom``."""
        vas = self.vas()
        per_va = math.ceil(self.capacity() / len(vas))
        deposits = tuple(
            Deposit(
                order=f"{self.order_prefix}-{n}",
                va=va,
                lines=tuple(
                    OrderLine(tag=tag, quantity=math.ceil(per_va * most * self.params.headroom))
                    for tag, most in MOST.items()
                ),
            )
            for n, va in enumerate(vas, start=1)
        )
        return AccountPlan(
            account=self.account,
            vas=tuple(va for va in vas if va != DEFAULT_VA),
            report_interval=self.params.report_interval,
            auth_validity=self.params.auth_validity,
            deposits=deposits,
            token_uses=self.capacity() * 2,
            token_days=365,
        )

    async def play(self, run: Run) -> None:
        raise NotImplementedError


async def change_usage(
    run: Run, *, until: float, devices: list[VirtualDevice] | None = None
) -> None:
    """Change the usage of ``change_share`` of the devices per report interval, until the
    monotonic time ``until``, spread evenly."""
    params = run.params
    per_second = params.change_share * params.devices / run.real_interval()
    owed = 0.0
    while time.monotonic() < until:
        await asyncio.sleep(_BACKGROUND_STEP)
        owed += per_second * _BACKGROUND_STEP
        if owed < 1:
            continue
        candidates = [d for d in run.registered(devices) if d.device_id not in run.frozen]
        for _ in range(int(owed)):
            if candidates:
                device = run.rng.choice(candidates)
                run.fleet.set_usage(device, changed_usage(device.usage, run.rng))
        owed -= int(owed)


def phase_in(run: Run) -> None:
    """Change every device's usage once at a random moment of the next report interval.

    Devices that registered together would otherwise report together forever (the collector
    sets the next report an interval after each answer); this spreads them evenly.
    """
    loop = asyncio.get_running_loop()
    span = run.real_interval()

    def change(device: VirtualDevice) -> None:
        if device.registered:
            run.fleet.set_usage(device, changed_usage(device.usage, run.rng))

    for device in run.registered():
        loop.call_later(run.rng.uniform(0, span), change, device)
