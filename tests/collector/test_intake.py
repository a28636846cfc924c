"""What the service keeps of its buffer when a new connection comes up."""

from __future__ import annotations

from smartlic.collector.service.intake import worth_keeping_after_reconnect
from smartlic.mqtt.common import MqttMessage


def _message(mid: int, generation: int) -> MqttMessage:
    return MqttMessage(
        topic="t",
        payload=b"x",
        qos=1,
        mid=mid,
        retain=False,
        duplicate=False,
        generation=generation,
    )


def test_with_the_session_kept_the_earlier_connections_messages_are_left_to_redelivery() -> None:
    waiting = [_message(1, 1), _message(2, 2), _message(3, 1), _message(4, 2)]

    kept = worth_keeping_after_reconnect(waiting, generation=2, session_present=True)

    assert [2, 4] == [m.mid for m in kept]


def test_without_the_session_every_waiting_message_is_kept() -> None:
    """The broker has nothing to deliver again: the buffered copy is the only one."""
    waiting = [_message(1, 1), _message(2, 2)]

    kept = worth_keeping_after_reconnect(waiting, generation=2, session_present=False)

    assert [1, 2] == [m.mid for m in kept]
