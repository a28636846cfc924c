"""Helpers shared by the agent's unit tests: a device, a core, and a harness to a script."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from scripted_collector import CollectorScript
from smartlic.agent.actions import Action, Persist, Publish
from smartlic.agent.core import AgentCore, CoreSettings
from smartlic.agent.storage import MemoryStorage
from smartlic.protocol import KeyType, SigningKey, Udi

if TYPE_CHECKING:
    from smartlic.agent.snapshot import Snapshot

T0 = 1_750_000_000.0
UDI = Udi.parse("ISR4331/K9:FOC1234X")
DEVICE_SEED = bytes(range(100, 132))
MAX_ACTIONS_PER_RUN = 10_000


def device_key(seed: bytes = DEVICE_SEED) -> SigningKey:
    return SigningKey.from_seed(KeyType.ED25519, seed)


def entropy(seed: int = 1) -> Any:
    return random.Random(seed).randbytes  # noqa: S311 -- reproducible, not secret


def new_core(settings: CoreSettings | None = None, udi: Udi = UDI) -> AgentCore:
    return AgentCore.new(udi, key=device_key(), entropy=entropy(), settings=settings)


def restore(snapshot: Snapshot, settings: CoreSettings | None = None) -> AgentCore:
    return AgentCore.restore(snapshot, key=device_key(), entropy=entropy(2), settings=settings)


def of_type(actions: list[Action], kind: type[Any]) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


@dataclass
class Harness:
    """Runs a core against a :class:`CollectorScript` without a broker.

    Every Publish is acknowledged at once (PUBACK) and, while ``collector_up``, handed to the
    script, whose answers go straight back into the core. Everything the core returned is in
    ``actions``; the last persisted snapshot is in ``storage``.
    """

    core: AgentCore
    script: CollectorScript = field(default_factory=CollectorScript)
    storage: MemoryStorage = field(default_factory=lambda: MemoryStorage(encode=True))
    collector_up: bool = True
    actions: list[Action] = field(default_factory=list)
    sent: list[Publish] = field(default_factory=list)
    held: list[tuple[str, bytes]] = field(default_factory=list)
    """Answers the collector produced while ``deliver`` was off."""
    deliver: bool = True
    ack: bool = True
    """Report each PUBACK to the core (a transport with its own window need not)."""

    def run(self, actions: list[Action], now: float) -> list[Action]:
        """Carry out ``actions`` (and everything they lead to); return all of them."""
        done: list[Action] = []
        queue = list(actions)
        while queue:
            action = queue.pop(0)
            done.append(action)
            # A core and a script that answer each other for ever would hang the test.
            assert len(done) <= MAX_ACTIONS_PER_RUN, "the core and the script never settle"
            if isinstance(action, Persist):
                self.storage.save(action.snapshot)
            elif isinstance(action, Publish):
                self.sent.append(action)
                answers = (
                    self.script.handle(action.topic, action.payload, now)
                    if self.collector_up
                    else []
                )
                if self.ack:
                    queue += self.core.publish_acked(action, now)
                if self.deliver:
                    for topic, payload in answers:
                        queue += self.core.received(topic, payload, now)
                else:
                    self.held += answers
        self.actions += done
        return done

    def release(self, now: float) -> list[Action]:
        out: list[Action] = []
        held, self.held = self.held, []
        for topic, payload in held:
            out += self.run(self.core.received(topic, payload, now), now)
        return out

    def start(self, now: float = T0) -> list[Action]:
        return self.run(self.core.start(now) + self.core.connected(now), now)

    def register(self, now: float = T0) -> list[Action]:
        return self.run(self.core.register(self.script.token(), now), now)

    def usage(self, counts: dict[str, int], now: float) -> list[Action]:
        return self.run(self.core.usage_changed(counts, now), now)

    def tick(self, now: float) -> list[Action]:
        return self.run(self.core.tick(now), now)

    def receive(self, topic_and_payload: tuple[str, bytes], now: float) -> list[Action]:
        topic, payload = topic_and_payload
        return self.run(self.core.received(topic, payload, now), now)
