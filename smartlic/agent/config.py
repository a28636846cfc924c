"""The agent's configuration: a TOML file whose every key is also a command-line flag.

Precedence: flag > file > default. Keys are written with underscores in the file
(``state_dir = "/var/lib/smartlic-agent"``) and with dashes as flags (``--state-dir``); dashes
are accepted in the file too. An unknown key is an error, so a typo cannot be silently ignored.
"""

from __future__ import annotations

import math
import shlex
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from smartlic.agent.errors import ConfigError
from smartlic.agent.settings import CoreSettings
from smartlic.mqtt.url import BrokerAddress, BrokerUrlError, TlsSettings, parse_broker_url
from smartlic.protocol import KeyType, ProtocolError, Topics, Udi

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_STATE_DIR: Final = "/var/lib/smartlic-agent"
KEY_TYPES: Final = {"ed25519": KeyType.ED25519, "p256": KeyType.P256}
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    state_dir: Path = Path(DEFAULT_STATE_DIR)
    broker: str | None = None
    """``mqtt://host:port`` or ``mqtts://...``; user and password may be in the URL."""
    udi: str | None = None
    """``PRODUCT_ID:SERIAL``; needed the first time, then remembered in the state."""
    usage_file: Path | None = None
    usage_command: str | None = None
    usage_interval: float = 60.0
    """Seconds between runs of ``usage_command``; a usage file is checked every 2 s, or this
    often if shorter (a stat; it is re-read only when it changed)."""
    key_type: str = "ed25519"
    report_debounce: float = 5.0
    """Seconds of stable usage before a change is reported (at most a minute after it)."""
    checkpoint_interval: float = 600.0
    """Save the use clock at least this often (flash wear vs. evaluation time lost in a crash)."""
    hook: str | None = None
    hook_timeout: float = 30.0
    topic_prefix: str = Topics().prefix
    username: str | None = None
    password_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    mqtt_version: str = "3.1.1"
    keepalive: int = 60
    register_timeout: float = 30.0
    reconnect_max: float = 300.0
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.usage_file is not None and self.usage_command is not None:
            raise ConfigError("give usage_file or usage_command, not both")
        _check_command("usage_command", self.usage_command)
        if self.key_type not in KEY_TYPES:
            raise ConfigError(f"key_type must be one of {', '.join(KEY_TYPES)}")
        if self.mqtt_version not in ("3.1.1", "5"):
            raise ConfigError("mqtt_version must be 3.1.1 or 5")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        for name in (
            "usage_interval",
            "report_debounce",
            "checkpoint_interval",
            "hook_timeout",
            "register_timeout",
            "reconnect_max",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds")
        if not 5 <= self.keepalive <= 65_535:
            raise ConfigError("keepalive must be 5..65535 seconds")
        try:
            Topics(prefix=self.topic_prefix)
            if self.udi is not None:
                Udi.parse(self.udi)
        except ProtocolError as exc:
            raise ConfigError(exc.message) from None

    @property
    def key_kind(self) -> KeyType:
        return KEY_TYPES[self.key_type]

    @property
    def topics(self) -> Topics:
        return Topics(prefix=self.topic_prefix)

    def core_settings(self) -> CoreSettings:
        return CoreSettings(
            topics=self.topics,
            debounce=self.report_debounce,
            debounce_max=max(60.0, self.report_debounce),
            checkpoint_interval=self.checkpoint_interval,
        )

    def broker_address(self) -> BrokerAddress:
        """Where the broker is, with credentials and TLS settings; a clear error if unusable."""
        if not self.broker:
            raise ConfigError(
                "no broker: give --broker mqtt://HOST:PORT (or broker = ... in the config)"
            )
        password = None
        if self.password_file is not None:
            try:
                password = self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read {self.password_file}: {exc.strerror}") from None
            except UnicodeDecodeError:
                # Not the decoder's own message: it quotes a byte of the password.
                raise ConfigError(f"cannot read {self.password_file}: not UTF-8 text") from None
        try:
            tls = None
            if self.tls_ca or self.tls_cert or self.tls_key:
                tls = TlsSettings(
                    ca_file=self.tls_ca, cert_file=self.tls_cert, key_file=self.tls_key
                )
            address = parse_broker_url(
                self.broker, tls=tls, username=self.username, password=password
            )
        except BrokerUrlError as exc:
            raise ConfigError(str(exc)) from None
        if address.password_alone:
            # paho sends a password only with a user name (and MQTT 3.1.1 §3.1.2.9 allows no
            # other): the agent would connect anonymously, which nobody asked for.
            raise ConfigError(
                "a broker password needs a user name: give --username (or username = ...)"
            )
        return address

    def usable_broker_address(self) -> BrokerAddress:
        """:meth:`broker_address`, its TLS files loaded: one that cannot be read is bad
        configuration, found before the state is touched, not a traceback once the client
        is built."""
        address = self.broker_address()
        if address.tls is not None:
            try:
                address.tls.context()
            except BrokerUrlError as exc:
                raise ConfigError(str(exc)) from None
        return address

    def parsed_udi(self) -> Udi | None:
        return None if self.udi is None else Udi.parse(self.udi)


def _check_command(key: str, command: str | None) -> None:
    # Split as the daemon will split it, so a command it cannot run is refused as bad
    # configuration (exit 2) before anything starts, not when the usage source is opened.
    if command is None:
        return
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if not argv:
        raise ConfigError(f"{key} is empty")


_TYPES: Final[dict[str, type]] = {
    "state_dir": Path,
    "usage_file": Path,
    "password_file": Path,
    "tls_ca": Path,
    "tls_cert": Path,
    "tls_key": Path,
    "usage_interval": float,
    "report_debounce": float,
    "checkpoint_interval": float,
    "hook_timeout": float,
    "register_timeout": float,
    "reconnect_max": float,
    "keepalive": int,
}
KEYS: Final = tuple(f.name for f in fields(AgentConfig))


def _coerce(key: str, value: Any) -> Any:  # noqa: ANN401 -- TOML and argparse values vary
    kind = _TYPES.get(key, str)
    if kind is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{key} must be a path")
        return Path(value).expanduser()
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(f"{key} must be a number")
        if kind is int and isinstance(value, float):
            raise ConfigError(f"{key} must be a whole number, not {value!r}")
        try:
            number = kind(value)
        except ValueError:
            raise ConfigError(f"{key} must be a number, not {value!r}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{key} must be a finite number, not {value!r}")
        return number
    if key == "mqtt_version" and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be text")
    return value


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML file, keys normalised to underscores."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    # tomllib lets two more through as they are: ValueError for an integer past CPython's
    # 4300-digit limit, RecursionError for arrays nested a few thousand deep.
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for raw_key, value in document.items():
        key = raw_key.replace("-", "_")
        if key not in KEYS:
            raise ConfigError(f"{path}: unknown setting {raw_key!r} (known: {', '.join(KEYS)})")
        values[key] = value
    return values


def build_config(file_values: Mapping[str, Any], flags: Mapping[str, Any]) -> AgentConfig:
    """Flags over file over defaults; ``None`` flags mean "not given"."""
    merged = dict(file_values)
    merged.update({k: v for k, v in flags.items() if v is not None})
    for key in merged:
        if key not in KEYS:
            raise ConfigError(f"unknown setting {key!r}")
    return AgentConfig(**{key: _coerce(key, value) for key, value in merged.items()})
