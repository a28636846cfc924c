"""Configuration of the collector service: defaults < TOML file < environment < flags.

Every setting has one name, used as the TOML key (in the ``[collector]`` table), the
environment variable (``SMARTLIC_`` + upper case) and the flag (``--`` + dashes). See
``docs/collector.md`` for the table and ``deploy/collector.toml`` for an example file.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from smartlic.mqtt.url import BrokerAddress, BrokerUrlError, TlsSettings, parse_broker_url
from smartlic.protocol.errors import LocalProtocolError
from smartlic.protocol.fields import TIME_MAX
from smartlic.protocol.topics import DEFAULT_PREFIX, DEFAULT_SHARE_GROUP, Topics

if TYPE_CHECKING:
    from collections.abc import Mapping

ENV_PREFIX: Final = "SMARTLIC_"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it and says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    db: Path = Path("smartlic.db")
    key: Path | None = None
    """The collector's signing key; default: the database path + ``.key``."""
    broker: str = "mqtt://127.0.0.1:1883"
    mqtt_protocol: Literal["5", "3.1.1"] = "5"
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_id: str = "smartlic-collector"
    share_group: str = DEFAULT_SHARE_GROUP
    topic_prefix: str = DEFAULT_PREFIX
    clock_skew: int = 300
    """Seconds a report's issue time may differ from the collector's clock."""
    batch_size: int = 500
    batch_linger_ms: float = 5.0
    """How long to wait for more messages before processing a partial batch."""
    intake_limit: int = 5000
    """Messages buffered before the service stops reading from the broker (back-pressure)."""
    crypto_workers: int = 2
    """Processes verifying and signing; 0 does it on the event loop (one core, least CPU)."""
    change_poll_ms: float = 200.0
    receipt_retention_days: int = 30
    """How long the answer to an accepted report is kept for answering duplicates."""
    time_scale: float = 1.0
    """For simulations only: run the clock this many times faster than real time."""
    time_origin: int = 0
    """For simulations only: the virtual time at start (0: the real time)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @property
    def key_path(self) -> Path:
        return self.key if self.key is not None else self.db.with_name(self.db.name + ".key")

    def broker_address(self) -> BrokerAddress:
        tls = None
        if self.tls_ca or self.tls_cert or self.tls_key:
            try:
                tls = TlsSettings(
                    ca_file=self.tls_ca, cert_file=self.tls_cert, key_file=self.tls_key
                )
            except BrokerUrlError as exc:
                raise ConfigError(f"settings tls_ca, tls_cert, tls_key: {exc}") from None
        try:
            address = parse_broker_url(
                self.broker, tls=tls, username=self.username, password=self.password
            )
        except BrokerUrlError as exc:
            raise ConfigError(str(exc)) from None
        if address.credentials_refused(v5=self.mqtt_protocol == "5"):
            raise ConfigError("with mqtt_protocol 3.1.1 a broker password needs a username")
        return address

    def usable_broker_address(self) -> BrokerAddress:
        """:meth:`broker_address`, its TLS files loaded: one that cannot be read is bad
        configuration, found before the service starts, not a traceback once the client
        connects."""
        address = self.broker_address()
        if address.tls is not None:
            try:
                address.tls.context()
            except BrokerUrlError as exc:
                raise ConfigError(f"settings tls_ca, tls_cert, tls_key: {exc}") from None
        return address

    def subscription(self) -> str:
        """The uplink filter the service subscribes to: shared unless ``share_group`` is ''."""
        topics = Topics(prefix=self.topic_prefix)
        group = self.share_group
        return topics.shared_uplink_filter(group) if group else topics.uplink_filter


def _check(config: ServiceConfig) -> ServiceConfig:
    """Refuse settings the broker or the topics would refuse only once the service runs."""
    try:
        Topics(prefix=config.topic_prefix)
    except LocalProtocolError as exc:
        raise ConfigError(f"setting topic_prefix: {exc.message}") from None
    try:
        config.subscription()
    except LocalProtocolError as exc:
        raise ConfigError(f"setting share_group: {exc.message}") from None
    if not config.client_id:
        # An MQTT 3.1.1 broker refuses an empty client id with a persistent session (§3.1.3.1),
        # at every reconnection; an MQTT 5 one would make up a new id each time, losing the
        # session that holds what arrived while the service was down.
        raise ConfigError("setting client_id cannot be empty")
    return config


_FIELDS: Final = {f.name: f for f in dataclasses.fields(ServiceConfig)}
_CHOICES: Final[Mapping[str, tuple[str, ...]]] = {
    "mqtt_protocol": ("5", "3.1.1"),
    "log_level": ("debug", "info", "warning", "error"),
    "log_format": ("auto", "json", "console"),
}
RECEIPT_RETENTION_MAX_DAYS: Final = 100 * 366
_AT_MOST: Final[Mapping[str, int]] = {
    # Beyond these a setting is a typo, and some would overflow SQLite's integers (a cutoff
    # of receipt_retention_days) or the protocol's timestamps (clock_skew, time_origin).
    "clock_skew": 366 * 86_400,
    "batch_size": 100_000,
    "intake_limit": 10_000_000,
    "crypto_workers": 256,
    "receipt_retention_days": RECEIPT_RETENTION_MAX_DAYS,
    "time_origin": TIME_MAX,
}
_POSITIVE: Final = frozenset(
    {
        "batch_size",
        "intake_limit",
        "batch_linger_ms",
        "change_poll_ms",
        "receipt_retention_days",
        "time_scale",
    }
)


def load_config(
    file: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServiceConfig:
    """Merge the layers; every value is checked and converted to its field's type."""
    values: dict[str, Any] = {}
    if file is not None:
        values.update({n: _convert(n, v, text=False) for n, v in _from_toml(file).items()})
    environment = os.environ if env is None else env
    values.update(
        {
            name: _convert(name, environment[ENV_PREFIX + name.upper()], text=True)
            for name in _FIELDS
            if ENV_PREFIX + name.upper() in environment
        }
    )
    values.update(
        {k: _convert(k, v, text=True) for k, v in (overrides or {}).items() if v is not None}
    )
    return _check(ServiceConfig(**values))


