"""Named scenarios: a story (what happens) and its parameters, from a TOML file.

``scenarios.toml`` (next to this module) holds the presets; ``--scenarios FILE`` adds or
replaces some, and ``--param KEY=VALUE`` (or ``--devices``, ``--duration``, ...) overrides a
value for one run. A preset is a table::

    [steady]
    story = "steady"                 # one of STORIES
    description = "the fleet reports on its interval"
    devices = 500
    time_scale = 30

Every other key is a field of :class:`Parameters`; an unknown key or a value of the wrong type
is an error that names it. Times are **real** seconds unless the name says virtual
(``report_interval``, ``auth_validity``, ``debounce`` are the agent's and the collector's own
settings, so they are in virtual seconds; ``term_hours`` is virtual hours).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import tomllib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

STORIES: Final = ("steady", "growth", "churn", "storm", "outage", "hostile")
KEEPALIVE_MAX: Final = 65_535
HOSTILE_KINDS: Final = (
    "forged",
    "tampered",
    "replayed",
    "skewed",
    "oversize",
    "wrong_topic",
    "garbage",
    "forged_notice",
)


class ScenarioError(ValueError):
    """A scenario or parameter that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Parameters:
    # the fleet
    devices: int = 500
    rate: float = 1000.0
    """Connections started per real second during the ramp-up."""
    jitter: float = 0.25
    """Real seconds of random delay added to each device's connection."""
    vas: int = 2
    """Virtual accounts the devices are spread over (DEFAULT first)."""
    headroom: float = 1.0
    """Licenses per pool, as a multiple of the most its devices can use."""
    protocol: str = "5"
    window: int = 4
    keepalive: int = 60
    seed: int = 1
    # time
    duration: float = 20.0
    """Real seconds of the scenario's main part (after every device is authorized)."""
    time_scale: float = 1.0
    report_interval: int = 86_400
    """Virtual seconds between reports (the VAs' policy; at least 60)."""
    auth_validity: int = 90 * 86_400
    debounce: float = 5.0
    """Virtual seconds of stable usage before a change is reported."""
    retry_after: float = 5.0
    """Real seconds before a device re-sends an unanswered report (doubling, jittered)."""
    reconnect_max: float = 2.0
    """Longest real wait between a device's reconnection attempts."""
    ready_timeout: float = 60.0
    """Real seconds, beyond the ramp, for every device to be registered and answered."""
    drain: float = 30.0
    """Real seconds allowed at the end for the last answers."""
    intake_limit: int = 0
    """For the run's own collector: messages it buffers before it holds the broker back
    (0: the collector's default)."""
    change_share: float = 0.2
    """Share of the devices whose usage changes in each report interval."""
    # growth
    grow_by: int = 1
    term_hours: float = 12.0
    """Virtual hours of the trial licenses that expire (0: skip that part)."""
    step_timeout: float = 30.0
    """Real seconds each step of a story may take to show its effect."""
    # churn
    churn_every: float = 2.0
    join_share: float = 0.05
    leave_share: float = 0.05
    move_share: float = 0.05
    # storm
    storms: int = 2
    # outage
    outage_at: float = 3.0
    outage_for: float = 3.0
    outage_kill: bool = False
    """SIGKILL the broker instead of stopping it (it loses what it had not saved)."""
    # hostile
    hostile_share: float = 0.1
    hostile_each: int = 1
    """Messages of each kind per hostile device."""
    hostile_kinds: tuple[str, ...] = HOSTILE_KINDS

    def __post_init__(self) -> None:
        self._refuse_negative_and_infinite_numbers()
        positive = (
            "devices",
            "rate",
            "time_scale",
            "retry_after",
            "reconnect_max",
            "keepalive",
            "churn_every",
            "storms",
            "hostile_each",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ScenarioError(f"{name} must be positive, not {getattr(self, name)}")
        if self.keepalive > KEEPALIVE_MAX:
            # MQTT's Keep Alive is two bytes (MQTT 3.1.1 §3.1.2.10): paho would fail each
            # device's connect with a struct.error, and the run wait for nothing.
            raise ScenarioError(f"keepalive must be at most {KEEPALIVE_MAX}, not {self.keepalive}")
        if self.protocol not in ("5", "3.1.1"):
            raise ScenarioError(f"protocol must be 5 or 3.1.1, not {self.protocol!r}")
        if self.report_interval < 60 or self.auth_validity <= self.report_interval:
            raise ScenarioError(
                "report_interval must be at least 60 and auth_validity longer than it"
            )
        if self.vas < 1 or self.window < 1 or self.headroom <= 0:
            raise ScenarioError("vas and window must be at least 1, headroom positive")
        for share in ("change_share", "join_share", "leave_share", "move_share", "hostile_share"):
            if not 0 <= getattr(self, share) <= 1:
                raise ScenarioError(f"{share} must be between 0 and 1")
        self._refuse_unknown_hostile_kinds()

    def _refuse_unknown_hostile_kinds(self) -> None:
        if not self.hostile_kinds:
            raise ScenarioError(f"hostile_kinds must name at least one of {HOSTILE_KINDS}")
        unknown = set(self.hostile_kinds) - set(HOSTILE_KINDS)
        if unknown:
            raise ScenarioError(f"unknown hostile kinds {sorted(unknown)}; known: {HOSTILE_KINDS}")

    def _refuse_negative_and_infinite_numbers(self) -> None:
        # Counts and seconds: a negative one, inf or nan would make a story wait for nothing
        # or for ever. Only the seed may be any integer.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", "float") and f.name != "seed" and not 0 <= value < math.inf:
                raise ScenarioError(f"{f.name} must be a finite number, at least 0, not {value}")

    def replace(self, values: Mapping[str, object]) -> Parameters:
        """A copy with ``values`` (text from the command line, or TOML values) converted."""
        converted = {name: convert(name, value) for name, value in values.items()}
        return dataclasses.replace(self, **converted)

    def as_dict(self) -> dict[str, object]:
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }


