"""``smartlic-agent``: register, run, status, deregister.

Every setting of :class:`~smartlic.agent.config.AgentConfig` is a flag (``--state-dir``) and a
key of the ``--config`` TOML file (``state_dir``); flags win. Errors are one line on stderr,
never a traceback. Exit status: 0 done, 1 refused or failed, 2 bad configuration or usage,
3 no answer from the collector in time, 128 + N stopped by signal N (130: Ctrl-C) while waiting.

paho is imported only by the commands that talk to the broker, so ``status`` stays light.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from smartlic.agent.actions import (
    Deregistered,
    DeregistrationRefused,
    Persist,
    RegistrationRefused,
    RegistrationSucceeded,
    StateChanged,
)
from smartlic.agent.config import KEY_TYPES, KEYS, AgentConfig, build_config, read_config_file
from smartlic.agent.errors import AgentError, ConfigError, explain
from smartlic.agent.hooks import HookRunner
from smartlic.agent.settings import CoreSettings
from smartlic.agent.statedir import locked, open_core, prepare
from smartlic.agent.status import status_of
from smartlic.agent.storage import FileStorage
from smartlic.protocol import ProtocolError, format_fingerprint, parse_token

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from smartlic.agent.actions import Action
    from smartlic.agent.core import AgentCore
    from smartlic.agent.daemon import Outcome
    from smartlic.agent.storage import Storage

PROG: Final = "smartlic-agent"
EXIT_REFUSED: Final = 1
EXIT_CONFIG: Final = 2
EXIT_NO_ANSWER: Final = 3
log = logging.getLogger("smartlic.agent")

_FLAG_HELP: Final[dict[str, str]] = {
    "state_dir": "directory for the key and state (default /var/lib/smartlic-agent)",
    "broker": "broker URL, mqtt://HOST[:PORT] or mqtts://...",
    "udi": "this device's UDI, PRODUCT_ID:SERIAL",
    "usage_file": "TOML file with a [usage] table of tag = count",
    "usage_command": "command printing tag=count lines",
    "usage_interval": "seconds between runs of the usage command (default 60; the file: 2)",
    "key_type": "device key type for a new key (default ed25519)",
    "report_debounce": "seconds of stable usage before a change is reported (default 5)",
    "checkpoint_interval": "save the use clock at least this often, in seconds (default 600)",
    "hook": "command run on every state change (new and previous state appended)",
    "hook_timeout": "seconds a hook may run (default 30)",
    "topic_prefix": "MQTT topic prefix (default smartlic/v1)",
    "username": "MQTT user name",
    "password_file": "file holding the MQTT password",
    "tls_ca": "CA bundle to verify the broker",
    "tls_cert": "client certificate (PEM)",
    "tls_key": "client certificate's key (PEM)",
    "mqtt_version": "MQTT protocol version (default 3.1.1)",
    "keepalive": "MQTT keep-alive in seconds (default 60)",
    "register_timeout": "seconds to wait for the collector's answer (default 30)",
    "reconnect_max": "longest wait between reconnection attempts (default 300)",
    "log_level": "debug, info, warning or error (default info)",
}
_CHOICES: Final[dict[str, Sequence[str]]] = {
    "key_type": tuple(KEY_TYPES),
    "mqtt_version": ("3.1.1", "5"),
    "log_level": ("debug", "info", "warning", "error"),
}


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    sys.stderr.write(f"{PROG}: {text}\n")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # noqa: ANN401 -- argparse's signature (NoReturn)
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--config", type=Path, help="TOML file with any of these settings")
    for key in KEYS:
        common.add_argument(
            "--" + key.replace("_", "-"),
            dest=key,
            choices=_CHOICES.get(key),
            help=_FLAG_HELP.get(key),
        )
    parser = _Parser(prog=PROG, parents=[common], description="The smartlic device agent.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    register = commands.add_parser(
        "register", parents=[common], help="register this device with a token"
    )
    token = register.add_mutually_exclusive_group(required=True)
    token.add_argument("--token", help="registration token (slt1_...)")
    token.add_argument("--token-file", type=Path, help="file holding the token")
    register.set_defaults(handler=_register)
    commands.add_parser("run", parents=[common], help="run the agent").set_defaults(handler=_run)
    status = commands.add_parser("status", parents=[common], help="show the license state")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)
    deregister = commands.add_parser(
        "deregister", parents=[common], help="release this device's licenses"
    )
    deregister.add_argument(
        "--force",
        action="store_true",
        help="forget the registration locally, without the collector's answer",
    )
    deregister.set_defaults(handler=_deregister)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    values = vars(args)
    try:
        file_values = read_config_file(values["config"]) if "config" in values else {}
        config = build_config(file_values, {k: v for k, v in values.items() if k in KEYS})
        _setup_logging(config, interactive=args.command in ("register", "deregister"))
        handler: Callable[[AgentConfig, argparse.Namespace], int] = args.handler
        return handler(config, args)
    except ConfigError as exc:
        _err(str(exc))
        return EXIT_CONFIG
    except (AgentError, ProtocolError) as exc:
        _err(str(exc))
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


def _setup_logging(config: AgentConfig, *, interactive: bool) -> None:
    level = getattr(logging, config.log_level.upper())
    if interactive and level == logging.INFO:
        level = logging.WARNING
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )


def _open(config: AgentConfig, *, create: bool) -> tuple[AgentCore, FileStorage]:
    """The core and its storage; a new device (and key) only with ``create``."""
    core, storage, created = open_core(
        config.state_dir,
        udi=config.parsed_udi(),
        key_type=config.key_kind,
        entropy=os.urandom,
        settings=config.core_settings(),
        create=create,
    )
    if created:
        log.info(
            "made a new %s device key: %s",
            config.key_kind.value,
            format_fingerprint(core.snapshot().key_fingerprint),
        )
    if storage.warning:
        log.warning("%s", storage.warning)
    elif core.recovered_unclean:
        log.warning("the last run did not stop cleanly: report numbers jump ahead")
    return core, storage


def _talk(
    config: AgentConfig,
    core: AgentCore,
    storage: Storage,
    first: Callable[[float], list[Action]],
    until: Callable[[Action], bool],
) -> Outcome:
    from smartlic.agent.daemon import Daemon  # noqa: PLC0415 -- paho only when talking

    daemon = Daemon(config, core, storage, entropy=os.urandom, require_broker=True)
    return daemon.run(first=first, until=until, timeout=config.register_timeout)


def _no_answer(config: AgentConfig, outcome: Outcome, what: str) -> int:
    pending = (
        f"The {what} request stays pending: 'smartlic-agent run' completes it when the answer "
        "arrives."
    )
    if outcome.stopped_by is not None:
        # The daemon's handler caught the Ctrl-C (or SIGTERM), so it never reached main() as
        # a KeyboardInterrupt: exit as the shell expects of a process stopped by that signal.
        _err(f"interrupted ({signal.Signals(outcome.stopped_by).name}). {pending}")
        return 128 + outcome.stopped_by
    problem = f" ({outcome.last_error})" if outcome.last_error else ""
    _err(f"no answer from the collector within {config.register_timeout:g} s{problem}. {pending}")
    return EXIT_NO_ANSWER


def _register(config: AgentConfig, args: argparse.Namespace) -> int:
    token = args.token if args.token is not None else _read_token(args.token_file)
    # A malformed token is refused before the state directory is even opened: once the daemon
    # runs, the state says "running" until it stops cleanly.
    parse_token(token)
    config.usable_broker_address()
    folder = prepare(config.state_dir)
    with locked(folder):
        core, storage = _open(config, create=True)
        if core.state.registered:
            raise AgentError(
                f"{core.udi} is already registered ({core.state.value}): deregister it first"
            )
        outcome = _talk(
            config,
            core,
            storage,
            lambda now: core.register(token, now),
            lambda a: isinstance(a, RegistrationSucceeded | RegistrationRefused),
        )
    finished = outcome.finished_by
    if isinstance(finished, RegistrationSucceeded):
        _out(
            f"registered {core.udi} in smart account {finished.smart_account!r}, virtual account "
            f"{finished.virtual_account!r}; collector key "
            f"{format_fingerprint(finished.collector_fingerprint)}"
        )
        return 0
    if isinstance(finished, RegistrationRefused):
        _err(
            f"registration refused: {explain(finished.code, finished.message)}",
        )
        return EXIT_REFUSED
    return _no_answer(config, outcome, "registration")


def _read_token(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the token from {path}: {exc}") from None


def _deregister(config: AgentConfig, args: argparse.Namespace) -> int:
    folder = prepare(config.state_dir)
    with locked(folder):
        core, storage = _open(config, create=False)
        if args.force:
            return _forget(config, core, storage)
        if not core.state.registered:
            raise AgentError(f"{core.udi} is not registered ({core.state.value})")
        config.usable_broker_address()
        outcome = _talk(
            config,
            core,
            storage,
            core.deregister,
            lambda a: isinstance(a, Deregistered | DeregistrationRefused),
        )
    finished = outcome.finished_by
    if isinstance(finished, Deregistered):
        _out(f"deregistered {core.udi}; it is in {core.state.value} now")
        return 0
    if isinstance(finished, DeregistrationRefused):
        _err(
            f"deregistration refused: {explain(finished.code, finished.message)}",
        )
        return EXIT_REFUSED
    return _no_answer(config, outcome, "deregistration")


def _forget(config: AgentConfig, core: AgentCore, storage: Storage) -> int:
    """``deregister --force``: the registration forgotten, saved as a clean stop saves it."""
    hooks = (
        HookRunner(config.hook, udi=str(core.udi), timeout=config.hook_timeout)
        if config.hook
        else None
    )
    now = time.time()
    # A core restored unclean (after a crash, or from the previous copy) has already jumped
    # its numbers ahead. Saved unclean again, the next start would jump them once more and
    # warn of a crash that never happened: the stop marks it clean, in the same single save.
    actions = [*core.forget_registration(now), *core.stop(now)]
    snapshots = [action.snapshot for action in actions if isinstance(action, Persist)]
    storage.save(snapshots[-1])
    _out(f"forgot the registration of {core.udi} locally; the collector was not told")
    # After the save, as in the daemon: the hook may read the new state.
    for change in (action for action in actions if isinstance(action, StateChanged)):
        log.info(
            "state %s -> %s (%s)", change.previous.value, change.state.value, change.event.value
        )
        if hooks is not None:
            hooks.state_changed(change)
    if hooks is not None:
        # The daemon's shutdown gives hooks 5 s; here the hook is all that is left to do,
        # so it gets the time it would have had in a running daemon.
        hooks.finish(timeout=config.hook_timeout)
    return 0


def _run(config: AgentConfig, _args: argparse.Namespace) -> int:
    from smartlic.agent.daemon import Daemon  # noqa: PLC0415 -- keeps `status` light

    if config.broker:
        config.usable_broker_address()
    folder = prepare(config.state_dir)
    with locked(folder):
        core, storage = _open(config, create=True)
        log.info("smartlic-agent for %s starting in %s", core.udi, core.state.value)
        Daemon(config, core, storage, entropy=os.urandom).run()
    log.info("stopped")
    return 0


def _status(config: AgentConfig, args: argparse.Namespace) -> int:
    storage = FileStorage(config.state_dir)
    snapshot = storage.load()
    if storage.warning:
        _err(f"warning: {storage.warning}")
    if snapshot is None:
        raise AgentError(
            f"no agent state in {config.state_dir} yet: run 'smartlic-agent register' or 'run'"
        )
    status = status_of(
        snapshot, now=time.time(), evaluation_period=CoreSettings().evaluation_period
    )
    if args.json:
        import json  # noqa: PLC0415 -- only for --json

        _out(json.dumps(status.as_dict(), indent=2))
    else:
        _out(status.render())
    return 0
