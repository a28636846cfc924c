"""The daemon: one core, one paho client on paho's own network loop, in one thread.

Why not asyncio: importing it costs about 11 MB, a third of the agent's whole footprint, and a
device has one connection — paho's ``loop()`` (a ``select()`` on one socket) is all it needs.
Every paho callback runs inside ``loop()`` on the main thread, so the core needs no lock.

Session rules (SPEC §5, docs/architecture.md): client id = device id, persistent session
(``clean_session=False``; MQTT 5: ``clean_start=False`` and a session that never expires),
QoS 1, and the downlink subscribed — SUBACK received — before anything is published. paho's own
queue of unacknowledged messages is dropped on every (re)connection: the core re-sends what is
still unanswered, and that keeps paho's 16-bit packet ids far from wrapping (the core keeps at
most ``window`` publishes in flight).
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from smartlic.agent.actions import (
    Action,
    Deregistered,
    DeregistrationRefused,
    NoticeApplied,
    NoticeIgnored,
    Persist,
    Publish,
    RegistrationRefused,
    RegistrationSucceeded,
    ReportAnswered,
    ReportDropped,
    ReportQueued,
    StateChanged,
)
from smartlic.agent.errors import AgentError, LocalAgentError
from smartlic.agent.hooks import HookRunner
from smartlic.agent.retry import backoff_delay, unit_interval
from smartlic.agent.sources import UsageCommand, UsageFile
from smartlic.agent.usage import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from paho.mqtt.client import ConnectFlags, DisconnectFlags
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from smartlic.agent.config import AgentConfig
    from smartlic.agent.core import AgentCore
    from smartlic.agent.retry import Entropy
    from smartlic.agent.storage import Storage
    from smartlic.mqtt.url import BrokerAddress

log = logging.getLogger("smartlic.agent")

MAX_WAIT: Final = 1.0
"""Longest sleep in the loop: how late a SIGTERM or a due timer can be noticed."""
FILE_POLL: Final = 2.0
RECONNECT_BASE: Final = 1.0
SESSION_EXPIRY_NEVER: Final = 0xFFFFFFFF


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    finished_by: Action | None = None
    """The action that satisfied ``until``; ``None`` when stopped by a signal or timeout."""
    timed_out: bool = False
    last_error: str | None = None
    """The last connection problem, to explain a timeout."""
    stopped_by: int | None = None
    """The signal (SIGTERM, SIGINT) that ended the run, if one did."""


@dataclass(frozen=True, slots=True)
class Link:
    address: BrokerAddress
    client: paho.Client


class Daemon:
    def __init__(
        self,
        config: AgentConfig,
        core: AgentCore,
        storage: Storage,
        *,
        entropy: Entropy,
        require_broker: bool = False,
    ) -> None:
        self.config = config
        self.core = core
        self.storage = storage
        self.entropy = entropy
        address = None
        if require_broker or config.broker or core.state.registered or core.pending:
            # An unregistered device with no broker runs offline, counting its evaluation.
            address = config.usable_broker_address()
        self.broker = str(address) if address else "no broker"
        self.hooks = (
            HookRunner(config.hook, udi=str(core.udi), timeout=config.hook_timeout)
            if config.hook
            else None
        )
        self.usage: UsageFile | UsageCommand | None = None
        if config.usage_file is not None:
            self.usage = UsageFile(config.usage_file)
        elif config.usage_command is not None:
            self.usage = UsageCommand(config.usage_command)
        self._usage_problem: str | None = None
        # On the monotonic clock, like every other timer of the loop: a wall clock stepped
        # back (NTP) must not stop the polls until it has caught up again.
        self._next_usage_poll = 0.0
        self._mids: dict[int, Publish] = {}
        self._socket_open = False
        self._attempt = 0
        self._reconnect_at = 0.0
        self._subscribed_at: float | None = None
        self._refusal: str | None = None
        self._stopping = False
        self._stopped_by: int | None = None
        self._until: Callable[[Action], bool] | None = None
        self._finished_by: Action | None = None
        self._last_error: str | None = None
        self._socket_error: str | None = None
        """The last socket error paho logged: its disconnect reason says only "Unspecified
        error" for a TLS alert (a certificate the broker wants, or refuses) or a reset."""
        self.link = None if address is None else Link(address, self._make_client(address))

    # ---- paho --------------------------------------------------------------------------

    def _make_client(self, address: BrokerAddress) -> paho.Client:
        v5 = self.config.mqtt_version == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.core.device_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
        )
        if address.username is not None:
            client.username_pw_set(address.username, address.password)
        if address.tls is not None:
            client.tls_set_context(address.tls.context())
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        client.on_log = self._on_log
        return client

    def _on_log(self, _client: paho.Client, _userdata: object, level: int, text: str) -> None:
        if level == paho.MQTT_LOG_ERR and self._socket_error is None:
            self._socket_error = text  # the first says why; what follows is about the socket gone

    def _socket_problem(self) -> str | None:
        """What went wrong on the socket, with a hint where a TLS connection without a client
        certificate was ended: the likeliest reason is a broker that wants one."""
        error = self._socket_error
        tls = None if self.link is None else self.link.address.tls
        if error is None or tls is None or tls.cert_file is not None:
            return error
        lowered = error.lower()
        if "ssl" in lowered or "eof occurred" in lowered or "certificate" in lowered:
            hint = "a broker that wants a client certificate ends TLS so (--tls-cert, --tls-key)"
            return f"{error}; {hint}"
        return error

    def _connect(self, link: Link) -> None:
        kwargs: dict[str, Any] = {}
        if self.config.mqtt_version == "5":
            from paho.mqtt.packettypes import PacketTypes  # noqa: PLC0415 -- MQTT 5 only
            from paho.mqtt.properties import Properties  # noqa: PLC0415 -- MQTT 5 only

            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho
            properties.SessionExpiryInterval = SESSION_EXPIRY_NEVER
            kwargs = {"clean_start": False, "properties": properties}
        self._refusal = self._socket_error = None
        try:
            rc = link.client.connect(
                link.address.host, link.address.port, self.config.keepalive, **kwargs
            )
        except (OSError, ValueError) as exc:
            reason = str(exc)
        else:
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._socket_open = True
                return
            reason = self._socket_problem() or paho.error_string(rc)
        self._last_error = f"cannot reach {self.broker}: {reason}"
        log.warning("%s; retrying in %.0f s", self._last_error, self._schedule_reconnect())

    def _schedule_reconnect(self) -> float:
        delay = backoff_delay(
            self._attempt,
            base=RECONNECT_BASE,
            cap=self.config.reconnect_max,
            unit=unit_interval(self.entropy),
        )
        self._attempt += 1
        self._reconnect_at = time.monotonic() + delay
        return delay

    def _on_connect(
        self,
        client: paho.Client,
        _userdata: object,
        flags: ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self._socket_error = None
        if reason.is_failure:
            self._refuse(f"the broker refused the connection: {reason}")
            log.error("%s", self._last_error)
            return
        log.info(
            "connected to %s (session %s)",
            self.broker,
            "resumed" if flags.session_present else "new",
        )
        # Drop what paho would re-send on its own: the core re-sends what is unanswered.
        client.drop_out_messages()
        self._mids.clear()
        client.subscribe(self.core.downlink, qos=1)

    def _on_subscribe(
        self,
        client: paho.Client,
        _userdata: object,
        _mid: int,
        reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        if any(r.is_failure for r in reasons):
            self._refuse(f"the broker refused the subscription to {self.core.downlink}")
            log.error("%s (check its ACL)", self._last_error)
            client.disconnect()
            return
        self._refusal = None
        self._subscribed_at = time.monotonic()
        self._execute(self.core.connected(time.time()))

    def _refuse(self, refusal: str) -> None:
        """Remember why the broker turned this connection down: the disconnection that
        follows must not hide it behind "connection lost"."""
        self._refusal = self._last_error = refusal

    def _on_message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        # paho sends the PUBACK after this returns: the state is saved before the broker
        # forgets the message (QoS 1 redelivers it if we crash first).
        self._execute(self.core.received(msg.topic, bytes(msg.payload), time.time()))

    def _on_publish(
        self,
        _client: paho.Client,
        _userdata: object,
        mid: int,
        _reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        publish = self._mids.pop(mid, None)
        if publish is not None:
            self._execute(self.core.publish_acked(publish, time.time()))

    def _on_disconnect(
        self,
        client: paho.Client,
        _userdata: object,
        _flags: DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self._socket_open = False
        client.drop_out_messages()
        self._mids.clear()
        subscribed_at, self._subscribed_at = self._subscribed_at, None
        # The backoff starts over only after a connection that stayed up a keep-alive
        # interval: a broker that drops every session right after the SUBACK (an ACL that
        # refuses our publish, a packet over its size limit) is retried less and less often,
        # not every second for ever.
        if subscribed_at is not None and time.monotonic() - subscribed_at >= self.config.keepalive:
            self._attempt = 0
        if not self._stopping:
            if self._refusal is None:
                why = self._socket_problem() or str(reason)
                self._last_error = f"connection to {self.broker} lost: {why}"
                log.warning(
                    "%s; reconnecting in %.0f s", self._last_error, self._schedule_reconnect()
                )
            else:
                log.info("reconnecting in %.0f s", self._schedule_reconnect())
        self._execute(self.core.disconnected(time.time()))

    # ---- actions -----------------------------------------------------------------------

    def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            self._carry_out(action)
            if self._until is not None and self._finished_by is None and self._until(action):
                self._finished_by = action

    def _carry_out(self, action: Action) -> None:
        if isinstance(action, Persist):
            self.storage.save(action.snapshot)
        elif isinstance(action, Publish):
            if self.link is None:
                return
            info = self.link.client.publish(action.topic, action.payload, qos=action.qos)
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._mids[info.mid] = action
            what = f"report {action.seq}" if action.seq is not None else "request"
            log.debug("sent %s (attempt %d, %d bytes)", what, action.attempt, len(action.payload))
        elif isinstance(action, StateChanged):
            log.info(
                "state %s -> %s (%s)", action.previous.value, action.state.value, action.event.value
            )
            if self.hooks is not None:
                self.hooks.state_changed(action)
        else:
            log_fact(action)

    # ---- usage -------------------------------------------------------------------------

    def _poll_usage(self, now: float) -> None:
        """Poll the usage source if it is due; ``now`` is the wall time the core is given."""
        due = time.monotonic()
        if self.usage is None or due < self._next_usage_poll:
            return
        interval = self.config.usage_interval
        if isinstance(self.usage, UsageFile):
            interval = min(FILE_POLL, interval)
        self._next_usage_poll = due + interval
        try:
            counts = self.usage.poll()
        except UsageError as exc:
            if str(exc) != self._usage_problem:
                log.warning("usage not updated: %s", exc)
            self._usage_problem = str(exc)
            return
        if self._usage_problem is not None:
            log.info("usage source readable again")
            self._usage_problem = None
        if counts is not None:
            self._execute(self.core.usage_changed(counts, now))

    # ---- the loop ----------------------------------------------------------------------

    def _stop_signal(self, signum: int, _frame: object) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        self._stopping = True
        self._stopped_by = signum

    def run(
        self,
        *,
        first: Callable[[float], list[Action]] | None = None,
        until: Callable[[Action], bool] | None = None,
        timeout: float | None = None,
    ) -> Outcome:
        """Run until SIGTERM/SIGINT, ``until`` accepts an action, or ``timeout`` seconds."""
        self._until = until
        previous = {
            sig: signal.signal(sig, self._stop_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            now = time.time()
            self._execute(self.core.start(now))
            self._poll_usage(now)
            if first is not None:
                try:
                    self._execute(first(now))
                except LocalAgentError:
                    # Refused before anything was sent (a malformed token): the run ends as
                    # cleanly as a SIGTERM would end it, or the next one would think it crashed.
                    self._shutdown()
                    raise
            while not self._stopping and self._finished_by is None:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._step()
        except AgentError:
            # The state could not be saved: stop before anything else is sent, so nothing
            # goes out that a restart would not know about.
            self._stopping = True
            self._disconnect()
            raise
        else:
            self._shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return Outcome(
            finished_by=self._finished_by,
            timed_out=self._finished_by is None and not self._stopping,
            last_error=self._last_error,
            stopped_by=self._stopped_by,
        )

    def _step(self) -> None:
        now = time.time()
        wait = MAX_WAIT
        timer = self.core.next_timer(now)
        if timer is not None:
            wait = min(wait, max(0.0, timer - now))
        if self.usage is not None:
            wait = min(wait, max(0.0, self._next_usage_poll - time.monotonic()))
        link = self.link
        if link is not None and not self._socket_open and time.monotonic() >= self._reconnect_at:
            self._connect(link)
        if link is not None and self._socket_open:
            link.client.loop(timeout=wait)
        else:
            if link is not None:
                # Between connection attempts: wake up for the next one. Offline (no link)
                # there is none, and ``_reconnect_at`` (0.0) would make this a busy loop.
                wait = min(wait, max(0.0, self._reconnect_at - time.monotonic()))
            time.sleep(wait or 0.01)
        now = time.time()
        self._poll_usage(now)
        # Given ``now``, the timer is due at once after the wall clock was set back: it counts
        # from the last wall time the core saw, and would otherwise stall the core that long.
        timer = self.core.next_timer(now)
        if timer is None or now >= timer:
            self._execute(self.core.tick(now))
        if self.hooks is not None:
            self.hooks.pump()

    def _shutdown(self) -> None:
        """Save the state marked clean, then say goodbye to the broker."""
        self._stopping = True
        try:
            self._execute(self.core.stop(time.time()))
        except AgentError as exc:
            log.error("could not save the state on the way out: %s", exc)  # noqa: TRY400 -- one line
        self._disconnect()
        if self.hooks is not None:
            self.hooks.finish(timeout=5.0)

    def _disconnect(self) -> None:
        link = self.link
        if link is None or not self._socket_open:
            return
        link.client.disconnect()
        end = time.monotonic() + 2.0
        while self.connection_open and time.monotonic() < end:
            link.client.loop(timeout=0.1)

    @property
    def connection_open(self) -> bool:
        return self._socket_open


def log_fact(action: Action) -> None:
    """Log what the core reports, concisely."""
    if isinstance(action, ReportQueued):
        counts = ", ".join(f"{t}={n}" for t, n in sorted(action.counts.items())) or "none"
        log.info("report %d queued (%s)", action.seq, counts)
    elif isinstance(action, ReportAnswered):
        refusal = f" refused: {action.code.name}" if action.code is not None else ""
        log.info("report %d answered: %s%s", action.seq, action.answer.name, refusal)
    elif isinstance(action, ReportDropped):
        log.info("report %d dropped: %s", action.seq, action.reason)
    elif isinstance(action, NoticeApplied):
        log.debug("applied %s notice %d", action.kind.name, action.notice_seq)
    elif isinstance(action, NoticeIgnored):
        log.warning("ignored a downlink message: %s", action.reason)
    elif isinstance(action, RegistrationSucceeded):
        log.info("registered in %s / %s", action.smart_account, action.virtual_account)
    elif isinstance(action, RegistrationRefused | DeregistrationRefused):
        # INFO: ``register`` and ``deregister`` explain it themselves, ``run`` logs at INFO.
        log.info("collector refused: %s [%s]", action.message, action.code.name)
    elif isinstance(action, Deregistered):
        log.warning("deregistered%s", " by the collector" if action.by_collector else "")
