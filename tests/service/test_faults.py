"""Faults: the broker restarts mid-stream; the collector is killed mid-batch and restarted.

Devices behave like the agent's outbox: a report stays theirs until its answer arrives, and
unanswered ones are re-sent byte for byte. At the end every report must be counted exactly
once, and the last notice each device holds must match the final state of its pool.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest
from smartlic.collector.service.ingest import Ingest, Prepared
from smartlic.collector.service.service import CollectorService
from smartlic.mqtt.aio import AsyncMqttClient, Backoff
from smartlic.mqtt.url import parse_broker_url
from smartlic.protocol import ComplianceNotice, open_message

from .conftest import service_config
from .support import TOPICS, Device, Site

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from smartlic.mqtt.broker import MosquittoBroker

    from .support import MakeDevice

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
TAG = "network-advantage"
DEVICES = 20
REPORTS = 30
LICENSES = 80
"""Usage wanders around this line (counts 1..7 per device), so the pool flips back and forth
and pushes are part of what must survive the faults."""


class Outbox:
    """A device's unanswered reports, re-sent until answered (the agent's guarantee)."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.unanswered: dict[int, bytes] = {}
        self.last_counts: dict[str, int] = {}

    def queue(self, count: int) -> bytes:
        payload = self.device.report_bytes({TAG: count})
        self.unanswered[self.device.seq] = payload
        self.last_counts = {TAG: count}
        return payload

    def settle(self) -> None:
        """An answer to report n retires every older report too, as the agent's outbox does:
        counts are the latest state, so an older report has nothing left to say."""
        answered = [
            seq
            for opened in self.device.inbox
            if isinstance(seq := getattr(opened.message, "in_reply_to", None), int)
        ]
        if answered:
            newest = max(answered)
            self.unanswered = {s: p for s, p in self.unanswered.items() if s > newest}

    async def resend(self) -> None:
        self.settle()
        for payload in list(self.unanswered.values()):
            await self.device.send(payload)


async def _fleet(site: Site, make_device: MakeDevice) -> list[Outbox]:
    await site.deposit("PO-1", quantity=LICENSES)
    token = await site.token(max_uses=DEVICES)
    fleet = []
    for _ in range(DEVICES):
        device = await make_device()
        await device.register(token)
        await _keep_connected(device)
        fleet.append(Outbox(device))
    return fleet


async def _keep_connected(device: Device) -> None:
    """Swap the device's client for one that reconnects by itself (same session)."""
    assert device.client is not None
    await device.client.disconnect()
    device.client = AsyncMqttClient(
        client_id=device.device_id,
        broker=parse_broker_url(device.broker_url),
        on_message=device._got,
        subscriptions=[(TOPICS.downlink(device.device_id), 1)],
    )
    asyncio.get_running_loop().create_task(
        device.client.run(backoff=Backoff(base=0.05, cap=0.5, floor=0.02))
    )
    await device.client.wait_connected()


