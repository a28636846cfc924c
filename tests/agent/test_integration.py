"""The agent's commands against a real Mosquitto and a scripted collector.

Each test starts its own broker (the ``mosquitto`` fixture) and runs ``smartlic-agent`` as a
subprocess, as a router would. Timeouts keep every wait bounded.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from functools import partial
from typing import TYPE_CHECKING

import pytest
from scripted_collector import CollectorScript, MqttCollector, wait_for
from smartlic.agent.storage import FileStorage
from smartlic.mqtt.broker import MosquittoBroker, free_port
from smartlic.protocol import ErrorCode, Udi

from pki_support import issue_certificate

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from smartlic.agent.snapshot import Snapshot

UDI = "ISR4331/K9:FOC77"
DEVICE = Udi.parse(UDI).device_id
TAG = "network-advantage"
AGENT = [sys.executable, "-m", "smartlic.agent"]
pytestmark = pytest.mark.timeout(60)


class Agent:
    """One device's state directory and usage file, and the agent commands run on them."""

    def __init__(self, folder: Path, broker: MosquittoBroker) -> None:
        self.state_dir = folder / "state"
        self.usage_file = folder / "usage.toml"
        self.broker = broker
        self.log_file = folder / "agent.log"
        self.process: subprocess.Popen[str] | None = None
        self.set_usage(3)

    def set_usage(self, count: int) -> None:
        self.usage_file.write_text(f"[usage]\n{TAG} = {count}\n")

    def args(self, *extra: str) -> list[str]:
        return [
            *extra,
            "--state-dir",
            str(self.state_dir),
            "--broker",
            self.broker.url,
            "--udi",
            UDI,
            "--usage-file",
            str(self.usage_file),
            "--report-debounce",
            "0.2",
            "--usage-interval",
            "0.25",
        ]

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            AGENT + self.args(*args), capture_output=True, text=True, timeout=timeout, check=False
        )

    def start(self, *extra: str) -> None:
        """``run`` in the background, its log (stderr) written to ``log_file``."""
        with self.log_file.open("a") as log:
            self.process = subprocess.Popen(AGENT + self.args("run", *extra), stderr=log, text=True)

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def stop(self) -> tuple[int, str]:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=15)
        return self.process.returncode, self.log()

    def snapshot(self) -> Snapshot | None:
        return FileStorage(self.state_dir).load()

    def state(self) -> str | None:
        snapshot = self.snapshot()
        return None if snapshot is None else snapshot.state.value


@pytest.fixture
def collector(mosquitto: MosquittoBroker) -> Iterator[MqttCollector]:
    script = CollectorScript(entitled={TAG: 5})
    running = MqttCollector(mosquitto.url, script).start()
    yield running
    running.stop()


@pytest.fixture
def agent(tmp_path: Path, mosquitto: MosquittoBroker) -> Iterator[Agent]:
    device = Agent(tmp_path, mosquitto)
    yield device
    if device.process is not None and device.process.poll() is None:
        device.process.kill()
        device.process.wait()


def test_register_report_authorize_then_go_out_of_compliance(
    agent: Agent, collector: MqttCollector
) -> None:
    registered = agent.cli("register", "--token", collector.script.token())
    assert (0, "") == (registered.returncode, registered.stderr)
    assert registered.stdout.startswith(f"registered {UDI} in smart account 'Acme'")
    agent.start()
    wait_for(lambda: agent.state() == "AUTHORIZED")
    collector.script.entitled = {TAG: 1}
    collector.publish(collector.script.push(DEVICE, time.time()))
    wait_for(lambda: agent.state() == "OUT_OF_COMPLIANCE")
    status = json.loads(agent.cli("status", "--json").stdout)
    code, err = agent.stop()
    snapshot = agent.snapshot()
    assert snapshot is not None
    assert (0, True, "Traceback" in err) == (code, snapshot.clean, False)
    assert ("OUT_OF_COMPLIANCE", "Default", 0) == (
        status["state"],
        status["virtual_account"],
        status["outbox"],
    )
    assert {"count": 3, "status": "out-of-compliance"} == {
        k: status["tags"][TAG][k] for k in ("count", "status")
    }


def test_a_usage_change_is_reported_and_answered(agent: Agent, collector: MqttCollector) -> None:
    assert 0 == agent.cli("register", "--token", collector.script.token()).returncode
    agent.start()
    wait_for(lambda: agent.state() == "AUTHORIZED")
    agent.set_usage(4)
    wait_for(lambda: [r.counts.get(TAG) for r in collector.script.reports][-1:] == [4])
    wait_for(lambda: (s := agent.snapshot()) is not None and not s.outbox)
    assert 0 == agent.stop()[0]