_FIELDS: Final = {f.name: f for f in dataclasses.fields(Parameters)}


def _boolean(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(text)
    return text in ("true", "1", "yes")


def _integer(value: object) -> int:
    if isinstance(value, str):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(value)


def _number(value: object) -> float:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(value)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _names(value: object) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError(value)
    return tuple(i.strip() for i in items if i.strip())


_CONVERTERS: Final[Mapping[str, Callable[[object], object]]] = {
    "bool": _boolean,
    "int": _integer,
    "float": _number,
    "str": _text,
    "tuple[str, ...]": _names,
}


def convert(name: str, value: object) -> Any:  # noqa: ANN401 -- the parameter's own type
    """``value`` as the type of parameter ``name`` (text is parsed)."""
    if name not in _FIELDS:
        raise ScenarioError(f"unknown parameter {name!r}; known: {', '.join(sorted(_FIELDS))}")
    kind = str(_FIELDS[name].type)
    try:
        return _CONVERTERS[kind](value)
    except (TypeError, ValueError):
        raise ScenarioError(f"parameter {name}: {value!r} is not a valid {kind}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    story: str
    description: str
    parameters: Parameters

    def with_values(self, values: Mapping[str, object]) -> Scenario:
        return dataclasses.replace(self, parameters=self.parameters.replace(values))


def parse_scenarios(text: str, *, where: str = "scenarios") -> dict[str, Scenario]:
    """Read presets from TOML text; each table is one scenario."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{where} is not valid TOML: {exc}") from None
    found: dict[str, Scenario] = {}
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ScenarioError(f"{where}: [{name}] must be a table")
        values = dict(table)
        story = values.pop("story", name)
        description = values.pop("description", "")
        if story not in STORIES:
            raise ScenarioError(f"{where}: [{name}] story {story!r} is not one of {STORIES}")
        if not isinstance(description, str):
            raise ScenarioError(f"{where}: [{name}] description must be text")
        try:
            parameters = Parameters().replace(values)
        except ScenarioError as exc:
            raise ScenarioError(f"{where}: [{name}] {exc}") from None
        found[name] = Scenario(
            name=name, story=str(story), description=description, parameters=parameters
        )
    return found


def load_scenarios(extra: Path | None = None) -> dict[str, Scenario]:
    """The packaged presets, plus (and overridden by) those of ``extra``."""
    packaged = importlib.resources.files(__package__).joinpath("scenarios.toml")
    scenarios = parse_scenarios(packaged.read_text(encoding="utf-8"), where="scenarios.toml")
    if extra is not None:
        try:
            text = extra.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"cannot read {extra}: {exc.strerror}") from None
        scenarios.update(parse_scenarios(text, where=str(extra)))
    return scenarios


def parse_assignment(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` from ``--param``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(f"--param wants KEY=VALUE, not {text!r}")
    return key.strip().replace("-", "_"), value.strip()


__all__ = [
    "HOSTILE_KINDS",
    "STORIES",
    "Parameters",
    "Scenario",
    "ScenarioError",
    "convert",
    "load_scenarios",
    "parse_assignment",
    "parse_scenarios",
]
