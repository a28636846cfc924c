"""The real agent against the real collector, over a real broker: the whole licensing loop."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from smartlic.mqtt.broker import MosquittoBroker

    from .support import Site

pytestmark = [pytest.mark.usefixtures("service"), pytest.mark.timeout(90)]
TAG = "network-advantage"


class Agent:
    def __init__(self, folder: Path, broker: MosquittoBroker, udi: str) -> None:
        self.usage = folder / "usage.toml"
        self.options = [
            "--state-dir",
            str(folder / "state"),
            "--broker",
            broker.url,
            "--udi",
            udi,
            "--usage-file",
            str(self.usage),
            "--report-debounce",
            "0.2",
            "--usage-interval",
            "0.3",
        ]
        self.daemon: subprocess.Popen[bytes] | None = None

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "smartlic.agent", *self.options, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def use(self, count: int) -> None:
        self.usage.write_text(f"[usage]\n{TAG} = {count}\n")

    def start(self) -> None:
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "smartlic.agent", *self.options, "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def status(self) -> dict[str, object]:
        result = self.command("status", "--json")
        return dict(json.loads(result.stdout))

    async def until(self, state: str, within: float = 15.0) -> dict[str, object]:
        async with asyncio.timeout(within):
            while True:
                status = await asyncio.to_thread(self.status)
                if status["state"] == state:
                    return status
                await asyncio.sleep(0.2)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.terminate()
            self.daemon.wait(20)


@pytest.fixture
def agent(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[Agent]:
    made = Agent(tmp_path / "agent", mosquitto, "ISR4331/K9:FDO2152ABC")
    (tmp_path / "agent").mkdir()
    made.use(1)
    yield made
    made.stop()


async def test_an_agent_registers_reports_goes_out_of_compliance_and_is_brought_back(
    collector_site: Site, agent: Agent
) -> None:
    await collector_site.deposit("PO-1", quantity=2)
    token = await collector_site.token(va="Engineering")
    await collector_site.deposit("PO-2", quantity=2, va="Engineering")

    registered = await asyncio.to_thread(agent.command, "register", "--token", token)
    assert 0 == registered.returncode, registered.stderr
    agent.start()
    authorized = await agent.until("AUTHORIZED")
    assert "Engineering" == authorized["virtual_account"]

    agent.use(5)
    short = await agent.until("OUT_OF_COMPLIANCE")
    assert {"count": 5, "status": "out-of-compliance"}.items() <= dict(short["tags"][TAG]).items()  # type: ignore[index]

    await collector_site.deposit("PO-3", quantity=10, va="Engineering")
    back = await agent.until("AUTHORIZED")
    assert 12 == back["tags"][TAG]["entitled"]  # type: ignore[index]
    assert 5 == await collector_site.in_use(va="Engineering")


async def test_an_administrative_deregistration_returns_the_agent_to_evaluation(
    collector_site: Site, agent: Agent
) -> None:
    await collector_site.deposit("PO-1", quantity=2)
    registered = await asyncio.to_thread(
        agent.command, "register", "--token", await collector_site.token()
    )
    assert 0 == registered.returncode, registered.stderr
    agent.start()
    await agent.until("AUTHORIZED")

    await collector_site.deregister("ISR4331/K9:FDO2152ABC")

    await agent.until("EVALUATION")
    assert 0 == await collector_site.in_use()


async def test_an_expired_token_is_explained_to_the_operator(
    collector_site: Site, agent: Agent
) -> None:
    from .support import DAY, now  # noqa: PLC0415 -- the only test needing them

    token = await collector_site.token(expires_days=1, created=now() - 2 * DAY)

    result = await asyncio.to_thread(agent.command, "register", "--token", token)

    assert 0 != result.returncode
    assert 1 == len(result.stderr.strip().splitlines())
    assert "expired" in result.stderr.lower()
