"""The native client's queue of unacknowledged publishes (sans-I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smartlic.mqtt.outgoing import MAX_PACKET_ID, Outgoing, OutgoingQueue


def _queue(count: int) -> tuple[OutgoingQueue, list[int]]:
    queue = OutgoingQueue()
    ids = []
    for n in range(count):
        packet_id = queue.allocate_id()
        queue.add(packet_id, Outgoing(f"t/{n}", b"x", 1))
        ids.append(packet_id)
    return queue, ids


def test_no_more_than_the_quota_is_sent_until_acknowledgements_come() -> None:
    queue, ids = _queue(5)

    first = [packet_id for packet_id, _, _ in queue.due(2)]
    assert ids[:2] == first
    assert [] == list(queue.due(2))

    assert queue.acknowledged(ids[0])
    assert [ids[2]] == [packet_id for packet_id, _, _ in queue.due(2)]


def test_after_a_reconnection_everything_unacknowledged_goes_again_in_order() -> None:
    """MQTT 3.1.1 §4.4: resent with DUP when sent before, first time without."""
    queue, ids = _queue(3)
    list(queue.due(2))
    queue.acknowledged(ids[0])

    queue.restart()

    assert [(ids[1], True), (ids[2], False)] == [(pid, dup) for pid, _, dup in queue.due(10)]


def test_a_late_or_unknown_acknowledgement_changes_nothing() -> None:
    queue, ids = _queue(1)
    list(queue.due(1))

    assert (True, False, False) == (
        queue.acknowledged(ids[0]),
        queue.acknowledged(ids[0]),
        queue.acknowledged(999),
    )
    assert 0 == len(queue)


def test_packet_ids_wrap_and_skip_those_still_waiting() -> None:
    queue = OutgoingQueue()
    queue.add(1, Outgoing("t", b"x", 1))
    for _ in range(MAX_PACKET_ID - 1):
        queue.allocate_id()

    assert 2 == queue.allocate_id(busy={1})


def test_running_out_of_packet_ids_is_an_error() -> None:
    queue = OutgoingQueue()
    for packet_id in range(1, MAX_PACKET_ID + 1):
        queue.add(packet_id, Outgoing("t", b"x", 1))

    with pytest.raises(OverflowError):
        queue.allocate_id()


@given(st.lists(st.sampled_from(["publish", "ack", "send", "reconnect"]), max_size=200))
def test_ids_of_waiting_messages_are_always_distinct_and_in_flight_within_quota(
    steps: list[str],
) -> None:
    """Whatever happens, no two waiting messages share an id and at most the quota are out."""
    queue = OutgoingQueue()
    waiting: list[int] = []
    out: list[int] = []
    for step in steps:
        if step == "publish":
            packet_id = queue.allocate_id()
            queue.add(packet_id, Outgoing("t", b"x", 1))
            waiting.append(packet_id)
        elif step == "send":
            out += [packet_id for packet_id, _, _ in queue.due(3)]
        elif step == "ack" and out:
            packet_id = out.pop(0)
            assert queue.acknowledged(packet_id)
            waiting.remove(packet_id)
        elif step == "reconnect":
            queue.restart()
            out = []
        assert len(set(waiting)) == len(waiting) == len(queue)
        assert len(out) <= 3
