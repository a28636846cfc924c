"""One virtual device: the agent's own core, a real MQTT connection, and what it sent.

The core (:class:`~smartlic.agent.AgentCore`) is the very one the daemon runs: the simulator
only feeds it inputs and carries out its actions (``fleet.py``). Beside it the device keeps the
facts the run's checks need (``checks.py``): every report it sent (a digest of the bytes and
the counts), which were answered, which were abandoned at deregistration.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import cbor2

from smartlic.agent import AgentCore, MemoryStorage

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Mapping

    from smartlic.agent import CoreSettings
    from smartlic.agent.actions import Publish
    from smartlic.agent.retry import Entropy
    from smartlic.mqtt.aio import AsyncMqttClient
    from smartlic.protocol import SigningKey, Udi


def digest64(message: bytes) -> int:
    """The first 8 bytes of the SHA-256 the collector keeps for an accepted report: of the
    COSE_Sign1's payload (``decisions.report_digest``), not of the whole message."""
    envelope = cbor2.loads(message)
    payload = envelope.value[2] if isinstance(envelope, cbor2.CBORTag) else envelope[2]
    return int.from_bytes(hashlib.sha256(payload).digest()[:8], "big")


def nonzero(counts: Mapping[str, int]) -> dict[str, int]:
    return {tag: n for tag, n in counts.items() if n > 0}


class VirtualDevice:
    """A device of the fleet. ``va`` is where the simulator put it (registration, moves)."""

    __slots__ = (
        "abandoned",
        "answered",
        "change_seq",
        "client",
        "connected",
        "core",
        "device_id",
        "first_connected",
        "hostile",
        "index",
        "key",
        "last_queued",
        "max_answered",
        "mids",
        "queued",
        "sent",
        "storage",
        "task",
        "timer",
        "token",
        "udi",
        "usage",
        "va",
        "wants_registration",
    )

    def __init__(
        self,
        *,
        index: int,
        udi: Udi,
        key: SigningKey,
        entropy: Entropy,
        settings: CoreSettings,
        va: str,
        token: str | None,
        usage: Mapping[str, int],
    ) -> None:
        self.index = index
        self.udi = udi
        self.device_id = udi.device_id
        self.key = key
        self.core = AgentCore.new(udi, key=key, entropy=entropy, settings=settings)
        self.storage = MemoryStorage()
        self.va = va
        self.token = token
        self.wants_registration = token is not None
        self.usage: dict[str, int] = dict(usage)
        self.hostile = False
        self.client: AsyncMqttClient | None = None
        self.task: asyncio.Task[None] | None = None
        self.connected = False
        self.first_connected: float | None = None
        self.timer: float | None = None
        self.mids: dict[int, Publish] = {}
        self.queued: dict[int, Mapping[str, int]] = {}
        """Counts of reports queued and not sent yet."""
        self.last_queued: dict[str, int] = {}
        """Non-zero counts of the newest report queued (what the device last stated)."""
        self.sent: dict[int, tuple[int, Mapping[str, int]]] = {}
        """seq -> (digest64 of the bytes, counts) for every report handed to MQTT."""
        self.answered: set[int] = set()
        """Reports answered with an authorization or an out-of-compliance notice."""
        self.max_answered = 0
        """The newest report answered at all (an error notice included)."""
        self.abandoned: set[int] = set()
        self.change_seq: int | None = None
        """The first report stating the device's latest usage (``None``: to be queued)."""

    @property
    def registered(self) -> bool:
        return self.core.state.registered

    def quiet(self) -> bool:
        """Nothing waiting: no report unanswered, no request pending, no change unreported."""
        core = self.core
        if core.outbox_depth or core.pending is not None:
            return False
        return not core.state.registered or nonzero(self.usage) == self.last_queued

    def settled(self) -> bool:
        """The collector has answered the report stating the device's current usage."""
        core = self.core
        if core.pending is not None:
            return False
        if not core.state.registered:
            return True
        return (
            nonzero(self.usage) == self.last_queued
            and self.change_seq is not None
            and self.max_answered >= self.change_seq
        )
