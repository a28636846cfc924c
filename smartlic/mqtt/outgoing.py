"""The native client's QoS 1 publishes between ``publish()`` and the broker's PUBACK, sans-I/O.

Packet identifiers are 16 bits and name one unacknowledged message each (MQTT 3.1.1 §2.3.1);
the broker's Receive Maximum bounds how many may be sent and unacknowledged at once (MQTT 5
§4.9); after a reconnection every unacknowledged message goes out again, in its order, with
DUP set on those sent before (MQTT 3.1.1 §4.4).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Container, Iterator

MAX_PACKET_ID: Final = 0xFFFF


@dataclass(slots=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    sent: bool = False
    """Sent on some connection already: a resend carries DUP."""


class OutgoingQueue:
    def __init__(self) -> None:
        self._messages: dict[int, Outgoing] = {}
        """By packet id, in the order given (dicts keep insertion order)."""
        self._unsent: deque[int] = deque()
        self._in_flight = 0
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._messages)

    def allocate_id(self, busy: Container[int] = ()) -> int:
        """A packet id that no queued message (nor anything in ``busy``) uses."""
        for _ in range(MAX_PACKET_ID):
            packet_id = self._next_id
            self._next_id = packet_id % MAX_PACKET_ID + 1
            if packet_id not in self._messages and packet_id not in busy:
                return packet_id
        raise OverflowError("every packet identifier is in use")

    def add(self, packet_id: int, message: Outgoing) -> None:
        self._messages[packet_id] = message
        self._unsent.append(packet_id)

    def clear(self) -> None:
        """Forget every message: the caller will send what still matters itself."""
        self._messages.clear()
        self._unsent.clear()
        self._in_flight = 0

    def restart(self) -> None:
        """A new connection: nothing is in flight on it, everything is to be sent."""
        self._in_flight = 0
        self._unsent = deque(self._messages)

    def due(self, quota: int) -> Iterator[tuple[int, Outgoing, bool]]:
        """(packet id, message, dup) for each message to send now, within ``quota`` in flight;
        each is counted as in flight once yielded."""
        while self._unsent and self._in_flight < quota:
            packet_id = self._unsent.popleft()
            message = self._messages.get(packet_id)
            if message is None:
                continue
            dup = message.sent
            message.sent = True
            self._in_flight += 1
            yield packet_id, message, dup

    def acknowledged(self, packet_id: int) -> bool:
        """Forget an acknowledged message; False when it was not waiting (a late duplicate)."""
        if self._messages.pop(packet_id, None) is None:
            return False
        self._in_flight = max(0, self._in_flight - 1)
        return True
