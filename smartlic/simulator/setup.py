"""Accounts, licenses and tokens for a run — through the collector's administration API.

This is the only module of the simulator that imports the collector (SPEC §1 allows it for
setting up accounts): it does what an administrator would do with ``smartlic-collector`` — the
site operator makes the smart account, its VAs, the partner's holding account and the orders;
the SA admin makes tokens, moves licenses and devices; the partner admin delivers an order — each
as that user, so the collector's permission checks apply. The running service learns of every
change through its change feed, exactly as with the command line.

It also reads the collector's **committed** state after a run (:meth:`Admin.committed`): the
accepted reports, the devices' counts, the pools, the dead letters — what ``checks.py``
compares with what the devices sent.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Self

from smartlic.collector import device_admin, licenses, orders, site, tokens, virtual_accounts
from smartlic.collector.compliance import PoolUsage, usage
from smartlic.collector.errors import Refused
from smartlic.collector.orders import OrderLine
from smartlic.collector.signing_key import write_key_file
from smartlic.collector.store import open_store
from smartlic.collector.users import load_actor
from smartlic.protocol import KeyType, SigningKey
from smartlic.simulator.checks import Committed
from smartlic.simulator.hostile import DeadLetterRow
from smartlic.simulator.scenarios import ScenarioError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Collection
    from pathlib import Path
    from types import TracebackType

    from smartlic.collector.store import Store, Transaction
    from smartlic.simulator.clock import VirtualClock

OPERATOR: Final = "operator@sim.smartlic.example"
DEFAULT_VA: Final = "DEFAULT"

__all__ = [
    "DEFAULT_VA",
    "OPERATOR",
    "AccountPlan",
    "Admin",
    "Committed",
    "Deposit",
    "OrderLine",
    "PoolUsage",
    "create_site",
]


def admin_of(account: str) -> str:
    """The email of an account's first admin, as the simulator names it: any account name
    makes a valid address ("ACME Corp" → admin@acme-corp.example)."""
    domain = re.sub(r"[^a-z0-9]+", "-", account.lower()).strip("-") or "account"
    return f"admin@{domain}.example"


@dataclass(frozen=True, slots=True, kw_only=True)
class Deposit:
    order: str
    lines: tuple[OrderLine, ...]
    va: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AccountPlan:
    """What a scenario needs before its devices register."""

    account: str
    vas: tuple[str, ...] = ()
    """Virtual accounts besides DEFAULT."""
    report_interval: int = 86_400
    auth_validity: int = 90 * 86_400
    deposits: tuple[Deposit, ...] = ()
    holding: str | None = None
    holding_orders: tuple[Deposit, ...] = ()
    token_uses: int = 1
    token_days: int = 30


async def create_site(db: Path, key_path: Path, *, operator: str, now: int) -> bytes:
    """A new collector database and signing key; the key's fingerprint."""
    key = SigningKey.from_seed(KeyType.ED25519, secrets.token_bytes(32))
    write_key_file(key_path, key)
    store = await open_store(db, create=True)
    try:
        async with store.write() as tx:
            await site.init_site(tx, operator_email=operator, collector_key=key.public, now=now)
    finally:
        await store.close()
    return key.public.fingerprint


