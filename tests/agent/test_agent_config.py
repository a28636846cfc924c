"""The agent's configuration refuses every unusable value with a message naming the setting.

An operator reads these messages on a device console; each says which setting is wrong and what
it takes, and none of them is a traceback.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from smartlic.agent.config import AgentConfig, build_config, read_config_file
from smartlic.agent.errors import ConfigError

from setting_values import setting_values


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"key_type": "rsa"}, "key_type must be one of ed25519, p256"),
        ({"mqtt_version": "4"}, "mqtt_version must be 3.1.1 or 5"),
        ({"log_level": "loud"}, "log_level must be one of debug, info, warning, error"),
        ({"usage_interval": 0}, "usage_interval must be a positive number of seconds"),
        ({"reconnect_max": -1}, "reconnect_max must be a positive number of seconds"),
        ({"keepalive": 4}, "keepalive must be 5..65535 seconds"),
        ({"keepalive": 65_536}, "keepalive must be 5..65535 seconds"),
        ({"keepalive": "often"}, "keepalive must be a number, not 'often'"),
        ({"keepalive": True}, "keepalive must be a number"),
        ({"keepalive": 60.5}, "keepalive must be a whole number"),
        ({"keepalive": float("inf")}, "keepalive must be a whole number"),
        ({"usage_interval": float("nan")}, "usage_interval must be a finite number"),
        ({"reconnect_max": "inf"}, "reconnect_max must be a finite number"),
        ({"hook_timeout": [1]}, "hook_timeout must be a number"),
        ({"state_dir": 7}, "state_dir must be a path"),
        ({"broker": 1883}, "broker must be text"),
        ({"topic_prefix": "a/+/b"}, "topic prefix"),
        ({"usage_command": ""}, "usage_command is empty"),
        ({"usage_command": "  "}, "usage_command is empty"),
        ({"usage_command": "'abc"}, "usage_command: No closing quotation"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_an_unusable_value_is_refused_naming_the_setting(
    settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        build_config(settings, {})

    assert message in str(refused.value)


def test_mqtt_version_written_as_a_toml_number_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("mqtt_version = 5\n")

    assert "5" == build_config(read_config_file(path), {}).mqtt_version


def test_a_file_that_is_not_toml_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("broker = \n")

    with pytest.raises(ConfigError, match=r"agent\.toml is not valid TOML"):
        read_config_file(path)


@pytest.mark.parametrize(
    "value", ["9" * 5000, "[" * 3000 + "]" * 3000], ids=["huge-number", "deep-array"]
)
def test_toml_that_python_cannot_hold_is_refused_naming_the_file(
    tmp_path: Path, value: str
) -> None:
    """tomllib raises ValueError past 4300 digits, RecursionError for deep nesting."""
    path = tmp_path / "agent.toml"
    path.write_text(f"keepalive = {value}\n")

    with pytest.raises(ConfigError, match=r"agent\.toml is not valid TOML"):
        read_config_file(path)


def test_a_missing_config_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*nope\.toml: No such file"):
        read_config_file(tmp_path / "nope.toml")


def test_an_unknown_flag_value_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        build_config({}, {"colour": "blue"})


def test_a_broker_url_error_becomes_a_config_error() -> None:
    with pytest.raises(ConfigError, match="scheme must be mqtt:// or mqtts://"):
        AgentConfig(broker="http://broker:80").broker_address()


def test_an_unreadable_password_file_is_refused_naming_it(tmp_path: Path) -> None:
    config = AgentConfig(broker="mqtt://broker:1883", password_file=tmp_path / "missing")

    with pytest.raises(ConfigError, match=r"cannot read .*missing: No such file"):
        config.broker_address()


def test_a_password_file_that_is_not_utf8_is_refused_naming_it(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_bytes(b"s3cr\xe9t\n")
    config = AgentConfig(broker="mqtt://broker:1883", password_file=secret)

    with pytest.raises(ConfigError, match=r"cannot read .*password: not UTF-8 text"):
        config.broker_address()


def test_the_password_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    config = AgentConfig(broker="mqtt://broker:1883", username="dev", password_file=secret)

    address = config.broker_address()

    assert ("dev", "s3cret") == (address.username, address.password)


@pytest.mark.parametrize(
    ("broker", "password_file"),
    [("mqtt://:s3cret@broker:1883", False), ("mqtt://broker:1883", True)],
)
def test_a_password_without_a_user_name_is_refused(
    broker: str,
    password_file: bool,
    tmp_path: Path,
) -> None:
    """paho sends a password only with a user name: the agent connected anonymously."""
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    config = AgentConfig(broker=broker, password_file=secret if password_file else None)

    with pytest.raises(ConfigError, match="a broker password needs a user name"):
        config.broker_address()


def test_tls_files_turn_tls_on() -> None:
    config = AgentConfig(broker="mqtts://broker:8883", tls_ca=Path("/etc/ca.pem"))

    address = config.broker_address()

    assert address.tls is not None
    assert Path("/etc/ca.pem") == address.tls.ca_file


def test_a_client_certificate_without_its_key_is_refused() -> None:
    config = AgentConfig(broker="mqtts://broker", tls_cert=Path("/etc/device.pem"))

    with pytest.raises(ConfigError, match="needs both cert_file and key_file"):
        config.broker_address()


@given(
    st.dictionaries(
        st.sampled_from([f.name for f in dataclasses.fields(AgentConfig)]),
        setting_values,
        min_size=1,
        max_size=3,
    )
)
@example({"keepalive": float("inf")})
@example({"broker": "mqtt://[::1"})
def test_any_values_make_a_usable_config_or_are_refused_naming_the_setting(
    settings: dict[str, Any],
) -> None:
    """What a config file or a flag holds is checked before anything runs: a config that
    builds has finite numbers and a broker address that parses."""
    try:
        config = build_config(settings, {})
        if config.broker is not None:
            config.broker_address()
    except ConfigError:
        return
    numbers = [getattr(config, name) for name in settings if name in _NUMBERS]
    assert all(math.isfinite(n) and n > 0 for n in numbers)


_NUMBERS = {f.name for f in dataclasses.fields(AgentConfig) if f.type in ("int", "float")}
