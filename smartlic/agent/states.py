"""The license state machine of one device (SPEC §3), as one transition table.

Theory of operation
-------------------

A device is in exactly one :class:`LicenseState`. The core turns what happens to it — a
verified collector message, a timer that ran out, an operator's command — into one
:class:`LicenseEvent` and asks :func:`transition` where that leads. The table below is the
whole machine: a (state, event) pair that is not in it is a bug in the caller, and
:func:`transition` raises :class:`IllegalTransition` rather than guess.

* A device starts in ``EVALUATION``: unregistered, allowed 90 days of *use* (counted by the
  core's use clock, across restarts, never by the wall clock alone). When they are spent it
  moves to ``EVALUATION_EXPIRED``. Evaluation time is only consumed in ``EVALUATION``.
* A registration the collector accepted (verified against the token's fingerprint) moves
  either evaluation state to ``REGISTERED``: registered, not yet answered.
* Every compliance notice the device accepts moves it to ``AUTHORIZED`` or
  ``OUT_OF_COMPLIANCE``, from any registered state: the latest verified answer wins, and a
  device whose authorization had lapsed is brought back by a fresh one.
* Authorizations and out-of-compliance notices both carry a validity end. When it passes
  without a newer answer, the device is ``AUTHORIZATION_EXPIRED`` (SPEC §3: "no valid answer
  from the collector before the authorization's end"). ``REGISTERED`` has no validity to lapse.
* Deregistration — asked by the device, or pushed by the collector as ``NOT_REGISTERED`` —
  returns a registered device to evaluation: ``EVALUATION`` while evaluation time is left,
  ``EVALUATION_EXPIRED`` once it is spent. Which of the two is decided by the event the core
  raises, so the table stays a plain mapping.
* Registering again while registered is not a transition: deregister first (the collector
  would answer ``ALREADY_REGISTERED`` anyway).
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from smartlic.agent.errors import IllegalTransition


class LicenseState(Enum):
    EVALUATION = "EVALUATION"
    EVALUATION_EXPIRED = "EVALUATION_EXPIRED"
    REGISTERED = "REGISTERED"
    AUTHORIZED = "AUTHORIZED"
    OUT_OF_COMPLIANCE = "OUT_OF_COMPLIANCE"
    AUTHORIZATION_EXPIRED = "AUTHORIZATION_EXPIRED"

    @property
    def registered(self) -> bool:
        return self not in _UNREGISTERED


_UNREGISTERED: Final = frozenset({LicenseState.EVALUATION, LicenseState.EVALUATION_EXPIRED})


class LicenseEvent(Enum):
    EVALUATION_SPENT = "evaluation period used up"
    REGISTRATION_ACCEPTED = "registration accepted"
    AUTHORIZATION_RECEIVED = "authorization received"
    OUT_OF_COMPLIANCE_RECEIVED = "out-of-compliance notice received"
    VALIDITY_ENDED = "authorization validity ended"
    DEREGISTERED = "deregistered, evaluation time left"
    DEREGISTERED_EVALUATION_SPENT = "deregistered, evaluation time spent"


S = LicenseState
E = LicenseEvent

TRANSITIONS: Final[dict[tuple[LicenseState, LicenseEvent], LicenseState]] = {
    (S.EVALUATION, E.EVALUATION_SPENT): S.EVALUATION_EXPIRED,
    (S.EVALUATION, E.REGISTRATION_ACCEPTED): S.REGISTERED,
    (S.EVALUATION_EXPIRED, E.REGISTRATION_ACCEPTED): S.REGISTERED,
    **{
        (state, event): target
        for state in (
            S.REGISTERED,
            S.AUTHORIZED,
            S.OUT_OF_COMPLIANCE,
            S.AUTHORIZATION_EXPIRED,
        )
        for event, target in (
            (E.AUTHORIZATION_RECEIVED, S.AUTHORIZED),
            (E.OUT_OF_COMPLIANCE_RECEIVED, S.OUT_OF_COMPLIANCE),
            (E.DEREGISTERED, S.EVALUATION),
            (E.DEREGISTERED_EVALUATION_SPENT, S.EVALUATION_EXPIRED),
        )
    },
    (S.AUTHORIZED, E.VALIDITY_ENDED): S.AUTHORIZATION_EXPIRED,
    (S.OUT_OF_COMPLIANCE, E.VALIDITY_ENDED): S.AUTHORIZATION_EXPIRED,
}
"""(state, event) → next state. Every pair not listed raises :class:`IllegalTransition`."""

del S, E


def transition(state: LicenseState, event: LicenseEvent) -> LicenseState:
    """The state ``event`` leads to from ``state``; raise if the table has no such move."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise IllegalTransition(
            f"no transition from {state.value} on {event.name} ({event.value})"
        ) from None
