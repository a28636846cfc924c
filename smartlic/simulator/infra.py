"""What a run stands on: a broker, a collector process, a shared clock, enough file descriptors.

With no ``--broker`` the simulator starts everything itself, as the demo does: Mosquitto when
the binary is found (``max_connections -1``, persistence on, so an outage can stop and restart
it with sessions kept), else amqtt, a pure-Python broker (``pip install 'smartlic[demo]'``) —
which speaks MQTT 3.1.1 only and has no shared subscriptions, so then everything uses 3.1.1 and
the collector subscribes without a share group. The collector is ``smartlic-collector run`` in
a child process (its own CPU), logging JSON to a file in the run's folder; it is ready when it
logs ``collector.connected`` (subscribed).

:func:`read_clock` asks the collector for the time: a registration with a token it cannot know
is refused with a signed error notice that carries the collector's ``issued_at`` — the
simulator's NTP packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import resource
import secrets
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Final, Protocol

from smartlic.collector.service.config import RECEIPT_RETENTION_MAX_DAYS
from smartlic.mqtt.aio import AsyncMqttClient, MqttMessage
from smartlic.mqtt.broker import (
    BrokerError,
    MosquittoBroker,
    find_mosquitto,
    free_port,
    wait_for_port,
)
from smartlic.mqtt.common import MqttError
from smartlic.protocol import (
    Algorithm,
    ErrorNotice,
    KeyType,
    ProtocolError,
    RegistrationRequest,
    RegistrationToken,
    SigningKey,
    Udi,
    open_message,
    seal,
)
from smartlic.simulator.clock import ClockReading, best_reading

if TYPE_CHECKING:
    from pathlib import Path

    from smartlic.mqtt.aio import ProtocolName
    from smartlic.mqtt.url import BrokerAddress
    from smartlic.protocol import Topics
    from smartlic.simulator.clock import VirtualClock

_START_TIMEOUT: Final = 30.0
_AMQTT_SCRIPT: Final = """
import asyncio, logging, sys
from amqtt.broker import Broker

logging.basicConfig(level=logging.CRITICAL)

async def serve(port):
    broker = Broker({
        "listeners": {
            "default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 0},
        },
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    })
    await broker.start()
    await asyncio.Event().wait()

asyncio.run(serve(int(sys.argv[1])))
"""
_COLLECTOR_SCRIPT: Final = "import sys\nfrom smartlic.collector.cli import main\nsys.exit(main())"


class InfraError(RuntimeError):
    """A broker or collector could not be started or reached; the message says what to do."""


def raise_open_files() -> int:
    """Raise RLIMIT_NOFILE to its hard limit (children inherit it: the broker too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1_048_576)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Broker(Protocol):
    kind: str
    protocol: ProtocolName | None
    """The only MQTT version it speaks, or ``None`` for both."""
    shared_subscriptions: bool
    restartable: bool

    @property
    def url(self) -> str: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...


class OwnMosquitto:
    kind = "mosquitto"
    protocol: ProtocolName | None = None
    shared_subscriptions = True
    restartable = True

    def __init__(self, workdir: Path) -> None:
        self._broker = MosquittoBroker(workdir, extra_config="max_connections -1\n")

    @property
    def url(self) -> str:
        return self._broker.url

    def start(self) -> None:
        try:
            self._broker.start()
        except BrokerError as exc:
            # The run could not be made (exit 3), which is not a check that failed (exit 1).
            raise InfraError(f"cannot start mosquitto: {exc}") from None

    def stop(self) -> None:
        self._broker.stop()

    def kill(self) -> None:
        self._broker.kill()


