"""Reports: numbered, persisted before they are sent, retried, bounded, never lost."""

from __future__ import annotations

import itertools

from agent_support import T0, Harness, new_core, of_type, restore
from smartlic.agent.actions import (
    Persist,
    Publish,
    ReportAnswered,
    ReportDropped,
    ReportQueued,
)
from smartlic.agent.core import CoreSettings
from smartlic.agent.outbox import Outbox, OutboxEntry
from smartlic.agent.states import LicenseState
from smartlic.protocol import ErrorCode, UsageReport, open_message

TAG = "network-advantage"


def registered(settings: CoreSettings | None = None) -> Harness:
    """A device registered and authorized at T0, with one report answered."""
    harness = Harness(new_core(settings))
    harness.script.entitled = {TAG: 10}
    harness.start()
    harness.register()
    return harness


def report_of(publish: Publish) -> UsageReport:
    message = open_message(publish.payload).message
    assert isinstance(message, UsageReport)
    return message


def test_registration_is_followed_by_a_first_report_and_an_authorization() -> None:
    harness = registered()
    assert (LicenseState.AUTHORIZED, [1]) == (
        harness.core.state,
        [a.seq for a in of_type(harness.actions, ReportAnswered)],
    )


def test_a_usage_change_is_reported_after_the_debounce() -> None:
    harness = registered()
    early = harness.usage({TAG: 3}, T0 + 100)
    assert [] == of_type(early, ReportQueued)
    queued = of_type(harness.tick(T0 + 105), ReportQueued)
    assert [{TAG: 3}] == [dict(q.counts) for q in queued]


def test_changes_that_keep_coming_are_reported_by_debounce_max() -> None:
    harness = registered(CoreSettings(debounce=5.0, debounce_max=20.0))
    for step in range(0, 20, 4):
        harness.usage({TAG: step + 1}, T0 + 100 + step)
        assert [] == of_type(harness.tick(T0 + 100 + step + 1), ReportQueued)
    assert 1 == len(of_type(harness.tick(T0 + 120), ReportQueued))


def test_a_change_undone_before_the_debounce_is_not_reported() -> None:
    harness = registered()
    harness.usage({TAG: 3}, T0 + 100)
    harness.usage({}, T0 + 101)
    assert [] == of_type(harness.tick(T0 + 200), ReportQueued)


def test_a_tag_no_longer_used_is_reported_as_zero() -> None:
    harness = registered()
    harness.usage({TAG: 3}, T0 + 100)
    harness.tick(T0 + 110)
    harness.usage({}, T0 + 200)
    queued = of_type(harness.tick(T0 + 210), ReportQueued)
    assert [{TAG: 0}] == [dict(q.counts) for q in queued]


def test_the_next_report_goes_when_the_collector_said() -> None:
    harness = registered()
    interval = harness.script.report_interval
    assert [] == of_type(harness.tick(T0 + interval - 1), ReportQueued)
    assert 1 == len(of_type(harness.tick(T0 + interval), ReportQueued))


def test_sequence_numbers_strictly_increase() -> None:
    harness = registered()
    for n in range(1, 6):
        harness.usage({TAG: n}, T0 + 100 * n)
        harness.tick(T0 + 100 * n + 10)
    seqs = [report_of(p).seq for p in harness.sent if p.seq is not None]
    assert sorted(set(seqs)) == seqs


def test_every_new_report_is_persisted_before_it_is_published() -> None:
    """In each action list, the Persist holding a report comes before the Publish of it."""
    harness = Harness(new_core())
    harness.start()
    batches = [harness.core.register(harness.script.token(), T0)]
    for n in range(1, 4):
        batches.append(harness.core.usage_changed({TAG: n}, T0 + 10 * n))
        batches.append(harness.core.tick(T0 + 10 * n + 6))
    for batch in batches:
        persisted: set[int] = set()
        for action in batch:
            if isinstance(action, Persist):
                persisted |= {r.seq for r in action.snapshot.outbox}
            elif isinstance(action, Publish) and action.seq is not None:
                assert action.seq in persisted
        harness.run(batch, T0 + 100)


def test_an_unanswered_report_is_sent_again_after_a_backoff() -> None:
    harness = registered(CoreSettings(retry_base=30.0, retry_cap=3600.0))
    harness.script.answer_reports = False
    harness.usage({TAG: 3}, T0 + 100)
    harness.tick(T0 + 105)
    first = [p for p in harness.sent if p.seq == 2]
    harness.tick(T0 + 105 + 14)
    too_early = [p for p in harness.sent if p.seq == 2]
    harness.tick(T0 + 105 + 30)
    assert ([1], [1], [1, 2]) == (
        [p.attempt for p in first],
        [p.attempt for p in too_early],
        [p.attempt for p in harness.sent if p.seq == 2],
    )


