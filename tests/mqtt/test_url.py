"""Broker URLs as the agent, the collector and the simulator read them from flags and files."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smartlic.mqtt.url import BrokerAddress, BrokerUrlError, TlsSettings, parse_broker_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker", ("broker", 1883, False)),
        ("mqtts://broker", ("broker", 8883, True)),
        ("broker", ("broker", 1883, False)),
        ("broker:1884", ("broker", 1884, False)),
        ("tcp://10.0.0.1:1999", ("10.0.0.1", 1999, False)),
        ("ssl://broker", ("broker", 8883, True)),
        ("mqtt://[::1]:1883/", ("::1", 1883, False)),
    ],
)
def test_scheme_host_and_default_port(url: str, expected: tuple[str, int, bool]) -> None:
    address = parse_broker_url(url)

    assert expected == (address.host, address.port, address.tls is not None)


def test_tls_settings_turn_a_plain_url_into_tls_on_its_default_port() -> None:
    tls = TlsSettings(ca_file=Path("/etc/ca.pem"))

    address = parse_broker_url("mqtt://broker", tls=tls)

    assert (8883, tls) == (address.port, address.tls)


def test_credentials_in_the_url_are_percent_decoded() -> None:
    address = parse_broker_url("mqtt://dev%40site:p%3Ass@broker")

    assert ("dev@site", "p:ss") == (address.username, address.password)


def test_an_empty_password_in_the_url_is_an_empty_password_not_none() -> None:
    """``user:@host`` sends a zero-length password (MQTT 5 §3.1.3.6), which a broker may
    tell apart from none: only ``user@host`` has none."""
    addresses = parse_broker_url("mqtt://dev:@broker"), parse_broker_url("mqtt://dev@broker")

    assert ["", None] == [address.password for address in addresses]


def test_a_password_without_a_user_name_is_kept_as_a_password_alone() -> None:
    address = parse_broker_url("mqtt://:s3cret@broker")

    assert (None, "s3cret") == (address.username, address.password)


def test_explicit_credentials_override_the_urls() -> None:
    address = parse_broker_url(
        "mqtt://a:b@broker",
        username="c",
        password="d",  # noqa: S106 -- a test value, not a credential
    )

    assert ("c", "d") == (address.username, address.password)


def test_the_password_is_never_shown() -> None:
    address = BrokerAddress(
        host="broker",
        port=8883,
        username="dev",
        password="s3cret",  # noqa: S106 -- a test value, not a credential
    )

    assert "mqtt://dev@broker:8883" == str(address)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://broker", "scheme must be mqtt:// or mqtts://"),
        ("mqtt://", "has no host"),
        ("mqtt://broker/topic", "only scheme, user, host and port are allowed"),
        ("mqtt://broker?x=1", "only scheme, user, host and port are allowed"),
        ("mqtt://broker:99999", "out of range"),
        ("mqtt://broker:port", "mqtt://broker:port"),
        ("mqtt://[::1", "Invalid IPv6 URL"),
        ("mqtt://[broker]:1883", "does not appear to be an IPv4 or IPv6 address"),
        ("mqtt://bro ker:1883", "cannot hold spaces"),
        ("mqtt://broker:0", "port 0 is no broker's port"),
        ("mqtt://bro\tker:1883", "holds control codes"),
        ("mqtt://broker:18\n83", "holds control codes"),
    ],
)
def test_an_unusable_url_is_refused_saying_why(url: str, message: str) -> None:
    with pytest.raises(BrokerUrlError, match=message):
        parse_broker_url(url)


@given(st.text(max_size=40) | st.text(alphabet="mqtsl:/@[]%.:0123456789abf ", max_size=30))
def test_any_text_is_a_broker_address_or_refused_saying_why(url: str) -> None:
    """A flag or a config file may hold anything; what is not a broker is a BrokerUrlError."""
    with contextlib.suppress(BrokerUrlError):
        address = parse_broker_url(url)
        assert 0 < address.port <= 65_535


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(BrokerUrlError, match="needs both cert_file and key_file"):
        TlsSettings(cert_file=Path("/etc/device.pem"))


def test_a_missing_ca_file_is_refused_when_the_context_is_built(tmp_path: Path) -> None:
    tls = TlsSettings(ca_file=tmp_path / "missing-ca.pem")

    with pytest.raises(BrokerUrlError, match="TLS settings cannot be used"):
        tls.context()