def test_a_bad_usage_file_is_warned_of_once_and_its_mending_is_reported(
    agent: Agent, collector: MqttCollector
) -> None:
    assert 0 == agent.cli("register", "--token", collector.script.token()).returncode
    agent.start()
    wait_for(lambda: agent.state() == "AUTHORIZED")
    agent.usage_file.write_text(f"[usage]\n{TAG} = \n")
    wait_for(lambda: "usage not updated" in agent.log())
    time.sleep(1.0)  # four polls of the unchanged bad file
    while_bad = agent.log()
    agent.set_usage(4)
    wait_for(lambda: [r.counts.get(TAG) for r in collector.script.reports][-1:] == [4])
    code, err = agent.stop()

    assert (1, 0) == (
        while_bad.count("usage not updated"),
        while_bad.count("usage source readable again"),
    )
    assert (0, 1, 1) == (
        code,
        err.count("usage not updated"),
        err.count("usage source readable again"),
    )


def outbox_holds(agent: Agent, reports: int) -> bool:
    snapshot = agent.snapshot()
    return snapshot is not None and len(snapshot.outbox) == reports


def test_reports_queued_across_a_broker_restart_are_all_answered(
    agent: Agent, collector: MqttCollector, mosquitto: MosquittoBroker
) -> None:
    """Collector down, reports pile up at the broker, the broker restarts: none is lost."""
    assert 0 == agent.cli("register", "--token", collector.script.token()).returncode
    agent.start()
    wait_for(lambda: agent.state() == "AUTHORIZED")
    collector.stop()
    for waiting, count in enumerate((4, 5), start=1):
        agent.set_usage(count)
        wait_for(partial(outbox_holds, agent, waiting))
    mosquitto.restart()
    collector.start()
    wait_for(lambda: (s := agent.snapshot()) is not None and not s.outbox, timeout=20)
    seqs = [r.seq for r in collector.script.reports]
    assert ([1, 2, 3], 5) == (seqs, collector.script.reports[-1].counts[TAG])
    assert 0 == agent.stop()[0]


def test_a_refused_registration_is_explained_in_one_line(
    agent: Agent, collector: MqttCollector
) -> None:
    collector.script.refuse_registration = ErrorCode.TOKEN_EXPIRED
    refused = agent.cli("register", "--token", collector.script.token())
    assert (1, 1) == (refused.returncode, refused.stderr.count("\n"))
    assert "the token has expired" in refused.stderr
    assert "[TOKEN_EXPIRED, 311]" in refused.stderr


def test_a_registration_without_answer_times_out_and_completes_in_run(
    agent: Agent, mosquitto: MosquittoBroker
) -> None:
    script = CollectorScript(entitled={TAG: 5})
    waited = agent.cli("register", "--token", script.token(), "--register-timeout", "1")
    pending = json.loads(agent.cli("status", "--json").stdout)["pending"]
    collector = MqttCollector(mosquitto.url, script).start()
    try:
        agent.start()
        wait_for(lambda: agent.state() == "AUTHORIZED")
        assert 0 == agent.stop()[0]
    finally:
        collector.stop()
    assert (3, "register") == (waited.returncode, pending)
    assert "no answer from the collector within 1 s" in waited.stderr


def test_the_hook_runs_on_every_state_change(
    agent: Agent, collector: MqttCollector, tmp_path: Path
) -> None:
    record = tmp_path / "hook.log"
    hook = tmp_path / "hook.py"
    hook.write_text(
        "import os, sys\n"
        f"with open({str(record)!r}, 'a') as f:\n"
        "    f.write(' '.join(sys.argv[1:]) + ' ' + os.environ['SMARTLIC_STATE'] + '\\n')\n"
    )
    assert 0 == agent.cli("register", "--token", collector.script.token()).returncode
    agent.start("--hook", f"{sys.executable} {hook}")
    wait_for(lambda: record.exists() and "AUTHORIZED" in record.read_text())
    assert 0 == agent.stop()[0]
    assert "AUTHORIZED REGISTERED AUTHORIZED\n" == record.read_text()