def test_a_retry_sends_the_very_same_bytes() -> None:
    """The collector answers an exact copy with its stored answer, so retries are harmless."""
    harness = registered()
    harness.script.answer_reports = False
    harness.usage({TAG: 3}, T0 + 100)
    harness.tick(T0 + 105)
    harness.tick(T0 + 200)
    payloads = {p.payload for p in harness.sent if p.seq == 2}
    assert 1 == len(payloads)


def test_at_most_window_publishes_await_their_puback() -> None:
    core = new_core(CoreSettings(window=2))
    harness = Harness(core)
    harness.start()
    harness.register()
    harness.run(core.disconnected(T0 + 1), T0 + 1)
    for n in range(1, 6):
        harness.usage({TAG: n}, T0 + 100 * n)
        harness.tick(T0 + 100 * n + 10)
    sent = core.connected(T0 + 1000)
    assert 2 == len(of_type(sent, Publish))


def test_the_next_publish_goes_when_a_puback_makes_room() -> None:
    core = new_core(CoreSettings(window=1))
    harness = Harness(core)
    harness.start()
    harness.register()
    harness.run(core.disconnected(T0 + 1), T0 + 1)
    for n in range(1, 4):
        harness.usage({TAG: n}, T0 + 100 * n)
        harness.tick(T0 + 100 * n + 10)
    (first,) = of_type(core.connected(T0 + 1000), Publish)
    (second,) = of_type(core.publish_acked(first, T0 + 1000), Publish)
    assert first.seq is not None
    assert second.seq is not None
    assert first.seq < second.seq


def test_nothing_is_published_while_disconnected() -> None:
    harness = registered()
    harness.run(harness.core.disconnected(T0 + 1), T0 + 1)
    harness.usage({TAG: 3}, T0 + 100)
    assert [] == of_type(harness.tick(T0 + 200), Publish)


def test_the_outbox_is_bounded_and_keeps_the_latest() -> None:
    harness = registered(CoreSettings(outbox_limit=3))
    harness.script.answer_reports = False
    for n in range(1, 8):
        harness.usage({TAG: n}, T0 + 100 * n)
        harness.tick(T0 + 100 * n + 10)
    snapshot = harness.storage.load()
    assert snapshot is not None
    dropped = [a.seq for a in of_type(harness.actions, ReportDropped)]
    assert ([6, 7, 8], [2, 3, 4, 5]) == ([r.seq for r in snapshot.outbox], dropped)


def test_outbox_compaction_never_drops_the_only_report() -> None:
    outbox = Outbox(1)
    outbox.add(OutboxEntry(seq=1, created_at=T0, payload=b"1"))
    dropped = outbox.add(OutboxEntry(seq=2, created_at=T0, payload=b"2"))
    assert ([1], [2]) == ([e.seq for e in dropped], [e.seq for e in outbox])


def test_an_answer_retires_the_older_reports_too() -> None:
    harness = registered()
    harness.deliver = False
    for n in range(1, 4):
        harness.usage({TAG: n}, T0 + 100 * n)
        harness.tick(T0 + 100 * n + 10)
    last = harness.held[-1]
    harness.held = []
    harness.receive(last, T0 + 1000)
    assert (0, [2, 3]) == (
        harness.core.outbox_depth,
        [a.seq for a in of_type(harness.actions, ReportDropped)],
    )


def test_a_report_persisted_but_never_sent_is_sent_after_a_crash() -> None:
    """Kill between persist and send: the restarted agent sends the same bytes."""
    harness = registered()
    batch = harness.core.usage_changed({TAG: 3}, T0 + 100) + harness.core.tick(T0 + 106)
    persists = of_type(batch, Persist)
    (publish,) = of_type(batch, Publish)
    crashed = persists[-1].snapshot
    revived = Harness(restore(crashed), script=harness.script)
    resent = of_type(revived.start(T0 + 200), Publish)
    assert [publish.payload] == [p.payload for p in resent]


def test_after_an_unclean_stop_sequence_numbers_jump_ahead() -> None:
    harness = registered(CoreSettings(seq_jump=1000))
    snapshot = harness.storage.load()
    assert snapshot is not None
    assert not snapshot.clean
    revived = Harness(restore(snapshot, CoreSettings(seq_jump=1000)), script=harness.script)
    revived.start(T0 + 10)
    revived.usage({TAG: 3}, T0 + 100)
    queued = of_type(revived.tick(T0 + 110), ReportQueued)
    assert [snapshot.next_seq + 1000] == [q.seq for q in queued]