class OwnAmqtt:
    """amqtt in a child process on a loopback port; it keeps nothing across a restart."""

    kind = "amqtt"
    protocol: ProtocolName | None = "3.1.1"
    shared_subscriptions = False
    restartable = True

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "amqtt.log").open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 -- our interpreter, our script
                [sys.executable, "-c", _AMQTT_SCRIPT, str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        if not wait_for_port(self.port, _START_TIMEOUT):
            self.kill()
            raise InfraError(f"amqtt did not listen on port {self.port} (see {self.workdir})")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()


class ExternalBroker:
    kind = "external"
    protocol: ProtocolName | None = None
    shared_subscriptions = True
    restartable = False

    def __init__(self, url: str) -> None:
        self._url = url

    @property
    def url(self) -> str:
        return self._url

    def start(self) -> None:
        """Someone else runs it."""

    def stop(self) -> None:
        raise InfraError("this run did not start the broker: it cannot stop it")

    def kill(self) -> None:
        self.stop()


def amqtt_available() -> bool:
    return importlib.util.find_spec("amqtt") is not None


def own_broker(workdir: Path, prefer: str = "auto") -> Broker:
    """Mosquitto when found (or asked for), else amqtt; a clear error when neither is here."""
    if prefer in ("auto", "mosquitto") and find_mosquitto() is not None:
        return OwnMosquitto(workdir / "mosquitto")
    if prefer == "mosquitto":
        raise InfraError("mosquitto is not installed ('apt-get install mosquitto')")
    if amqtt_available():
        return OwnAmqtt(workdir / "amqtt")
    raise InfraError(
        "no MQTT broker: install Mosquitto ('apt-get install mosquitto', 'brew install "
        "mosquitto') or the embedded one ('pip install \"smartlic[demo]\"'), or pass --broker URL"
    )


class CollectorProcess:
    """``smartlic-collector run`` as a child process, logging JSON lines to ``log_path``."""

    def __init__(self, arguments: list[str], *, log_path: Path) -> None:
        self.arguments = arguments
        self.log_path = log_path
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self.events: dict[str, int] = {}
        """How many times each log event was seen (``collector.refused``, ...)."""

    @classmethod
    def command(  # noqa: PLR0913 -- every setting the simulator passes to the collector
        cls,
        *,
        db: Path,
        key: Path,
        broker: str,
        protocol: ProtocolName,
        share_group: str | None,
        time_scale: float,
        time_origin: int | None,
        clock_skew: int,
        client_id: str,
        log_path: Path,
        intake_limit: int | None = None,
    ) -> CollectorProcess:
        args = ["run", "--db", str(db), "--key", str(key), "--broker", broker]
        if intake_limit is not None:
            args += ["--intake-limit", str(intake_limit)]
        args += ["--mqtt-protocol", protocol, "--client-id", client_id]
        args += ["--clock-skew", str(clock_skew), "--log-format", "json", "--log-level", "info"]
        if share_group is not None:
            args += ["--share-group", share_group]
        if time_scale != 1 or time_origin is not None:
            args += ["--time-scale", repr(time_scale)]
            if time_origin is not None:
                args += ["--time-origin", str(time_origin)]
            # The run's checks read every accepted report's row at the end: 3,600 times
            # faster, the default 30 days of answers last 12 minutes, after which pruning
            # would make answered reports look unrecorded.
            args += ["--receipt-retention-days", str(RECEIPT_RETENTION_MAX_DAYS)]
        return cls(args, log_path=log_path)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self, timeout: float = _START_TIMEOUT) -> None:  # noqa: ASYNC109 -- real seconds
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _COLLECTOR_SCRIPT,
            *self.arguments,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read_log(), name="collector-log")
        exited = asyncio.ensure_future(self._process.wait())
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({exited, ready}, timeout=timeout, return_when="FIRST_COMPLETED")
        finally:
            ready.cancel()
            exited.cancel()
        if not self._ready.is_set():
            await self.stop()
            raise InfraError(f"the collector did not start: {self.tail()}")

    async def _read_log(self) -> None:
        process = self._process
        if process is None or process.stderr is None:
            return
        # Unbuffered: the log is readable as it grows, and whole if the run is killed.
        with self.log_path.open("ab", buffering=0) as log:
            async for line in process.stderr:
                log.write(line)
                event = _event_of(line)
                if event is not None:
                    self.events[event] = self.events.get(event, 0) + 1
                    if event == "collector.connected":
                        self._ready.set()

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        last = text.strip().splitlines()[-lines:]
        return " | ".join(last) or f"no output (see {self.log_path})"

    async def stop(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109 -- real seconds
        """SIGTERM: the service finishes the batch in hand, commits, acknowledges, exits."""
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def _event_of(line: bytes) -> str | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    event = record.get("event") if isinstance(record, dict) else None
    return event if isinstance(event, str) else None


async def read_clock(
    broker: BrokerAddress,
    *,
    topics: Topics,
    protocol: ProtocolName,
    fingerprint: bytes,
    clock: VirtualClock,
    probe_id: str,
    probes: int = 5,
    timeout: float = 10.0,  # noqa: ASYNC109 -- real seconds for each probe
) -> ClockReading:
    """The collector's virtual time, from the best of ``probes`` round trips."""
    udi = Udi(product_id="SIM-CLOCK", serial=probe_id)
    answers: asyncio.Queue[MqttMessage] = asyncio.Queue()
    client = AsyncMqttClient(
        client_id=udi.device_id,
        broker=broker,
        on_message=answers.put_nowait,
        subscriptions=[(topics.downlink(udi.device_id), 1)],
        protocol=protocol,
        clean_start=True,
    )
    key = SigningKey.from_seed(KeyType.ED25519, secrets.token_bytes(32))
    readings: list[ClockReading] = []
    try:
        await client.connect()
    except MqttError as exc:
        raise InfraError(f"cannot reach the broker to read the collector's clock: {exc}") from None
    try:
        for _ in range(probes):
            request_id = secrets.token_bytes(16)
            token = RegistrationToken(
                token_id=secrets.token_bytes(8),
                secret=secrets.token_bytes(16),
                collector_fingerprint=fingerprint,
            )
            request = RegistrationRequest(
                udi=udi,
                algorithm=Algorithm.ED25519,
                public_key=key.public.raw,
                token=str(token),
                request_id=request_id,
                issued_at=int(clock.now()),
            )
            sent = time.monotonic()
            await client.publish(topics.uplink(udi.device_id), seal(request, key))
            reported = await _answer_time(answers, request_id, timeout)
            readings.append(
                ClockReading(
                    sent=sent, received=time.monotonic(), reported=reported, scale=clock.scale
                )
            )
    except TimeoutError:
        raise InfraError("the collector did not answer a clock probe in time") from None
    finally:
        await client.disconnect()
    return best_reading(readings)


async def _answer_time(
    answers: asyncio.Queue[MqttMessage],
    request_id: bytes,
    timeout: float,  # noqa: ASYNC109 -- real seconds
) -> int:
    async with asyncio.timeout(timeout):
        while True:
            message = await answers.get()
            try:
                notice = open_message(message.payload).message
            except ProtocolError:
                continue
            if isinstance(notice, ErrorNotice) and notice.in_reply_to == request_id:
                return notice.issued_at
