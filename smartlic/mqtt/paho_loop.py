"""What every paho client on one event loop shares: the keep-alive ticker, the threads that
run paho's blocking ``connect()``, and MQTT 5 CONNECT properties."""

from __future__ import annotations

import asyncio
import functools
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar, Final, Protocol

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

_CONNECT_THREADS: Final = 8
_MISC_INTERVAL: Final = 1.0


class _Ticking(Protocol):
    def misc(self) -> None: ...  # pragma: no cover -- a protocol


class Ticker:
    """One task per event loop that runs ``loop_misc`` for every live client each second."""

    _by_loop: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Ticker]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.clients: set[_Ticking] = set()
        self.task: asyncio.Task[None] | None = None
        self.loop = loop

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> Ticker:
        ticker = cls._by_loop.get(loop)
        if ticker is None:
            ticker = cls._by_loop[loop] = cls(loop)
        return ticker

    def add(self, client: _Ticking) -> None:
        self.clients.add(client)
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._run(), name="mqtt-keepalive")

    def discard(self, client: _Ticking) -> None:
        self.clients.discard(client)

    async def _run(self) -> None:
        while self.clients:
            await asyncio.sleep(_MISC_INTERVAL)
            for client in list(self.clients):
                client.misc()


@functools.lru_cache(maxsize=16)
def connect_properties(session_expiry: int, receive_maximum: int) -> Properties:
    """One CONNECT ``Properties`` per setting, shared: paho keeps the one it is given for
    reconnections, and each instance builds its own name and type tables (≈ 7 kB of RSS per
    client, measured by bench/connection_memory.py)."""
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho
    properties.SessionExpiryInterval = session_expiry
    properties.ReceiveMaximum = receive_maximum
    return properties


_connect_pool: ThreadPoolExecutor | None = None


def connect_pool() -> ThreadPoolExecutor:
    # paho's connect() blocks in socket.create_connection(); a SYN lost to a full listen
    # backlog is retried after 1, 3, 7 s. A few threads keep that off the event loop.
    global _connect_pool  # noqa: PLW0603 -- one lazily created pool per process
    if _connect_pool is None:
        _connect_pool = ThreadPoolExecutor(_CONNECT_THREADS, thread_name_prefix="mqtt-connect")
    return _connect_pool
