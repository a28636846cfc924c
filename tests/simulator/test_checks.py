"""The verdicts: lost and double-counted reports, stale usage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartlic.simulator.checks import (
    Committed,
    DeviceFacts,
    expected_counts,
    judge,
    lost_reports,
    merge_counts,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

ADV = "network-advantage"


def facts(
    *,
    sent: Mapping[int, tuple[int, Mapping[str, int]]] | None = None,
    answered: frozenset[int] = frozenset({1, 2}),
    max_answered: int = 2,
    abandoned: frozenset[int] = frozenset(),
    mark: int | None = None,
    usage: Mapping[str, int] | None = None,
    registered: bool = True,
    va: str = "DEFAULT",
    device_id: str = "D:1",
) -> DeviceFacts:
    return DeviceFacts(
        device_id=device_id,
        registered=registered,
        va=va,
        usage={ADV: 2} if usage is None else usage,
        sent={1: (11, {ADV: 1}), 2: (22, {ADV: 2})} if sent is None else sent,
        answered=answered,
        max_answered=max_answered,
        abandoned=abandoned,
        mark=mark,
    )


def committed(**overrides: object) -> Committed:
    values: dict[str, object] = {
        "reports": {"D:1": {1: 11, 2: 22}},
        "counts": {"D:1": {ADV: 2}},
        "pools": {("DEFAULT", ADV): 2},
    }
    values.update(overrides)
    return Committed(**values)  # type: ignore[arg-type]  # keyword names are the fields


def test_a_report_names_the_tags_it_sets_and_a_zero_removes_one() -> None:
    assert {"b": 2, "c": 3} == merge_counts({"a": 1, "b": 1}, {"a": 0, "b": 2, "c": 3})


def test_an_answered_report_is_not_lost() -> None:
    assert [] == lost_reports(facts())


def test_a_report_never_answered_is_lost() -> None:
    assert [2] == lost_reports(facts(answered=frozenset({1}), max_answered=1))


def test_an_answer_to_a_newer_report_retires_the_older_ones() -> None:
    """Report 1 was never answered, but 2 was: 1 was superseded, not lost."""
    assert [] == lost_reports(facts(answered=frozenset({2}), max_answered=2))


def test_a_report_dropped_at_deregistration_is_abandoned_not_lost() -> None:
    lost = lost_reports(facts(max_answered=1, abandoned=frozenset({2})))
    assert [] == lost


def test_a_report_first_sent_during_the_drain_does_not_count() -> None:
    assert [] == lost_reports(facts(answered=frozenset({1}), max_answered=1, mark=1))


def test_an_error_answer_is_an_answer() -> None:
    """Refused (say REPLAYED) is answered: not in ``answered``, but up to ``max_answered``."""
    assert [] == lost_reports(facts(answered=frozenset({1}), max_answered=2))


def test_committed_state_matching_what_was_sent_is_not_double_counted() -> None:
    verdict = judge([facts()], committed())
    assert (0, 0, 0) == (verdict.lost, verdict.double_counted, verdict.stale_usage)


def test_an_accepted_report_the_device_never_sent_is_a_phantom() -> None:
    verdict = judge([facts()], committed(reports={"D:1": {1: 11, 2: 22, 3: 33}}))
    assert 1 == verdict.phantom_reports


def test_an_accepted_report_with_other_bytes_than_sent_is_a_phantom() -> None:
    verdict = judge([facts()], committed(reports={"D:1": {1: 11, 2: 99}}))
    assert 1 == verdict.phantom_reports


def test_a_report_answered_as_accepted_without_a_row_is_unrecorded() -> None:
    verdict = judge([facts()], committed(reports={"D:1": {2: 22}}))
    assert 1 == verdict.unrecorded_answers


def test_committed_counts_other_than_the_accepted_reports_say_are_a_device_mismatch() -> None:
    verdict = judge([facts()], committed(counts={"D:1": {ADV: 4}}))
    assert (1, 1) == (verdict.device_mismatches, verdict.double_counted)


def test_a_pool_counter_other_than_its_devices_sum_is_a_pool_mismatch() -> None:
    verdict = judge([facts()], committed(pools={("DEFAULT", ADV): 3}))
    assert 1 == verdict.pool_mismatches


def test_a_pool_is_expected_where_the_simulator_put_the_device() -> None:
    """Moved to Engineering: its counts belong there, not in DEFAULT."""
    verdict = judge([facts(va="Engineering")], committed())
    assert 2 == verdict.pool_mismatches


def test_a_deregistered_device_must_have_no_counts() -> None:
    verdict = judge([facts(registered=False)], committed(pools={}))
    assert 1 == verdict.device_mismatches


def test_committed_counts_other_than_the_devices_usage_are_stale() -> None:
    verdict = judge([facts(usage={ADV: 3})], committed())
    assert (1, 0) == (verdict.stale_usage, verdict.double_counted)


def test_expected_counts_fold_the_accepted_reports_in_sequence_order() -> None:
    device = facts(sent={1: (1, {ADV: 1, "x": 1}), 2: (2, {ADV: 2, "x": 0}), 3: (3, {ADV: 3})})
    assert {ADV: 3} == expected_counts(device, [3, 1, 2])


def test_without_the_committed_state_only_lost_reports_are_judged() -> None:
    verdict = judge([facts(answered=frozenset({1}), max_answered=1)], None)
    assert (1, 0) == (verdict.lost, verdict.double_counted)
