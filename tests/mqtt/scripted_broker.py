"""A broker scripted by the test on loopback: it reads what a client sends and answers what
the test says — CONNACKs, malformed packets, silence — where Mosquitto will not on demand."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Final

from smartlic.mqtt.packets import Packet, PacketReader, PacketType
from smartlic.mqtt.url import BrokerAddress

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

ACCEPT: Final = b"\x20\x03\x00\x00\x00"
"""A v5 CONNACK: no session, success, no properties."""


class Peer:
    """One connection to the scripted broker: read packets, write bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._packets = PacketReader()
        self._ready: list[Packet] = []
        self.connect: Packet | None = None

    async def next(self, timeout: float = 5.0) -> Packet:  # noqa: ASYNC109 -- test helper
        async with asyncio.timeout(timeout):
            while not self._ready:
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("the client closed the connection")
                self._ready += self._packets.feed(data)
        return self._ready.pop(0)

    async def expect(self, kind: PacketType) -> Packet:
        packet = await self.next()
        assert kind is packet.type
        return packet

    async def read_for(self, seconds: float) -> list[Packet]:
        """Every packet not taken yet, after reading whatever comes within ``seconds``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while data := await self.reader.read(65536):
                    self._ready += self._packets.feed(data)
        return list(self._ready)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


class ScriptedBroker:
    def __init__(self) -> None:
        self.peers: asyncio.Queue[Peer] = asyncio.Queue()
        self.every: list[Peer] = []
        self.server: asyncio.Server | None = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        self.every.append(peer)
        await self.peers.put(peer)

    @property
    def address(self) -> BrokerAddress:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return BrokerAddress(host=host, port=port)

    async def accept(self, connack: bytes = ACCEPT) -> Peer:
        """The next connection, its CONNECT read (``peer.connect``) and answered with
        ``connack``."""
        async with asyncio.timeout(5):
            peer = await self.peers.get()
        peer.connect = await peer.expect(PacketType.CONNECT)
        await peer.send(connack)
        return peer


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[ScriptedBroker]:
    """A scripted broker listening on a free loopback port until the block ends."""
    scripted = ScriptedBroker()
    scripted.server = await asyncio.start_server(scripted._accept, "127.0.0.1", 0)
    try:
        yield scripted
    finally:
        scripted.server.close()
        for peer in scripted.every:
            peer.writer.close()
            with contextlib.suppress(ConnectionError):
                await peer.writer.wait_closed()
        await scripted.server.wait_closed()
