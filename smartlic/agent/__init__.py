"""The smartlic device agent: a sans-I/O core and the small daemon that drives it.

For a program driving cores itself (the simulator drives thousands from asyncio)::

    core = AgentCore.new(udi, key=signing_key, entropy=os.urandom, settings=CoreSettings())
    for action in core.start(now) + core.connected(now):   # after the downlink's SUBACK
        ...   # Persist -> storage.save(action.snapshot); Publish -> MQTT QoS 1, then
              # core.publish_acked(action, now) on PUBACK; StateChanged -> hook; others: count

Every input (``received``, ``tick``, ``usage_changed``, ``register``, ...) takes ``now`` and
returns the actions to carry out in order; :meth:`AgentCore.next_timer` says when to tick.
See ``core.py`` for the inputs, ``actions.py`` for the outputs, and ``docs/agent.md``.
"""

from __future__ import annotations

from smartlic.agent.core import AgentCore
from smartlic.agent.settings import CoreSettings, Counters
from smartlic.agent.snapshot import Snapshot
from smartlic.agent.states import LicenseEvent, LicenseState
from smartlic.agent.storage import FileStorage, MemoryStorage, Storage

__all__ = [
    "AgentCore",
    "CoreSettings",
    "Counters",
    "FileStorage",
    "LicenseEvent",
    "LicenseState",
    "MemoryStorage",
    "Snapshot",
    "Storage",
]
