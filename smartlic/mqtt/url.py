"""Broker addresses: ``mqtt://[user[:password]@]host[:port]`` and ``mqtts://...`` for TLS."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from pathlib import Path

DEFAULT_PORT: Final = 1883
DEFAULT_TLS_PORT: Final = 8883


class BrokerUrlError(ValueError):
    """A broker URL or TLS setting that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise BrokerUrlError("a TLS client certificate needs both cert_file and key_file")

    def context(self) -> ssl.SSLContext:
        """A client context that verifies the broker (against ``ca_file``, else the system's
        CAs) and presents the client certificate when there is one."""
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file and self.key_file:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise BrokerUrlError(f"TLS settings cannot be used: {exc}") from None
        return context


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: TlsSettings | None = None

    @property
    def password_alone(self) -> bool:
        """A password without a user name: MQTT 5 can send it, MQTT 3.1.1 and paho cannot."""
        return self.password is not None and self.username is None

    def credentials_refused(self, *, v5: bool) -> bool:
        """Whether the credentials cannot go in a CONNECT of this MQTT version: MQTT 3.1.1
        §3.1.2.9, the password flag needs the user name flag (MQTT 5 sends a password alone).
        Connecting without the password instead would be anonymous, which nobody asked for."""
        return self.password_alone and not v5

    def __str__(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def parse_broker_url(
    url: str,
    *,
    tls: TlsSettings | None = None,
    username: str | None = None,
    password: str | None = None,
) -> BrokerAddress:
    """Read a broker URL; explicit ``username``/``password`` override those in the URL."""
    if not url.isprintable():
        # Before urlsplit, which drops tabs and line breaks anywhere in a URL (WHATWG URL
        # rules): "mqtt://host:18\n83" would become port 1883 rather than a mistake.
        raise BrokerUrlError(f"broker URL {url!r} holds control codes")
    try:
        # urlsplit checks a bracketed host ("[::1]") and raises ValueError when it is not one.
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        hostname = parts.hostname
    except ValueError as exc:
        raise BrokerUrlError(f"broker URL {url!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise BrokerUrlError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    if not hostname:
        raise BrokerUrlError(f"broker URL {url!r} has no host")
    if not hostname.isprintable() or any(c.isspace() for c in hostname):
        raise BrokerUrlError(f"broker URL {url!r}: the host cannot hold spaces or control codes")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BrokerUrlError(f"broker URL {url!r}: only scheme, user, host and port are allowed")
    secure = parts.scheme in ("mqtts", "ssl") or tls is not None
    try:
        given = parts.port
    except ValueError as exc:
        raise BrokerUrlError(f"broker URL {url!r}: {exc}") from None
    if given == 0:
        raise BrokerUrlError(f"broker URL {url!r}: port 0 is no broker's port")
    port = given if given is not None else (DEFAULT_TLS_PORT if secure else DEFAULT_PORT)
    # An empty user name in the URL ("mqtt://:secret@host") is none: a password alone, which
    # MQTT 5 can send and MQTT 3.1.1 cannot (the clients refuse it there, §3.1.2.9).
    return BrokerAddress(
        host=hostname,
        port=port,
        username=username if username is not None else _unquoted(parts.username) or None,
        password=password if password is not None else _unquoted(parts.password),
        tls=(tls or TlsSettings()) if secure else None,
    )


def _unquoted(value: str | None) -> str | None:
    # An empty password ("user:@host") is a password, sent as such (MQTT 3.1.1 §3.1.3.5 and
    # MQTT 5 §3.1.3.6 allow zero bytes of it); only an absent one is None.
    return unquote(value) if value is not None else None
