"""The device agent's footprint: memory when idle, CPU per report, bytes on the wire per report.

Run: ``.venv/bin/python bench/agent_footprint.py`` (needs mosquitto; ~30 s).

* **RSS**: a real ``smartlic-agent run`` subprocess, registered and authorized by a scripted
  collector on a Mosquitto this script starts, left idle; beside it, measured in the same run,
  the floor: a bare interpreter that only imports paho-mqtt, cryptography and cbor2. Importing
  the ``cryptography`` package alone does not load its OpenSSL bindings, which any signer
  needs; so the floor is given both ways, and the goal (at most 1.25 x floor) is checked against the
  one that loads them.
* **CPU per report**: the agent process's user + system time (``/proc/PID/stat``) across
  reports triggered by usage changes, minus its idle CPU over as long a time; and, in process,
  the sans-I/O core alone (build + sign a report, encode the snapshot, verify the answer).
* **Bytes per report**: MQTT 3.1.1 framing (§3.3 PUBLISH, §3.4 PUBACK) around the real
  payloads: the report up, its PUBACK down, the answer down, its PUBACK up.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

ROOT: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "agent"))  # the scripted collector lives with the tests

from scripted_collector import CollectorScript, MqttCollector  # noqa: E402 -- path set above
from smartlic.agent.actions import Persist, Publish  # noqa: E402
from smartlic.agent.core import AgentCore, CoreSettings  # noqa: E402
from smartlic.agent.snapshot import encode_snapshot  # noqa: E402
from smartlic.agent.storage import FileStorage  # noqa: E402
from smartlic.mqtt.broker import MosquittoBroker  # noqa: E402
from smartlic.protocol import KeyType, SigningKey, Udi  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from smartlic.agent.actions import Action

UDI: Final = "ISR4331/K9:FOCBENCH1"
TAG: Final = "network-advantage"
FLOOR_BARE: Final = "import paho.mqtt.client, cryptography, cbor2"
FLOOR_SIGNING: Final = (
    FLOOR_BARE + "; from cryptography.hazmat.primitives.asymmetric import ed25519, ec"
)
PAGE: Final = os.sysconf("SC_PAGE_SIZE")
TICKS: Final = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def interpreter_rss(code: str) -> int:
    probe = (
        f"{code}\nfrom pathlib import Path\n"
        "print([l for l in Path('/proc/self/status').read_text().splitlines()"
        " if l.startswith('VmRSS:')][0].split()[1])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return int(done.stdout.strip())


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the agent did not get there in time")
        time.sleep(0.05)


def publish_bytes(topic: str, payload: bytes) -> int:
    """Size of a QoS 1 PUBLISH: fixed header, topic, packet id, payload (MQTT 3.1.1 §3.3)."""
    remaining = 2 + len(topic.encode()) + 2 + len(payload)
    length_bytes = 1 + (remaining >= 128) + (remaining >= 16_384) + (remaining >= 2_097_152)
    return 1 + length_bytes + remaining


PUBACK_BYTES: Final = 4


def core_cpu_per_report(reports: int) -> tuple[float, int, int, str, str]:
    """Seconds of CPU per report in the core alone; payload sizes; the two topics."""
    rng = random.Random(1)  # noqa: S311 -- reproducible, not secret
    key = SigningKey.from_seed(KeyType.ED25519, rng.randbytes(32))
    core = AgentCore.new(
        Udi.parse(UDI), key=key, entropy=rng.randbytes, settings=CoreSettings(debounce=1.0)
    )
    script = CollectorScript(entitled={TAG: 10**6})
    now = 1_750_000_000.0
    spent = 0.0
    sizes: tuple[int, int] = (0, 0)

    def run(actions: Sequence[Action], now: float) -> list[tuple[str, bytes]]:
        nonlocal sizes
        answers = []
        for action in actions:
            if isinstance(action, Publish):
                core.publish_acked(action, now)
                for topic, answer in script.handle(action.topic, action.payload, now):
                    answers.append((topic, answer))
                    if action.seq is not None:
                        sizes = (len(action.payload), len(answer))
        return answers

    core.start(now)
    core.connected(now)
    for topic, answer in run(core.register(script.token(), now), now):
        core.received(topic, answer, now)
    for n in range(reports):
        now += 10
        begin = time.process_time()
        actions = core.usage_changed({TAG: n + 1}, now) + core.tick(now + 2)
        snapshots = [encode_snapshot(a.snapshot) for a in actions if isinstance(a, Persist)]
        spent += time.process_time() - begin
        for topic, answer in run(actions, now + 2):
            begin = time.process_time()
            after = core.received(topic, answer, now + 2)
            snapshots += [encode_snapshot(a.snapshot) for a in after if isinstance(a, Persist)]
            spent += time.process_time() - begin
    return spent / reports, sizes[0], sizes[1], core.uplink, core.downlink


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonFigures:
    idle_rss: int
    busy_rss: int
    idle_cpu_rate: float
    cpu_per_report: float


def measure_daemon(reports: int, idle: float) -> DaemonFigures:
    """Register, run and idle a real agent; then push ``reports`` usage changes through it."""
    with tempfile.TemporaryDirectory() as tmp, MosquittoBroker(Path(tmp) / "broker") as broker:
        folder = Path(tmp)
        usage = folder / "usage.toml"
        usage.write_text(f"[usage]\n{TAG} = 1\n")
        common = ["--state-dir", str(folder / "state"), "--broker", broker.url, "--udi", UDI]
        common += ["--usage-file", str(usage), "--report-debounce", "0.1"]
        common += ["--log-level", "warning"]
        agent = [sys.executable, "-m", "smartlic.agent"]
        collector = MqttCollector(broker.url, CollectorScript(entitled={TAG: 10**6})).start()
        try:
            token = collector.script.token()
            subprocess.run([*agent, "register", "--token", token, *common], check=True, timeout=60)
            process = subprocess.Popen([*agent, "run", *common])
            storage = FileStorage(folder / "state")

            def answered(count: int) -> bool:
                snapshot = storage.load()
                return (
                    snapshot is not None
                    and snapshot.state.value == "AUTHORIZED"
                    and not snapshot.outbox
                    and snapshot.reported.get(TAG) == count
                )

            wait_for(partial(answered, 1))
            time.sleep(idle)
            idle_rss = rss_kib(process.pid)
            idle_cpu, idle_wall = cpu_seconds(process.pid), time.monotonic()
            time.sleep(idle)
            idle_rate = (cpu_seconds(process.pid) - idle_cpu) / (time.monotonic() - idle_wall)
            busy_cpu, busy_wall = cpu_seconds(process.pid), time.monotonic()
            for n in range(2, reports + 2):
                usage.write_text(f"[usage]\n{TAG} = {n}\n")
                wait_for(partial(answered, n))
            busy_cpu = cpu_seconds(process.pid) - busy_cpu
            busy_wall = time.monotonic() - busy_wall
            busy_rss = rss_kib(process.pid)
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
        finally:
            collector.stop()
    return DaemonFigures(
        idle_rss=idle_rss,
        busy_rss=busy_rss,
        idle_cpu_rate=idle_rate,
        cpu_per_report=max(0.0, busy_cpu - idle_rate * busy_wall) / reports,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reports", type=int, default=8, help="reports through the daemon")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before measuring")
    args = parser.parse_args()

    bare_python = interpreter_rss("pass")
    floor_bare = interpreter_rss(FLOOR_BARE)
    floor_signing = interpreter_rss(FLOOR_SIGNING)
    daemon = measure_daemon(args.reports, args.idle)
    core_cpu, report_size, answer_size, uplink, downlink = core_cpu_per_report(200)
    wire = publish_bytes(uplink, b"\0" * report_size) + PUBACK_BYTES
    wire += publish_bytes(downlink, b"\0" * answer_size) + PUBACK_BYTES
    mib = 1024
    print(f"python {sys.version.split()[0]} on {os.uname().sysname} {os.uname().machine}")
    print(f"bare interpreter (python -c pass)            {bare_python / mib:6.1f} MiB")
    print(f"floor: import paho, cryptography, cbor2      {floor_bare / mib:6.1f} MiB")
    print(f"floor + cryptography's OpenSSL bindings      {floor_signing / mib:6.1f} MiB")
    print(
        f"idle registered agent (smartlic-agent run)   {daemon.idle_rss / mib:6.1f} MiB"
        f"  = {daemon.idle_rss / floor_signing:.2f} x floor with bindings"
        f" ({daemon.idle_rss / floor_bare:.2f} x bare floor); goal <= 1.25"
    )
    print(f"agent after {args.reports:2d} more reports            {daemon.busy_rss / mib:6.1f} MiB")
    print(f"idle CPU (clock tick {1000 / TICKS:.0f} ms)                 "
          f"{daemon.idle_cpu_rate * 1000:6.2f} ms/s")  # fmt: skip
    print(f"CPU per report, daemon (net of idle)         {daemon.cpu_per_report * 1000:6.2f} ms")
    print(f"CPU per report, core alone (sign+verify+enc) {core_cpu * 1000:6.2f} ms")
    print(f"report payload (COSE_Sign1)                  {report_size:6d} bytes")
    print(f"answer payload (COSE_Sign1)                  {answer_size:6d} bytes")
    print(f"MQTT bytes per report, both ways             {wire:6d} bytes")


if __name__ == "__main__":
    main()
