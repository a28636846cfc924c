"""Growth: a VA grows out of compliance and is brought back twice — by a partner's order, and,
after a trial term expires, by licenses moved in from another VA. The demo plays this story.

Accounts: the customer's smart account with Engineering and Operations (the devices, half and
half) and DEFAULT (spare ``dna-advantage`` licenses); a partner's holding account with an order
waiting for this customer. Every device starts using one ``network-advantage`` and one
``dna-essentials``.

1. Everyone registers and reports: authorized.
2. Engineering's devices each use ``grow_by`` more ``network-advantage``; the pool has half of
   that as room, so it flips once half of them reported — the collector pushes an
   out-of-compliance notice to the devices that reported before the flip. Operations is not
   touched (SPEC §3: a shortfall only affects the VA's devices consuming that tag).
3. The partner delivers its order into Engineering: pushes, every device authorized again.
4. (``term_hours`` > 0) Operations gets a trial order of ``dna-advantage`` ending in
   ``term_hours`` virtual hours, and its devices start using it; when the term ends the pool
   flips by the clock alone and the collector pushes out-of-compliance notices.
5. The SA admin moves the spare licenses from DEFAULT to Operations: authorized again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from smartlic.agent import LicenseState
from smartlic.simulator.setup import DEFAULT_VA, AccountPlan, Deposit, OrderLine
from smartlic.simulator.stories.base import ADVANTAGE, ESSENTIALS, Run, Story

if TYPE_CHECKING:
    from collections.abc import Callable

    from smartlic.simulator.device import VirtualDevice

GROWING: Final = "Engineering"
TRIAL_VA: Final = "Operations"
TRIAL: Final = "dna-advantage"
_SPREAD: Final = 2.0
"""Real seconds over which a step's usage changes are spread."""