def test_after_a_clean_stop_sequence_numbers_continue() -> None:
    harness = registered()
    harness.run(harness.core.stop(T0 + 5), T0 + 5)
    snapshot = harness.storage.load()
    assert snapshot is not None
    revived = Harness(restore(snapshot), script=harness.script)
    revived.start(T0 + 10)
    revived.usage({TAG: 3}, T0 + 100)
    queued = of_type(revived.tick(T0 + 110), ReportQueued)
    assert [snapshot.next_seq] == [q.seq for q in queued]


def test_a_replayed_refusal_jumps_ahead_and_reports_again() -> None:
    """State restored from an old copy: the collector has seen our numbers; we move past them."""
    harness = registered(CoreSettings(seq_jump=100))
    harness.script.last_seq[harness.core.device_id] = 50
    harness.usage({TAG: 3}, T0 + 100)
    harness.tick(T0 + 106)
    answers = of_type(harness.actions, ReportAnswered)
    assert ([None, ErrorCode.REPLAYED, None], 0) == (
        [a.code for a in answers],
        harness.core.outbox_depth,
    )


def test_a_report_refused_for_clock_skew_is_reported_again_after_a_backoff() -> None:
    """Not at once (the clock is still off), not only at the next interval (a day away)."""
    harness = registered()
    harness.script.refuse_reports = ErrorCode.CLOCK_SKEW
    harness.usage({TAG: 3}, T0 + 100)
    harness.tick(T0 + 106)
    harness.script.refuse_reports = None
    harness.tick(T0 + 120)
    soon = [a.code for a in of_type(harness.actions, ReportAnswered)]

    harness.tick(T0 + 106 + 61)

    assert [None, ErrorCode.CLOCK_SKEW] == soon
    assert [None, ErrorCode.CLOCK_SKEW, None] == [
        a.code for a in of_type(harness.actions, ReportAnswered)
    ]
    assert {TAG: 3} == harness.script.latest_counts[harness.core.device_id]


def _skew_refusals(harness: Harness, until: float) -> list[float]:
    """Drive ``harness`` by its timer alone until ``until``; the times reports were queued."""
    start = len(harness.actions)
    now = harness.core.next_timer()
    while now is not None and now < until:
        harness.tick(now)
        now = harness.core.next_timer()
    return [q.at for q in of_type(harness.actions[start:], ReportQueued)]


def test_reports_refused_for_clock_skew_again_and_again_back_off_exponentially() -> None:
    """Each refusal's wait lies in [ceiling / 2, ceiling], the ceiling doubling from 60 s up
    to retry_cap (1 h): a clock that stays wrong is not retried every minute for ever."""
    harness = registered()
    harness.script.refuse_reports = ErrorCode.CLOCK_SKEW
    harness.usage({TAG: 3}, T0 + 100)
    queued = _skew_refusals(harness, T0 + 12 * 3600)
    gaps = [later - earlier for earlier, later in itertools.pairwise(queued)]
    ceilings = [min(3600.0, 30.0 * 2**n) for n in range(1, len(gaps) + 1)]
    assert [] == [(g, c) for g, c in zip(gaps, ceilings, strict=True) if not c / 2 <= g <= c]
    assert 3600.0 == ceilings[-1]


def test_an_accepted_notice_starts_the_clock_skew_backoff_over() -> None:
    """Refused six times in a row, then answered: the next refusal waits 30-60 s again."""
    harness = registered()
    harness.script.refuse_reports = ErrorCode.CLOCK_SKEW
    harness.usage({TAG: 3}, T0 + 100)
    refused = _skew_refusals(harness, T0 + 3 * 3600)
    harness.script.refuse_reports = None
    answered = _skew_refusals(harness, refused[-1] + 3600)
    harness.script.refuse_reports = ErrorCode.CLOCK_SKEW
    changed = answered[-1] + 10
    harness.usage({TAG: 4}, changed)
    again = _skew_refusals(harness, changed + 600)
    assert 6 <= len(refused)
    assert 30 <= again[1] - again[0] <= 60


def test_a_broker_outage_of_any_length_loses_no_report() -> None:
    harness = registered()
    core = harness.core
    harness.run(core.disconnected(T0 + 1), T0 + 1)
    for n in range(1, 5):
        harness.usage({TAG: n}, T0 + 86_400 * n)
        harness.tick(T0 + 86_400 * n + 10)
    back = T0 + 30 * 86_400
    harness.run(core.connected(back), back)
    assert (0, {TAG: 4}) == (
        core.outbox_depth,
        dict(harness.script.latest_counts[core.device_id]),
    )


