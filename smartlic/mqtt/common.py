"""What both MQTT clients share: messages, errors, backoff, and staying connected."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

ProtocolName = Literal["5", "3.1.1"]
SESSION_EXPIRY_NEVER: Final = 0xFFFFFFFF


class MqttError(Exception):
    """The connection failed or was refused; the message says why."""


@dataclass(frozen=True, slots=True)
class MqttMessage:
    topic: str
    payload: bytes
    qos: int
    mid: int
    retain: bool
    duplicate: bool
    generation: int = 0
    """Which connection it came on: a packet id only means this message on that connection."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
    Jitter"): a random wait in ``[0, min(cap, base * 2**attempt)]``, never below ``floor``."""

    base: float = 0.5
    cap: float = 30.0
    floor: float = 0.1

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 30)))
        return max(self.floor, rng.uniform(0, ceiling))


class Session(Protocol):
    """A client :func:`stay_connected` can drive."""

    @property
    def closing(self) -> bool:
        """True once :meth:`disconnect` was called: do not connect again."""
        ...  # pragma: no cover -- a protocol

    async def connect(self) -> bool: ...  # pragma: no cover -- a protocol

    async def wait_lost(self) -> None:
        """Until the current connection is gone."""
        ...  # pragma: no cover -- a protocol


async def stay_connected(
    session: Session,
    *,
    backoff: Backoff | None = None,
    rng: random.Random | None = None,
    on_error: Callable[[MqttError, float], None] | None = None,
) -> None:
    """Connect, and connect again with backoff whenever the connection is lost or refused,
    until the session is closed."""
    backoff = backoff or Backoff()
    rng = rng or random.Random()  # noqa: S311 -- jitter, not cryptography
    attempt = 0
    while not session.closing:
        try:
            await session.connect()
        except MqttError as exc:
            delay = backoff.delay(attempt, rng)
            attempt += 1
            if on_error is not None:
                on_error(exc, delay)
            await asyncio.sleep(delay)
            continue
        attempt = 0
        await session.wait_lost()
