"""The bookkeeping between publishing a push and deleting its outbox row, without a broker."""

from __future__ import annotations

from smartlic.collector.service.in_flight import PushesInFlight


def test_a_row_a_task_is_publishing_is_left_alone_until_released() -> None:
    pushes = PushesInFlight()
    claimed = pushes.claim([7, 8])
    pushes.published(1, 7)
    known_while_publishing = pushes.known()

    pushes.release(claimed)

    assert ({7, 8}, {7}) == (known_while_publishing, pushes.known())


def test_an_acknowledged_push_is_delivered_and_known_until_forgotten() -> None:
    pushes = PushesInFlight()
    pushes.published(1, 7)
    pushes.acknowledged(1)
    delivered, known = pushes.delivered(), pushes.known()

    pushes.forgotten(len(delivered))

    assert ([7], {7}, set()) == (delivered, known, pushes.known())


def test_a_refused_push_names_its_row_and_goes_again_with_the_next_resend() -> None:
    pushes = PushesInFlight()
    pushes.published(1, 7)

    assert (7, set(), []) == (pushes.refused(1), pushes.known(), pushes.delivered())


def test_the_last_acknowledgement_settles_what_was_in_flight() -> None:
    pushes = PushesInFlight()
    pushes.published(1, 7)
    pushes.published(2, 8)
    pushes.acknowledged(1)
    settled_after_one = pushes.settled.is_set()

    pushes.acknowledged(2)

    assert (False, True, False) == (settled_after_one, pushes.settled.is_set(), pushes.awaiting)


def test_an_acknowledgement_for_an_answer_touches_no_row() -> None:
    """Answers to reports are published too, with no outbox row behind them."""
    pushes = PushesInFlight()
    pushes.published(1, 7)

    pushes.acknowledged(2)

    assert ({7}, [], True) == (pushes.known(), pushes.delivered(), pushes.awaiting)
