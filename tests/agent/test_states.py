"""The license state machine: every (state, event) pair moves it or raises IllegalTransition."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from smartlic.agent.errors import IllegalTransition, LocalAgentError
from smartlic.agent.states import TRANSITIONS, LicenseEvent, LicenseState, transition

S = LicenseState
E = LicenseEvent
REGISTERED_STATES = (S.REGISTERED, S.AUTHORIZED, S.OUT_OF_COMPLIANCE, S.AUTHORIZATION_EXPIRED)


@given(st.sampled_from(LicenseState), st.sampled_from(LicenseEvent))
def test_every_pair_moves_by_the_table_or_raises_illegal_transition(
    state: LicenseState, event: LicenseEvent
) -> None:
    """Nothing else can happen: a listed pair gives its target, any other raises our error."""
    if (state, event) in TRANSITIONS:
        assert TRANSITIONS[state, event] is transition(state, event)
    else:
        with pytest.raises(IllegalTransition, match=state.value):
            transition(state, event)


@given(st.lists(st.sampled_from(LicenseEvent), max_size=40))
def test_any_event_sequence_stays_inside_the_machine(events: list[LicenseEvent]) -> None:
    """Driven by arbitrary events, the machine is always in one of its six states."""
    state = S.EVALUATION
    for event in events:
        try:
            state = transition(state, event)
        except IllegalTransition:
            continue
        assert state in LicenseState


def test_illegal_transition_is_the_agents_own_local_error() -> None:
    assert issubclass(IllegalTransition, LocalAgentError)


def test_table_has_exactly_these_moves() -> None:
    """Spelled out once, so a change to the table is a deliberate change to this test."""
    expected = {
        (S.EVALUATION, E.EVALUATION_SPENT): S.EVALUATION_EXPIRED,
        (S.EVALUATION, E.REGISTRATION_ACCEPTED): S.REGISTERED,
        (S.EVALUATION_EXPIRED, E.REGISTRATION_ACCEPTED): S.REGISTERED,
        (S.AUTHORIZED, E.VALIDITY_ENDED): S.AUTHORIZATION_EXPIRED,
        (S.OUT_OF_COMPLIANCE, E.VALIDITY_ENDED): S.AUTHORIZATION_EXPIRED,
    }
    for state in REGISTERED_STATES:
        expected[state, E.AUTHORIZATION_RECEIVED] = S.AUTHORIZED
        expected[state, E.OUT_OF_COMPLIANCE_RECEIVED] = S.OUT_OF_COMPLIANCE
        expected[state, E.DEREGISTERED] = S.EVALUATION
        expected[state, E.DEREGISTERED_EVALUATION_SPENT] = S.EVALUATION_EXPIRED
    assert expected == TRANSITIONS


@pytest.mark.parametrize("state", REGISTERED_STATES)
def test_registering_again_while_registered_is_illegal(state: LicenseState) -> None:
    with pytest.raises(IllegalTransition):
        transition(state, E.REGISTRATION_ACCEPTED)


def test_registered_without_an_answer_has_no_validity_to_lapse() -> None:
    with pytest.raises(IllegalTransition):
        transition(S.REGISTERED, E.VALIDITY_ENDED)


@pytest.mark.parametrize("state", [*REGISTERED_STATES, S.EVALUATION_EXPIRED])
def test_evaluation_time_is_only_spent_in_evaluation(state: LicenseState) -> None:
    with pytest.raises(IllegalTransition):
        transition(state, E.EVALUATION_SPENT)


def test_registered_property_is_false_only_in_the_evaluation_states() -> None:
    assert [s for s in LicenseState if not s.registered] == [S.EVALUATION, S.EVALUATION_EXPIRED]