async def _stream(
    fleet: Sequence[Outbox],
    *,
    rounds: int,
    middle: Callable[[], object],
    burst: bool = False,
) -> None:
    """Rounds of one report per device; ``middle`` runs halfway — with ``burst``, while a
    burst of reports is still being processed (so it lands inside a batch)."""
    for round_no in range(rounds):
        for index, outbox in enumerate(fleet):
            await outbox.device.send(outbox.queue(1 + (round_no * 3 + index) % 7))
        if round_no == rounds // 2:
            if burst:
                await asyncio.sleep(0.15)
            await asyncio.to_thread(middle)
        if not (burst and round_no < rounds // 2):
            await asyncio.sleep(0.01)


async def _drain(fleet: Sequence[Outbox], *, within: float = 60.0) -> None:
    """Re-send what is unanswered until everything is answered."""
    async with asyncio.timeout(within):
        while True:
            await asyncio.sleep(1.0)
            for outbox in fleet:
                outbox.settle()
            if not any(o.unanswered for o in fleet):
                return
            for outbox in fleet:
                if outbox.device.client is not None and outbox.device.client.connected:
                    await outbox.resend()


async def _assert_exactly_once(
    site: Site, fleet: Sequence[Outbox], *, superseded_allowed: bool = False
) -> None:
    """Nothing counted twice, every device's latest report counted; with
    ``superseded_allowed`` an older report may have been overtaken by a newer one instead
    (after a broker restart, see the test), never lost without one."""
    accepted = await site.query(
        "SELECT d.device_id, COUNT(*) AS n, MAX(r.seq) AS last FROM accepted_reports r"
        " JOIN devices d ON d.id = r.device_id GROUP BY d.device_id"
    )
    found = {r["device_id"]: (r["n"], r["last"]) for r in accepted}
    if superseded_allowed:
        assert {o.device.device_id: o.device.seq for o in fleet} == {
            device: last for device, (_, last) in found.items()
        }
        assert all(n <= last for n, last in found.values())
    else:
        expected = {o.device.device_id: (o.device.seq, o.device.seq) for o in fleet}
        assert expected == found
    assert sum(o.last_counts[TAG] for o in fleet) == await site.in_use()
    usage = await site.query(
        "SELECT d.device_id, u.count FROM device_usage u JOIN devices d ON d.id = u.device_id"
    )
    assert {o.device.device_id: o.last_counts[TAG] for o in fleet} == {
        r["device_id"]: r["count"] for r in usage
    }


async def _assert_last_notices_match(site: Site, fleet: Sequence[Outbox]) -> None:
    """The newest notice each device holds (highest notice_seq) shows its pool's final status:
    every flip was pushed to every device whose status it changed, crash or not."""
    short = await site.in_use() > LICENSES
    for outbox in fleet:
        notices = [
            m
            for m in (open_message(raw.payload).message for raw in outbox.device.raw)
            if isinstance(m, ComplianceNotice)
        ]
        newest = max(notices, key=lambda n: n.notice_seq)
        assert (short, LICENSES) == (bool(newest.tags[TAG].shortfall), newest.tags[TAG].entitled)


@pytest.mark.usefixtures("service")
async def test_a_broker_restart_mid_stream_loses_nothing_and_counts_nothing_twice(
    collector_site: Site, make_device: MakeDevice, mosquitto: MosquittoBroker
) -> None:
    """Mosquitto drops what devices publish between its restart and the collector's new
    subscription (it does not restore shared subscriptions): the devices send those reports
    again, and one may by then be overtaken by a newer report of the same device — which is
    counted instead. Nothing is counted twice and every device's latest usage is counted."""
    fleet = await _fleet(collector_site, make_device)

    await _stream(fleet, rounds=REPORTS, middle=lambda: mosquitto.restart(down_for=0.5))
    await _drain(fleet)

    await _assert_exactly_once(collector_site, fleet, superseded_allowed=True)
    await _assert_last_notices_match(collector_site, fleet)


def _collector_process(site: Site, broker: MosquittoBroker, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SMARTLIC_DB": str(site.db)}
    with log.open("ab") as sink:  # the child holds its own copy of the descriptor
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smartlic.collector",
                "run",
                "--key",
                str(site.key_path),
                "--broker",
                broker.url,
                "--client-id",
                "collector-under-test",
                "--batch-size",
                "50",
                "--log-format",
                "json",
                "--log-level",
                "debug",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )


async def _wait_for_log(log: Path, text: str, *, count: int = 1, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while (await asyncio.to_thread(log.read_text, errors="replace")).count(text) < count:
            await asyncio.sleep(0.05)


async def test_a_collector_killed_mid_batch_and_restarted_counts_every_report_once(
    collector_site: Site, make_device: MakeDevice, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    """SIGKILL while batches are in flight: uncommitted ones are redelivered by the broker,
    committed-but-unacknowledged ones come back as duplicates and get their stored answers."""
    log = tmp_path / "collector.log"
    collector = _collector_process(collector_site, mosquitto, log)
    try:
        await _wait_for_log(log, "collector.connected")
        fleet = await _fleet(collector_site, make_device)

        def kill_and_restart() -> None:
            nonlocal collector
            collector.send_signal(signal.SIGKILL)
            collector.wait()
            collector = _collector_process(collector_site, mosquitto, log)

        await _stream(fleet, rounds=REPORTS, middle=kill_and_restart, burst=True)
        await _wait_for_log(log, "collector.connected", count=2)
        await _drain(fleet)

        await _assert_exactly_once(collector_site, fleet)
        await _assert_last_notices_match(collector_site, fleet)
    finally:
        collector.send_signal(signal.SIGTERM)
        try:
            collector.wait(timeout=20)
        except subprocess.TimeoutExpired:
            collector.kill()
        for outbox in fleet if "fleet" in locals() else []:
            await outbox.device.close()


class _Crash(BaseException):
    """Stands for the process dying: nothing after it runs, not even error handling."""


async def test_a_crash_between_commit_and_acknowledgement_is_answered_from_the_store(
    collector_site: Site,
    make_device: MakeDevice,
    mosquitto: MosquittoBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The window SIGKILL only sometimes hits: the batch is committed, nothing published or
    acknowledged. The broker redelivers; the new process finds the reports already accepted
    and answers them with the stored answers, counting nothing twice."""
    await collector_site.deposit("PO-1", quantity=LICENSES)
    token = await collector_site.token(max_uses=DEVICES)
    fleet = []
    first = CollectorService(service_config(collector_site, mosquitto))
    first_run = asyncio.create_task(first.run())
    await first.wait_ready()
    for _ in range(3):
        device = await make_device()
        await device.register(token)
        fleet.append(Outbox(device))
    real_commit = Ingest.commit

    async def commit_then_die(self: Ingest, prepared: Prepared, now: int) -> object:
        await real_commit(self, prepared, now)
        raise _Crash

    monkeypatch.setattr(Ingest, "commit", commit_then_die)
    for outbox in fleet:
        await outbox.device.send(outbox.queue(2))
    with pytest.raises(BaseExceptionGroup):
        await first_run
    monkeypatch.setattr(Ingest, "commit", real_commit)
    committed = await collector_site.query("SELECT COUNT(*) AS n FROM accepted_reports")

    second = CollectorService(service_config(collector_site, mosquitto))
    second_run = asyncio.create_task(second.run())
    await second.wait_ready()
    answers = [await o.device.expect(lambda m: getattr(m, "in_reply_to", None) == 1) for o in fleet]

    assert committed[0]["n"] >= 1
    assert all(isinstance(a, ComplianceNotice) for a in answers)
    await _assert_exactly_once(collector_site, fleet)
    second.stop()
    await second_run