def test_run_without_a_broker_counts_evaluation_offline(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    process = subprocess.Popen(
        [*AGENT, "run", "--state-dir", str(folder), "--udi", UDI],
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for((folder / "state.cbor").exists)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=15)
    snapshot = FileStorage(folder).load()
    assert snapshot is not None
    assert (0, "EVALUATION", True) == (process.returncode, snapshot.state.value, snapshot.clean)
    assert "Traceback" not in err


def test_a_p256_device_on_mqtt_5_registers_and_deregisters(
    agent: Agent, collector: MqttCollector
) -> None:
    options = ("--key-type", "p256", "--mqtt-version", "5")
    registered = agent.cli("register", "--token", collector.script.token(), *options)
    deregistered = agent.cli("deregister", *options)
    assert (0, 0, "EVALUATION") == (
        registered.returncode,
        deregistered.returncode,
        agent.state(),
    )
    assert DEVICE not in collector.script.devices


def test_sigterm_while_the_broker_is_down_still_stops_cleanly(
    agent: Agent, collector: MqttCollector, mosquitto: MosquittoBroker
) -> None:
    assert 0 == agent.cli("register", "--token", collector.script.token()).returncode
    agent.start()
    wait_for(lambda: agent.state() == "AUTHORIZED")
    collector.stop()
    mosquitto.kill()
    time.sleep(0.5)
    code, err = agent.stop()
    snapshot = agent.snapshot()
    assert snapshot is not None
    assert (0, True) == (code, snapshot.clean)
    assert "Traceback" not in err
    mosquitto.start()


def test_a_killed_agent_resends_its_unanswered_report_and_jumps_ahead(
    agent: Agent, collector: MqttCollector
) -> None:
    """SIGKILL with a report sent but unanswered: the next run sends it again, none is lost."""
    assert 0 == agent.cli("register", "--token", collector.script.token()).returncode
    agent.start()
    wait_for(lambda: agent.state() == "AUTHORIZED")
    collector.script.answer_reports = False
    agent.set_usage(4)
    wait_for(partial(outbox_holds, agent, 1))
    assert agent.process is not None
    agent.process.kill()
    agent.process.communicate(timeout=10)
    collector.script.answer_reports = True
    agent.start()
    wait_for(partial(outbox_holds, agent, 0))
    agent.set_usage(5)
    wait_for(lambda: [r.counts.get(TAG) for r in collector.script.reports][-1:] == [5])
    assert 0 == agent.stop()[0]
    assert [1, 2, 1003] == [r.seq for r in collector.script.reports]


def test_run_with_an_unreadable_tls_file_is_a_one_line_config_error(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    ran = subprocess.run(
        [
            *AGENT,
            "run",
            "--state-dir",
            str(folder),
            "--udi",
            UDI,
            "--broker",
            "mqtts://127.0.0.1:9",
            "--tls-ca",
            str(tmp_path / "missing.pem"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (2, 1, False) == (
        ran.returncode,
        ran.stderr.count("\n"),
        (folder / "state.cbor").exists(),
    )
    assert ran.stderr.startswith("smartlic-agent: TLS settings cannot be used")


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A Mosquitto that lets in only ``device`` with the password ``pw``."""
    passwd = tmp_path / "passwd"
    passwd.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "device", "pw"], check=True)
    port = free_port()
    broker = MosquittoBroker(
        tmp_path / "broker",
        port=port,
        listeners=f"""per_listener_settings true
listener {port} 127.0.0.1
allow_anonymous false
password_file {passwd}""",
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


def _register_for_3_s(tmp_path: Path, *broker: str) -> subprocess.CompletedProcess[str]:
    """``smartlic-agent register`` that waits 3 s for an answer no collector gives."""
    return subprocess.run(
        [
            *AGENT,
            "register",
            "--token",
            CollectorScript(entitled={TAG: 5}).token(),
            "--register-timeout",
            "3",
            "--state-dir",
            str(tmp_path / "state"),
            "--udi",
            UDI,
            *broker,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_register_timeout_names_the_brokers_refusal(
    tmp_path: Path, password_broker: MosquittoBroker
) -> None:
    waited = _register_for_3_s(
        tmp_path, "--broker", f"mqtt://device:wrong@127.0.0.1:{password_broker.port}"
    )
    last_line = waited.stderr.splitlines()[-1]
    assert 3 == waited.returncode
    assert "(the broker refused the connection: Not authorized)" in last_line


def test_ctrl_c_while_register_waits_says_interrupted_and_exits_130(agent: Agent) -> None:
    script = CollectorScript(entitled={TAG: 5})  # no collector answers
    process = subprocess.Popen(
        AGENT + agent.args("register", "--token", script.token()),
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for((agent.state_dir / "state.cbor").exists)
    time.sleep(0.5)  # waiting for the answer now
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=15)
    snapshot = agent.snapshot()
    assert snapshot is not None
    assert (130, True) == (process.returncode, snapshot.clean)
    assert err.startswith("smartlic-agent: interrupted (SIGINT). The registration request stays")
    assert "register" == json.loads(agent.cli("status", "--json").stdout)["pending"]


def test_a_broker_that_wants_a_client_certificate_is_named_as_wanting_one(
    tmp_path: Path,
) -> None:
    """The TLS alert was reported as paho's "Unspecified error", which tells nobody that the
    device's certificate is what is missing."""
    ca = issue_certificate(tmp_path, "ca", "test CA", None, ca=True)
    issue_certificate(tmp_path, "broker", "127.0.0.1", ca, ip="127.0.0.1")
    port = free_port()
    broker = MosquittoBroker(
        tmp_path / "broker-dir",
        port=port,
        listeners=f"""listener {port} 127.0.0.1
certfile {tmp_path / "broker.crt"}
keyfile {tmp_path / "broker.key"}
cafile {tmp_path / "ca.crt"}
require_certificate true
allow_anonymous true""",
    )
    broker.start()
    try:
        waited = _register_for_3_s(
            tmp_path,
            "--broker",
            f"mqtts://127.0.0.1:{port}",
            "--tls-ca",
            str(tmp_path / "ca.crt"),
        )
    finally:
        broker.kill()

    assert 3 == waited.returncode
    assert "a broker that wants a client certificate" in waited.stderr.splitlines()[-1]