def test_a_full_window_waits_for_a_puback_not_for_a_timer() -> None:
    """No busy loop: with the window full, the next timer is not "now"."""
    core = new_core(CoreSettings(window=1))
    harness = Harness(core)
    harness.start()
    harness.register()
    harness.run(core.disconnected(T0 + 1), T0 + 1)
    for n in range(1, 3):
        harness.usage({TAG: n}, T0 + 100 * n)
        harness.tick(T0 + 100 * n + 10)
    core.connected(T0 + 1000)
    timer = core.next_timer()
    assert timer is not None
    assert timer > T0 + 1000


def test_when_idle_the_next_timer_is_the_checkpoint_or_the_next_report() -> None:
    harness = registered(CoreSettings(checkpoint_interval=600.0, max_clock_step=None))
    assert T0 + 600 == harness.core.next_timer()


def test_when_idle_the_next_timer_is_within_half_the_max_clock_step() -> None:
    """So that the use clock, which credits at most max_clock_step a step, misses nothing."""
    harness = registered(CoreSettings(checkpoint_interval=600.0, max_clock_step=300.0))
    assert T0 + 150 == harness.core.next_timer()


def test_a_collector_that_keeps_refusing_as_replayed_is_not_hammered() -> None:
    harness = registered(CoreSettings(seq_jump=1, retry_base=30.0))
    harness.script.last_seq[harness.core.device_id] = 10**9
    harness.usage({TAG: 3}, T0 + 100)
    harness.tick(T0 + 106)
    harness.tick(T0 + 107)
    queued = of_type(harness.actions, ReportQueued)
    assert 3 == len(queued)


def test_tags_dropped_beyond_a_reports_capacity_are_zeroed_in_a_later_report() -> None:
    """60 tags in use, then 10 others: the 60 zeros cannot all ride along at once."""
    harness = registered()
    old = {f"old-{n}": 1 for n in range(60)}
    new = {f"new-{n}": 1 for n in range(10)}
    harness.usage(old, T0 + 100)
    harness.tick(T0 + 110)
    harness.usage(new, T0 + 200)
    first = of_type(harness.tick(T0 + 210), ReportQueued)
    harness.usage(new | {"new-0": 2}, T0 + 300)
    second = of_type(harness.tick(T0 + 310), ReportQueued)
    zeroed = [
        {t for t, n in q.counts.items() if t.startswith("old-") and n == 0}
        for q in (*first, *second)
    ]
    assert (64, 60) == (len(first[0].counts), len(zeroed[0] | zeroed[1]))


def test_without_a_window_the_core_needs_no_pubacks() -> None:
    """window=None: the transport bounds and retransmits; the core only retries on timers."""
    harness = Harness(new_core(CoreSettings(window=None)), ack=False)
    harness.script.entitled = {TAG: 10}
    harness.start()
    harness.register()
    harness.run(harness.core.disconnected(T0 + 1), T0 + 1)
    harness.usage({TAG: 3}, T0 + 100)
    harness.tick(T0 + 110)
    harness.run(harness.core.connected(T0 + 120), T0 + 120)
    again = of_type(harness.run(harness.core.connected(T0 + 130), T0 + 130), Publish)
    assert (LicenseState.AUTHORIZED, 0, []) == (
        harness.core.state,
        harness.core.outbox_depth,
        again,
    )


def test_a_zero_compacted_away_offline_is_stated_again_by_the_reports_after_it() -> None:
    """A tag given up while offline is reported as 0 once; if that report is compacted away
    before it is sent, the collector would keep counting the tag forever. Every report queued
    while a zero is still unanswered in the outbox states the zero too."""
    harness = registered(CoreSettings(outbox_limit=2))
    harness.usage({TAG: 1, "dna-essentials": 1}, T0 + 100)
    harness.tick(T0 + 110)
    harness.run(harness.core.disconnected(T0 + 150), T0 + 150)
    for n, at in enumerate((T0 + 200, T0 + 300, T0 + 400), start=2):
        harness.usage({TAG: n}, at)
        harness.tick(at + 10)
    harness.sent.clear()
    harness.run(harness.core.connected(T0 + 500), T0 + 500)
    stated = [dict(report_of(p).counts) for p in harness.sent]
    assert [{TAG: 3, "dna-essentials": 0}, {TAG: 4, "dna-essentials": 0}] == stated