def _from_toml(file: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {file} is not UTF-8 text") from None
    # tomllib lets two more through as they are: ValueError for an integer past CPython's
    # 4300-digit limit, RecursionError for arrays nested a few thousand deep.
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
    table = data.get("collector", data)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {file}: [collector] must be a table")
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"config file {file}: unknown settings {', '.join(unknown)}")
    return table


def _convert(name: str, value: Any, *, text: bool) -> Any:  # noqa: ANN401 -- values come from TOML, env or flags
    if name not in _FIELDS:
        raise ConfigError(f"unknown setting {name!r}")
    converted = _typed(name, value) if text else _toml_typed(name, value)
    if name in _CHOICES and converted not in _CHOICES[name]:
        raise ConfigError(f"setting {name}: {value!r} is not one of {', '.join(_CHOICES[name])}")
    if name in _POSITIVE and converted <= 0:
        raise ConfigError(f"setting {name} must be positive, not {value!r}")
    if name in ("clock_skew", "crypto_workers") and converted < 0:
        raise ConfigError(f"setting {name} cannot be negative")
    if name in _AT_MOST and converted > _AT_MOST[name]:
        raise ConfigError(f"setting {name} is at most {_AT_MOST[name]:,}, not {value!r}")
    return converted


def _toml_typed(name: str, value: Any) -> Any:  # noqa: ANN401 -- values come from TOML
    """``value`` from the TOML file, which has types of its own: one of another type than the
    setting's (a list, a date, ``5`` for text, ``"1_000"`` for a count) is refused rather than
    turned into something nobody wrote. A whole number is a number of seconds too."""
    default = _FIELDS[name].default
    if isinstance(default, int | float) and isinstance(value, bool):
        raise ConfigError(f"setting {name}: {value!r} is not a number")
    if isinstance(default, float) and isinstance(value, int | float):
        return _finite(name, value)
    if isinstance(default, int) and isinstance(value, int):
        return value
    if isinstance(default, int | float):
        kind = "whole number" if isinstance(default, int) else "number"
        raise ConfigError(f"setting {name}: {value!r} is not a {kind} (write it without quotes)")
    if not isinstance(value, str):
        hint = f' (write it in quotes: "{value}")' if isinstance(value, int | float) else ""
        raise ConfigError(f"setting {name}: {value!r} is not text{hint}")
    return _typed(name, value)


def _typed(name: str, value: Any) -> Any:  # noqa: ANN401 -- values come from env or flags
    """``value`` as the setting's type: the environment and flags give text (tests may give
    the type itself)."""
    default = _FIELDS[name].default
    kind = str(_FIELDS[name].type)
    if "Path" in kind:
        if not isinstance(value, str | os.PathLike):
            raise ConfigError(f"setting {name}: {value!r} is not a path")
        return Path(value).expanduser()
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"setting {name}: {value!r} is not a valid {kind}")
    if isinstance(default, int):
        return _whole(name, value)
    if isinstance(default, float):
        return _finite(name, value)
    if isinstance(value, float):
        raise ConfigError(f"setting {name}: {value!r} is not text")
    return str(value)


def _whole(name: str, value: str | float) -> int:
    whole = None if isinstance(value, float) else _int_or_none(value)
    if whole is None:
        raise ConfigError(f"setting {name}: {value!r} is not a whole number")
    return whole


def _int_or_none(value: str | int) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _finite(name: str, value: str | float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"setting {name}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"setting {name}: {value!r} is not a finite number")
    return number