class Growth(Story):
    name = "growth"

    def vas(self) -> list[str]:
        return [DEFAULT_VA, GROWING, TRIAL_VA]

    def token_vas(self) -> list[str]:
        return [GROWING, TRIAL_VA]

    def _sizes(self) -> tuple[int, int]:
        growing = (self.params.devices + 1) // 2
        return growing, self.params.devices - growing

    def initial(self) -> list[tuple[str, dict[str, int]]]:
        return [
            (GROWING if i % 2 == 0 else TRIAL_VA, {ADVANTAGE: 1, ESSENTIALS: 1})
            for i in range(self.params.devices)
        ]

    def plan(self) -> AccountPlan:
        growing, trial = self._sizes()
        grow = growing * self.params.grow_by
        room = max(1, grow // 2)
        deposits = [
            Deposit(
                order=f"{self.order_prefix}-1",
                va=GROWING,
                lines=(
                    OrderLine(tag=ADVANTAGE, quantity=growing + room),
                    OrderLine(tag=ESSENTIALS, quantity=growing),
                ),
            ),
            Deposit(
                order=f"{self.order_prefix}-2",
                va=TRIAL_VA,
                lines=(
                    OrderLine(tag=ADVANTAGE, quantity=max(trial, 1)),
                    OrderLine(tag=ESSENTIALS, quantity=max(trial, 1)),
                ),
            ),
        ]
        if self.params.term_hours > 0:
            deposits.append(
                Deposit(
                    order=f"{self.order_prefix}-3",
                    va=DEFAULT_VA,
                    lines=(OrderLine(tag=TRIAL, quantity=max(trial, 1)),),
                )
            )
        return AccountPlan(
            account=self.account,
            vas=(GROWING, TRIAL_VA),
            report_interval=self.params.report_interval,
            auth_validity=self.params.auth_validity,
            deposits=tuple(deposits),
            holding=self.holding,
            holding_orders=(
                Deposit(
                    order=f"{self.order_prefix}-P",
                    lines=(OrderLine(tag=ADVANTAGE, quantity=grow),),
                ),
            ),
            token_uses=self.params.devices * 2,
            token_days=365,
        )

    async def play(self, run: Run) -> None:
        admin = run.admin
        if admin is None:
            run.expect("the story can administer the collector (--db)", met=False)
            return
        if self.params.devices < 4:
            run.expect("growth needs at least 4 devices", met=False)
            return
        growing, trial = run.in_va(GROWING), run.in_va(TRIAL_VA)
        timeout = run.params.step_timeout
        await run.show(f"1 · {len(run.fleet.devices)} devices registered and reported")

        grown = 1 + run.params.grow_by
        self._spread(run, growing, lambda d: {**d.usage, ADVANTAGE: grown})
        met = await run.fleet.wait_for(
            lambda: all(
                d.usage[ADVANTAGE] == grown
                and d.settled()
                and d.core.state is LicenseState.OUT_OF_COMPLIANCE
                for d in growing
            ),
            timeout=timeout,
        )
        run.expect(f"{GROWING} goes out of compliance", met, str(run.fleet.states(growing)))
        run.expect(
            f"{TRIAL_VA} stays authorized",
            all(d.core.state is LicenseState.AUTHORIZED for d in trial),
            str(run.fleet.states(trial)),
        )
        await run.show(f"2 · {GROWING} grew past its network-advantage licenses")

        order = f"{self.order_prefix}-P"
        await admin.deliver(order, holding=self.holding, to_account=self.account, va=GROWING)
        met = await run.all_in(growing, LicenseState.AUTHORIZED, timeout=timeout)
        run.expect(f"{GROWING} is authorized again", met, str(run.fleet.states(growing)))
        await run.show(f"3 · {self.holding} delivered order {order} into {GROWING}")

        if run.params.term_hours > 0:
            await self._trial(run, trial)

    async def _trial(self, run: Run, trial: list[VirtualDevice]) -> None:
        admin = run.admin
        assert admin is not None  # noqa: S101 -- play() checked it
        timeout = run.params.step_timeout
        term = int(run.params.term_hours * 3600)
        start = int(run.clock.now())
        line = OrderLine(tag=TRIAL, quantity=len(trial), starts_at=start, ends_at=start + term)
        order = f"{self.order_prefix}-T"
        await admin.deposit(self.account, Deposit(order=order, va=TRIAL_VA, lines=(line,)))
        self._spread(run, trial, lambda d: {**d.usage, TRIAL: 1})
        met = await run.fleet.wait_for(
            lambda: all(
                TRIAL in d.usage and d.settled() and d.core.state is LicenseState.AUTHORIZED
                for d in trial
            ),
            timeout=timeout,
        )
        run.expect(f"{TRIAL_VA} is authorized on its trial", met, str(run.fleet.states(trial)))
        hours = f"{run.params.term_hours:g}"
        await run.show(f"4 · {TRIAL_VA} uses {TRIAL} on a {hours}-hour trial ({order})")

        ends_in = run.clock.real_delay(start + term)
        met = await run.all_in(trial, LicenseState.OUT_OF_COMPLIANCE, timeout=ends_in + timeout)
        run.expect(f"{TRIAL_VA} goes out of compliance when the trial ends", met)
        await run.show(f"5 · the trial ended: {TRIAL_VA} is short of {TRIAL}")

        await admin.move_licenses(
            self.account, tag=TRIAL, count=len(trial), from_va=DEFAULT_VA, to_va=TRIAL_VA
        )
        met = await run.all_in(trial, LicenseState.AUTHORIZED, timeout=timeout)
        run.expect(f"{TRIAL_VA} is authorized again", met, str(run.fleet.states(trial)))
        await run.show(f"6 · {len(trial)} {TRIAL} moved from {DEFAULT_VA} to {TRIAL_VA}")

    @staticmethod
    def _spread(
        run: Run, devices: list[VirtualDevice], usage: Callable[[VirtualDevice], dict[str, int]]
    ) -> None:
        """Give each device its new usage at a random moment of the next few seconds."""
        loop = asyncio.get_running_loop()
        span = min(_SPREAD, run.params.step_timeout / 4)

        def change(device: VirtualDevice) -> None:
            run.fleet.set_usage(device, usage(device))

        for device in devices:
            loop.call_later(run.rng.uniform(0, span), change, device)
