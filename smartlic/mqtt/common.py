"""What both MQTT clients share: messages, errors and backoff."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    import random

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
