"""Time: a clock set back never extends an evaluation or an authorization."""

from __future__ import annotations

from agent_support import T0, Harness, new_core, of_type, restore
from hypothesis import given
from hypothesis import strategies as st
from smartlic.agent.actions import StateChanged
from smartlic.agent.core import DAY, CoreSettings
from smartlic.agent.states import LicenseState
from smartlic.agent.timekeeping import UseClock
from smartlic.protocol.fields import TIME_MAX

HOUR = 3600.0


def test_first_observation_of_a_run_credits_nothing() -> None:
    clock = UseClock(elapsed=100.0)
    assert 0.0 == clock.observe(T0)
    assert 100.0 == clock.elapsed


def test_forward_steps_are_credited() -> None:
    clock = UseClock()
    clock.observe(T0)
    clock.observe(T0 + 10)
    assert 10.0 == clock.elapsed


def test_a_step_backwards_credits_nothing_and_reanchors() -> None:
    clock = UseClock()
    clock.observe(T0)
    clock.observe(T0 - 86_400)
    clock.observe(T0 - 86_400 + 5)
    assert 5.0 == clock.elapsed


def test_a_forward_jump_is_credited_at_most_max_step() -> None:
    """A router whose clock jumps from 1970 to today must not lose its evaluation at once."""
    clock = UseClock(max_step=300.0)
    clock.observe(0.0)
    clock.observe(T0)
    assert 300.0 == clock.elapsed


def test_the_next_reading_is_asked_for_within_half_the_max_step() -> None:
    """A reading up to max_step / 2 later than asked still credits its whole step."""
    clock = UseClock(max_step=300.0)
    clock.observe(T0)
    assert T0 + 150.0 == clock.observe_by()


def test_a_core_ticked_only_when_its_timer_asks_counts_all_its_running_time() -> None:
    """With no other input, a one-day evaluation ends after one day of running, not 1.5:
    the timer never leaves a step longer than max_clock_step for the use clock to cut."""
    harness = Harness(new_core(CoreSettings(evaluation_period=DAY)))
    harness.run(harness.core.start(T0), T0)
    now = T0
    while harness.core.state is LicenseState.EVALUATION:
        timer = harness.core.next_timer()
        assert timer is not None
        now = timer
        harness.tick(now)
    assert T0 + DAY == now


def test_the_timer_is_due_at_once_after_the_wall_clock_was_set_back() -> None:
    """Its timers count from the last wall time seen: the tick re-anchors them."""
    harness = _evaluation_core(10 * HOUR)
    harness.tick(T0 + HOUR)
    assert T0 - DAY == harness.core.next_timer(T0 - DAY)


@given(st.lists(st.floats(min_value=-1e9, max_value=1e9, allow_nan=False), max_size=50))
def test_the_use_clock_never_decreases(steps: list[float]) -> None:
    clock = UseClock(max_step=600.0)
    now, seen = T0, 0.0
    for step in steps:
        now += step
        clock.observe(now)
        assert clock.elapsed >= seen
        seen = clock.elapsed


def _evaluation_core(period: float) -> Harness:
    settings = CoreSettings(evaluation_period=period, max_clock_step=None)
    harness = Harness(new_core(settings))
    harness.run(harness.core.start(T0), T0)
    return harness


def test_evaluation_expires_after_its_period_of_use() -> None:
    harness = _evaluation_core(10 * HOUR)
    harness.tick(T0 + 10 * HOUR - 1)
    assert LicenseState.EVALUATION is harness.core.state
    changes = of_type(harness.tick(T0 + 10 * HOUR), StateChanged)
    assert [LicenseState.EVALUATION_EXPIRED] == [c.state for c in changes]


def test_setting_the_clock_back_does_not_extend_the_evaluation() -> None:
    """Six hours used, clock set back a year, four more hours of use: the 10 hours are spent."""
    harness = _evaluation_core(10 * HOUR)
    harness.tick(T0 + 6 * HOUR)
    back = T0 - 365 * DAY
    harness.tick(back)
    harness.tick(back + 4 * HOUR - 1)
    before = harness.core.state
    harness.tick(back + 4 * HOUR)
    assert (LicenseState.EVALUATION, LicenseState.EVALUATION_EXPIRED) == (
        before,
        harness.core.state,
    )


def test_evaluation_use_is_counted_across_restarts() -> None:
    harness = _evaluation_core(10 * HOUR)
    harness.tick(T0 + 6 * HOUR)
    harness.run(harness.core.stop(T0 + 6 * HOUR), T0 + 6 * HOUR)
    snapshot = harness.storage.load()
    assert snapshot is not None
    settings = CoreSettings(evaluation_period=10 * HOUR, max_clock_step=None)
    later = Harness(restore(snapshot, settings))
    day_later = T0 + DAY
    later.run(later.core.start(day_later), day_later)
    later.tick(day_later + 4 * HOUR)
    assert LicenseState.EVALUATION_EXPIRED is later.core.state


def _authorized(validity: int) -> Harness:
    harness = Harness(new_core(CoreSettings(max_clock_step=None)))
    harness.script.validity = validity
    harness.script.report_interval = validity * 10
    harness.start()
    harness.register()
    assert LicenseState.AUTHORIZED is harness.core.state
    return harness


def test_authorization_expires_at_its_validity_end() -> None:
    harness = _authorized(validity=int(2 * HOUR))
    harness.tick(T0 + 2 * HOUR)
    assert LicenseState.AUTHORIZATION_EXPIRED is harness.core.state


def test_setting_the_clock_back_does_not_extend_an_authorization() -> None:
    """One hour of the two passed, the clock goes back a day, one more hour: it has expired."""
    harness = _authorized(validity=int(2 * HOUR))
    harness.tick(T0 + HOUR)
    back = T0 - DAY
    harness.tick(back)
    harness.tick(back + HOUR)
    assert LicenseState.AUTHORIZATION_EXPIRED is harness.core.state


def test_time_switched_off_counts_against_an_authorization() -> None:
    """Validity ends are calendar times: a device off for the whole validity restarts expired."""
    harness = _authorized(validity=int(2 * HOUR))
    harness.run(harness.core.stop(T0 + 60), T0 + 60)
    snapshot = harness.storage.load()
    assert snapshot is not None
    later = Harness(restore(snapshot, CoreSettings(max_clock_step=None)), script=harness.script)
    later.script.answer_reports = False
    later.run(later.core.start(T0 + 3 * HOUR), T0 + 3 * HOUR)
    assert LicenseState.AUTHORIZATION_EXPIRED is later.core.state


def test_a_deadline_as_far_off_as_a_notice_can_put_it_stays_a_time_the_state_holds() -> None:
    """Beyond 2**40 s, the saved state would be refused as damaged when read back."""
    clock = UseClock(elapsed=1000.0)

    deadline = clock.at(float(TIME_MAX), span=float(TIME_MAX))

    assert float(TIME_MAX) == deadline.elapsed
