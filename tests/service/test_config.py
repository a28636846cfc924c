"""The service's configuration: defaults < TOML file < environment < flags."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from smartlic.collector.service.config import ConfigError, ServiceConfig, load_config

from setting_values import setting_values

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "collector.md"


def test_the_example_file_in_deploy_loads() -> None:
    config = load_config(DEPLOY / "collector.toml", env={})

    assert ("collector-1", "collector-1") == (config.client_id, config.broker_address().username)


def test_the_example_file_points_at_the_collectors_listener_of_the_example_broker() -> None:
    """Not the devices' on 8883, which wants a device certificate: a collector pointed there
    never connected."""
    port = load_config(DEPLOY / "collector.toml", env={}).broker_address().port
    broker = (DEPLOY / "mosquitto.conf").read_text()
    listener = broker.split(f"listener {port} ", 1)[1].split("listener ", 1)[0]

    assert "password_file" in listener
    assert "require_certificate" not in listener


def test_every_setting_is_in_the_example_file_and_the_docs() -> None:
    """A setting nobody can find does not exist for operators."""
    example = (DEPLOY / "collector.toml").read_text()
    docs = DOCS.read_text()
    for field in dataclasses.fields(ServiceConfig):
        if field.name not in ("time_scale", "time_origin", "password"):
            assert re.search(rf"^#? ?{field.name} = ", example, re.MULTILINE), field.name
        assert f"`{field.name}`" in docs, field.name


def test_the_environment_beats_the_file_and_flags_beat_both(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text('[collector]\nbatch_size = 10\nclient_id = "from-file"\nclock_skew = 5\n')

    config = load_config(
        file,
        env={"SMARTLIC_BATCH_SIZE": "20", "SMARTLIC_CLIENT_ID": "from-env"},
        overrides={"batch_size": "30"},
    )

    assert (30, "from-env", 5) == (config.batch_size, config.client_id, config.clock_skew)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[collector]\nbatch_size = 'many'\n", "batch_size"),
        ("[collector]\nbatch_size = 0\n", "must be positive"),
        ("[collector]\nmqtt_protocol = '4'\n", "not one of"),
        ("[collector]\nbrokr = 'x'\n", "unknown settings brokr"),
        ("[collector\n", "not valid TOML"),
        ("[collector]\nclient_id = 5\n", "client_id: 5 is not text"),
        ("[collector]\nmqtt_protocol = 5\n", 'write it in quotes: "5"'),
        ("[collector]\nbatch_size = '1_000'\n", "batch_size: '1_000' is not a whole number"),
        ("[collector]\nclock_skew = true\n", "clock_skew: True is not a number"),
        ("[collector]\nreceipt_retention_days = 100000000000\n", "at most 36,600"),
        (f"[collector]\nbatch_size = {'9' * 5000}\n", "not valid TOML"),
    ],
)
def test_a_bad_setting_is_refused_with_its_name(tmp_path: Path, content: str, message: str) -> None:
    file = tmp_path / "c.toml"
    file.write_text(content)

    with pytest.raises(ConfigError, match=message):
        load_config(file, env={})


def test_a_whole_number_in_the_file_is_a_number_of_milliseconds_too(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text("[collector]\nbatch_linger_ms = 5\n")

    assert 5.0 == load_config(file, env={}).batch_linger_ms


def test_text_from_the_environment_becomes_the_settings_type() -> None:
    config = load_config(None, env={"SMARTLIC_BATCH_SIZE": "1000", "SMARTLIC_CLIENT_ID": "5"})

    assert (1000, "5") == (config.batch_size, config.client_id)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml", env={})


def test_the_key_defaults_to_the_database_path_plus_key() -> None:
    assert Path("/srv/c.db.key") == ServiceConfig(db=Path("/srv/c.db")).key_path


@given(
    st.dictionaries(
        st.sampled_from([f.name for f in dataclasses.fields(ServiceConfig)]),
        setting_values,
        min_size=1,
        max_size=3,
    )
)
@example({"crypto_workers": float("inf")})
@example({"time_scale": "nan"})
@example({"batch_size": 2.5})
@example({"broker": ["inf"]})
def test_any_values_make_a_usable_config_or_are_refused_naming_the_setting(
    settings: dict[str, Any],
) -> None:
    """A setting of the wrong TOML type (a list, a date, 2.5 for a count) or a number that
    is not finite is refused, not turned into something nobody wrote, and no other exception
    escapes; what loads has finite numbers and a broker address that parses."""
    try:
        config = load_config(None, env={}, overrides=settings)
        config.broker_address()
    except ConfigError:
        return
    for name in settings:
        value = getattr(config, name)
        assert not isinstance(value, float) or math.isfinite(value), name


def test_a_password_without_a_username_is_refused_for_mqtt_3_1_1() -> None:
    """MQTT 3.1.1 §3.1.2.9: its password flag needs the user name flag; the client refused it
    with a traceback once the service was running."""
    config = load_config(None, env={}, overrides={"password": "s3cret", "mqtt_protocol": "3.1.1"})

    with pytest.raises(ConfigError, match="password needs a username"):
        config.broker_address()


def test_a_password_without_a_username_is_kept_for_mqtt_5() -> None:
    """MQTT 5 §3.1.2.9 allows it, and the service's own client sends it."""
    config = load_config(None, env={}, overrides={"password": "s3cret"})

    assert (None, "s3cret") == (config.broker_address().username, config.broker_address().password)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"share_group": "a/b"}, "setting share_group: share group cannot contain /"),
        ({"share_group": "a+"}, "setting share_group: share group 'a\\+' must be non-empty"),
        ({"topic_prefix": ""}, "setting topic_prefix: topic prefix '' must be non-empty"),
        ({"topic_prefix": "/smartlic"}, "setting topic_prefix: topic prefix '/smartlic' must"),
        ({"client_id": ""}, "setting client_id cannot be empty"),
    ],
)
def test_a_setting_that_makes_no_usable_subscription_or_session_is_refused_at_load(
    settings: dict[str, str], message: str
) -> None:
    """Caught when loading (exit 2), not as an internal error or a broker refusing for ever."""
    with pytest.raises(ConfigError, match=message):
        load_config(None, env={}, overrides=settings)


def test_tls_files_that_cannot_be_loaded_are_refused_naming_the_settings(tmp_path: Path) -> None:
    config = load_config(
        None,
        env={},
        overrides={"broker": "mqtts://broker.example.net", "tls_ca": str(tmp_path / "none.pem")},
    )

    with pytest.raises(ConfigError, match="settings tls_ca, tls_cert, tls_key: TLS settings"):
        config.usable_broker_address()


def test_an_empty_share_group_subscribes_without_sharing() -> None:
    config = load_config(None, env={}, overrides={"share_group": ""})

    assert "smartlic/v1/d/+/up" == config.subscription()
