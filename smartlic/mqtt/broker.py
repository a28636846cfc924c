"""A Mosquitto broker process of our own: for tests, benchmarks and the demo.

Starts ``mosquitto`` on a loopback port with a configuration written to its own directory
(persistence on, so a restart keeps sessions and queued QoS 1 messages, as a production broker
would), and can stop, kill and restart it on the same port.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self

if TYPE_CHECKING:
    from types import TracebackType

_SEARCH_PATH: Final = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")
START_TIMEOUT: Final = 10.0


class BrokerError(RuntimeError):
    """The broker could not be found or started; the message says what to do."""


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary, looking in the usual sbin folders too."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for folder in _SEARCH_PATH:
        candidate = Path(folder) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: each socket stays bound until all are found, so the
    kernel cannot hand out the same port twice."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def listener_ports(config: str) -> list[int]:
    """The ports of a Mosquitto configuration's ``listener <port> [address]`` lines."""
    ports: list[int] = []
    for line in config.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "listener" and words[1].isdigit():
            ports.append(int(words[1]))
    return ports


def wait_for_port(port: int, timeout: float, host: str = "127.0.0.1") -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return True
        time.sleep(0.02)
    return False


class MosquittoBroker:
    """``with MosquittoBroker(tmp_path) as broker: ... broker.port ... broker.restart()``."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        extra_config: str = "",
        listeners: str | None = None,
        binary: str | None = None,
    ) -> None:
        """``listeners`` replaces the default open loopback listener (it must use ``port``)."""
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.extra_config = extra_config
        self.listeners = listeners
        self.binary = binary or find_mosquitto()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (benchmarks read its CPU time)."""
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        self.config_file.write_text(
            f"""# written by smartlic for a broker of its own
{self.listeners or f"listener {self.port} 127.0.0.1{chr(10)}allow_anonymous true"}
# started as root, mosquitto would switch to user "mosquitto", which cannot write to our
# private temporary folders (persistence, log): stay the user that started it
user {getpass.getuser()}
persistence true
persistence_location {data}/
autosave_interval 1
# a collector that is down may have any number of reports waiting: queue them all
max_queued_messages 0
max_inflight_messages 0
set_tcp_nodelay true
log_dest file {self.log_file}
log_type error
log_type warning
log_type notice
connection_messages false
{self.extra_config}
""",
            encoding="utf-8",
        )

    def start(self) -> None:
        if self.running:
            return
        if self.binary is None:
            raise BrokerError(
                "mosquitto is not installed: run scripts/bootstrap, or 'apt-get install mosquitto'"
            )
        self._write_config()
        self._process = subprocess.Popen(  # noqa: S603 -- our own binary and config file
            [self.binary, "-c", str(self.config_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Mosquitto opens its listeners one after another: a client of the last one must not
        # race the broker's start, so wait for every port the configuration names.
        deadline = time.monotonic() + START_TIMEOUT
        for port in listener_ports(self.listeners or "") or [self.port]:
            if not wait_for_port(port, max(0.5, deadline - time.monotonic())):
                self.kill()
                log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
                raise BrokerError(f"mosquitto did not listen on {port}: {log[-500:]}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM): Mosquitto saves its persistence file first."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop abruptly (SIGKILL): what a crash or power loss looks like."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self, *, down_for: float = 0.0) -> None:
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