class Admin:
    """Administrative actions on the collector's database, at the fleet's virtual time."""

    def __init__(self, store: Store, *, clock: VirtualClock, operator: str = OPERATOR) -> None:
        self._store = store
        self.clock = clock
        self.operator = operator

    @classmethod
    async def open(cls, db: Path, *, clock: VirtualClock, operator: str = OPERATOR) -> Admin:
        return cls(await open_store(db), clock=clock, operator=operator)

    async def close(self) -> None:
        await self._store.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def now(self) -> int:
        return int(self.clock.now())

    async def fingerprint(self) -> bytes:
        """The collector key's fingerprint, as the site recorded it."""
        async with self._store.read() as tx:
            return (await site.site_info(tx)).key_fingerprint

    async def _as(self, email: str, action: Callable[[Transaction, Any], Awaitable[Any]]) -> Any:  # noqa: ANN401 -- whatever the domain call returns
        async with self._store.write() as tx:
            actor = await load_actor(tx, email)
            return await action(tx, actor)

    async def setup(self, plan: AccountPlan, *, token_vas: Collection[str]) -> dict[str, str]:
        """Make the plan's accounts and orders; a registration token for each of ``token_vas``."""
        now = self.now()

        async def build(tx: Transaction, actor: Any) -> None:  # noqa: ANN401 -- the domain's Actor
            await site.create_smart_account(
                tx, actor, name=plan.account, admin_email=admin_of(plan.account), now=now
            )
            for va in plan.vas:
                await virtual_accounts.create_virtual_account(
                    tx, actor, account_name=plan.account, name=va, now=now
                )
            for va in (DEFAULT_VA, *plan.vas):
                await virtual_accounts.set_policy(
                    tx,
                    actor,
                    account_name=plan.account,
                    name=va,
                    report_interval=plan.report_interval,
                    authorization_validity=plan.auth_validity,
                    now=now,
                )
            for deposit in plan.deposits:
                await self._deposit(tx, actor, plan.account, deposit, now)
            if plan.holding is not None:
                await site.create_holding_account(
                    tx, actor, name=plan.holding, admin_email=admin_of(plan.holding), now=now
                )
                for deposit in plan.holding_orders:
                    await self._deposit(tx, actor, plan.holding, deposit, now)

        made: dict[str, str] = {}

        async def issue(tx: Transaction, actor: Any) -> None:  # noqa: ANN401 -- the domain's Actor
            for va in token_vas:
                _, token = await tokens.create_token(
                    tx,
                    actor,
                    account_name=plan.account,
                    va_name=va,
                    expires_days=plan.token_days,
                    max_uses=plan.token_uses,
                    description="smartlic-sim",
                    now=now,
                    entropy=secrets.token_bytes,
                )
                made[va] = str(token)

        try:
            await self._as(self.operator, build)
            await self._as(admin_of(plan.account), issue)
        except Refused as exc:
            # An account of that name already in the database, an unknown --as user: the
            # run's options, not a fault of the simulator.
            raise ScenarioError(f"the collector database refused the run's set-up: {exc}") from None
        return made

    @staticmethod
    async def _deposit(
        tx: Transaction,
        actor: Any,  # noqa: ANN401 -- the domain's Actor
        account: str,
        deposit: Deposit,
        now: int,
    ) -> None:
        await orders.deposit_order(
            tx,
            actor,
            number=deposit.order,
            ordered_on=now,
            lines=list(deposit.lines),
            account_name=account,
            va_name=deposit.va,
            now=now,
        )

    async def deposit(self, account: str, deposit: Deposit) -> None:
        """The site operator deposits an order (orders come from the vendor's systems)."""
        now = self.now()
        await self._as(
            self.operator, lambda tx, actor: self._deposit(tx, actor, account, deposit, now)
        )

    async def deliver(self, number: str, *, holding: str, to_account: str, va: str) -> None:
        """The partner delivers an order from its holding account into the customer's VA."""
        now = self.now()
        await self._as(
            admin_of(holding),
            lambda tx, actor: orders.transfer_order(
                tx, actor, number=number, to_account=to_account, va_name=va, now=now
            ),
        )

    async def move_licenses(
        self, account: str, *, tag: str, count: int, from_va: str, to_va: str
    ) -> None:
        now = self.now()
        await self._as(
            admin_of(account),
            lambda tx, actor: licenses.transfer_licenses(
                tx,
                actor,
                account_name=account,
                tag=tag,
                count=count,
                from_va=from_va,
                to_va=to_va,
                now=now,
            ),
        )

    async def deregister(self, account: str, udis: Collection[str]) -> None:
        """The SA admin deregisters devices (the service pushes NOT_REGISTERED to them)."""
        now = self.now()

        async def act(tx: Transaction, actor: Any) -> None:  # noqa: ANN401 -- the domain's Actor
            for udi in udis:
                await device_admin.deregister_device(
                    tx, actor, account_name=account, udi=udi, now=now
                )

        await self._as(admin_of(account), act)

    async def move(self, account: str, moves: Collection[tuple[str, str]]) -> None:
        """The SA admin moves devices, ``(udi, to_va)``, to other VAs of the account."""
        now = self.now()

        async def act(tx: Transaction, actor: Any) -> None:  # noqa: ANN401 -- the domain's Actor
            for udi, va in moves:
                await device_admin.move_device(
                    tx, actor, account_name=account, udi=udi, to_va=va, now=now
                )

        await self._as(admin_of(account), act)

    async def usage(self, account: str) -> list[PoolUsage]:
        """The compliance view (``smartlic-collector usage ACCOUNT``) at virtual now."""
        now = self.now()
        async with self._store.read() as tx:
            actor = await load_actor(tx, self.operator)
            return await usage(tx, actor, account_name=account, va_name=None, now=now)

    async def committed(self, account: str, device_ids: Collection[str]) -> Committed:
        """One consistent read of what the collector committed for the account's devices."""
        result = Committed()
        async with self._store.read() as tx:
            devices = await tx.fetch_in(
                "SELECT d.id, d.device_id, d.state, va.name AS va FROM devices d"
                " JOIN virtual_accounts va ON va.id = d.va_id WHERE d.device_id IN ({in})",
                list(device_ids),
            )
            by_pk = {int(r["id"]): str(r["device_id"]) for r in devices}
            for row in devices:
                result.states[str(row["device_id"])] = str(row["state"])
                result.vas[str(row["device_id"])] = str(row["va"])
            for row in await tx.fetch_in(
                "SELECT device_id, seq, digest FROM accepted_reports WHERE device_id IN ({in})",
                list(by_pk),
            ):
                digest = int.from_bytes(bytes(row["digest"])[:8], "big")
                result.reports.setdefault(by_pk[int(row["device_id"])], {})[int(row["seq"])] = (
                    digest
                )
            for row in await tx.fetch_in(
                "SELECT device_id, tag, count FROM device_usage WHERE device_id IN ({in})",
                list(by_pk),
            ):
                counts = result.counts.setdefault(by_pk[int(row["device_id"])], {})
                counts[str(row["tag"])] = int(row["count"])
            for row in await tx.fetch_all(
                "SELECT va.name AS va, p.tag, p.in_use FROM pool_usage p"
                " JOIN virtual_accounts va ON va.id = p.va_id"
                " JOIN accounts a ON a.id = va.account_id WHERE a.name = ?",
                (account,),
            ):
                result.pools[str(row["va"]), str(row["tag"])] = int(row["in_use"])
            result.dead_letters.extend(
                DeadLetterRow(
                    topic=str(row["topic"]),
                    payload=bytes(row["payload"]),
                    code=None if row["code"] is None else int(row["code"]),
                )
                for row in await tx.fetch_in(
                    "SELECT topic, payload, code FROM dead_letters WHERE device_id IN ({in})",
                    list(device_ids),
                )
            )
        return result
