"""Pending (de)registration requests re-sent after an outage are issued afresh.

The collector refuses a request issued outside its clock-skew window (SPEC §4): one kept
through a long outage and re-sent as it was would be taken for a replay, and one refused
for skew only because it waited is sent again rather than given up.
"""

from __future__ import annotations

from agent_support import T0, Harness, device_key, new_core, of_type, restore
from smartlic.agent.actions import Publish, RegistrationRefused
from smartlic.agent.core import CoreSettings
from smartlic.protocol import ErrorCode, RegistrationRequest, open_message


def _requests(harness: Harness) -> list[tuple[bytes | None, RegistrationRequest]]:
    sent = []
    for publish in of_type(harness.actions, Publish):
        opened = open_message(publish.payload)
        if isinstance(opened.message, RegistrationRequest):
            opened.verify(device_key().public)
            sent.append((publish.request_id, opened.message))
    return sent


def _registering_unanswered() -> Harness:
    """A core that sent its registration at T0 while the collector was not answering."""
    harness = Harness(new_core())
    harness.collector_up = False
    harness.start(T0)
    harness.register(T0)
    return harness


def _outage(harness: Harness, seconds: float) -> float:
    """The connection drops, and comes back ``seconds`` after T0."""
    harness.run(harness.core.disconnected(T0 + 1), T0 + 1)
    harness.run(harness.core.connected(T0 + seconds), T0 + seconds)
    return T0 + seconds


def test_a_request_re_sent_after_an_outage_is_issued_again_with_the_same_id() -> None:
    """The same request: an answer to either copy is its answer."""
    harness = _registering_unanswered()
    later = _outage(harness, 7200)

    (first_id, first), (again_id, again) = _requests(harness)
    assert (int(T0), int(later)) == (first.issued_at, again.issued_at)
    assert first_id == again_id == first.request_id == again.request_id


def test_a_request_re_sent_soon_is_the_very_same_bytes() -> None:
    harness = _registering_unanswered()
    _outage(harness, CoreSettings().request_refresh / 2)

    first, again = (p.payload for p in of_type(harness.actions, Publish))
    assert first == again


def test_the_request_issued_again_is_what_a_restart_would_send() -> None:
    harness = _registering_unanswered()
    _outage(harness, 7200)

    stored = harness.storage.load()
    assert stored is not None
    assert stored.pending is not None
    assert of_type(harness.actions, Publish)[-1].payload == stored.pending.payload


def test_a_request_refused_for_skew_after_waiting_is_sent_again_not_given_up() -> None:
    """It waited in the broker for a collector that was down: its time was right when sent."""
    harness = Harness(new_core())
    harness.script.refuse_registration = ErrorCode.CLOCK_SKEW
    harness.deliver = False
    harness.start(T0)
    harness.register(T0)
    harness.script.refuse_registration = None
    harness.deliver = True
    later = T0 + 600
    harness.release(later)

    (_, first), (_, again) = _requests(harness)
    assert [] == of_type(harness.actions, RegistrationRefused)
    assert (int(T0), int(later)) == (first.issued_at, again.issued_at)
    assert harness.core.state.registered


def test_a_fresh_request_refused_for_skew_is_given_up_the_clock_is_wrong() -> None:
    harness = Harness(new_core())
    harness.script.refuse_registration = ErrorCode.CLOCK_SKEW
    harness.start(T0)
    harness.register(T0)

    (refused,) = of_type(harness.actions, RegistrationRefused)
    assert ErrorCode.CLOCK_SKEW is refused.code
    assert 1 == len(_requests(harness))


def test_a_refusal_of_an_older_copy_is_set_aside_for_the_fresh_copys_answer() -> None:
    """Both copies waited in the broker; the older one is refused for its age."""
    harness = _registering_unanswered()
    _outage(harness, 7200)
    harness.script.refuse_registration = ErrorCode.CLOCK_SKEW
    harness.collector_up = True
    first, _ = of_type(harness.actions, Publish)
    harness.run(harness.core.publish_acked(first, T0 + 7200), T0 + 7200)
    harness.receive(harness.script.handle(first.topic, first.payload, T0 + 7200)[0], T0 + 7200)

    assert [] == of_type(harness.actions, RegistrationRefused)
    assert harness.core.pending is not None


def test_a_refusal_of_a_copy_sent_before_a_crash_is_set_aside_after_the_restart() -> None:
    """The count of older copies out there is saved with the request: restarted, the core
    still knows that the refusal may be theirs, and waits for the fresh copy's answer."""
    harness = _registering_unanswered()
    _outage(harness, 7200)
    stored = harness.storage.load()
    assert stored is not None
    harness.core = restore(stored)
    harness.start(T0 + 7201)
    harness.script.refuse_registration = ErrorCode.CLOCK_SKEW
    first = of_type(harness.actions, Publish)[0]
    refusal = harness.script.handle(first.topic, first.payload, T0 + 7201)[0]
    harness.receive(refusal, T0 + 7201)

    assert [] == of_type(harness.actions, RegistrationRefused)
    assert harness.core.pending is not None


def test_an_unanswered_request_is_sent_again_after_the_retry_delay() -> None:
    """On the same connection: a broker may have lost it (the gap before a restarted broker
    has the collector's shared subscription again)."""
    harness = _registering_unanswered()
    settings = CoreSettings()
    harness.tick(T0 + settings.retry_base / 4)
    early = len(_requests(harness))
    harness.collector_up = True
    harness.tick(T0 + settings.retry_base)

    assert (1, 2) == (early, len(_requests(harness)))
    assert harness.core.state.registered
