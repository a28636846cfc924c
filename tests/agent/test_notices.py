"""Notices: only signed, addressed, relevant and fresh collector messages are acted on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent_support import T0, UDI, Harness, new_core, of_type
from scripted_collector import CollectorScript, collector_key
from smartlic.agent.actions import (
    Deregistered,
    NoticeIgnored,
    RegistrationRefused,
    ReportAnswered,
    StateChanged,
)
from smartlic.agent.core import CoreSettings
from smartlic.agent.states import LicenseState
from smartlic.protocol import (
    Authorization,
    ErrorCode,
    OutOfComplianceNotice,
    TagCompliance,
    Udi,
    UsageReport,
    device_aad,
    encode_payload,
    seal,
    sign1,
)

if TYPE_CHECKING:
    from smartlic.agent.actions import Action

TAG = "network-advantage"
DEVICE = UDI.device_id
OTHER = Udi.parse("C9300-24T:FOC999").device_id
FORGER_SEED = bytes(range(200, 232))


def authorized() -> Harness:
    harness = Harness(new_core())
    harness.script.entitled = {TAG: 10}
    harness.start()
    harness.usage({TAG: 2}, T0)
    harness.register(T0 + 1)
    assert LicenseState.AUTHORIZED is harness.core.state
    return harness


def ooc(
    *,
    notice_seq: int,
    in_reply_to: int | None = None,
    device_id: str = DEVICE,
    now: int = int(T0) + 50,
) -> OutOfComplianceNotice:
    return OutOfComplianceNotice(
        device_id=device_id,
        notice_seq=notice_seq,
        issued_at=now,
        in_reply_to=in_reply_to,
        virtual_account="Default",
        valid_until=now + 86_400,
        next_report_at=now + 3600,
        nonce=bytes(16),
        tags={TAG: TagCompliance(in_use=12, entitled=10)},
    )


def ignored(actions: list[Action]) -> list[str]:
    return [a.reason for a in of_type(actions, NoticeIgnored)]


def deliver(harness: Harness, payload: bytes, now: float = T0 + 60) -> list[Action]:
    return harness.receive((harness.core.downlink, payload), now)


def test_a_pushed_out_of_compliance_notice_moves_the_device_out_of_compliance() -> None:
    harness = authorized()
    seq = harness.script.notice_seq[DEVICE] + 1
    changes = of_type(deliver(harness, seal(ooc(notice_seq=seq), collector_key())), StateChanged)
    assert [LicenseState.OUT_OF_COMPLIANCE] == [c.state for c in changes]


def test_a_notice_signed_by_another_key_is_ignored() -> None:
    harness = authorized()
    forger = collector_key(FORGER_SEED)
    seq = harness.script.notice_seq[DEVICE] + 1
    reasons = ignored(deliver(harness, seal(ooc(notice_seq=seq), forger)))
    assert (LicenseState.AUTHORIZED, True) == (
        harness.core.state,
        any("signature refused" in r for r in reasons),
    )


def test_a_notice_addressed_to_another_device_is_ignored() -> None:
    harness = authorized()
    notice = ooc(notice_seq=99, device_id=OTHER)
    reasons = ignored(deliver(harness, seal(notice, collector_key())))
    assert [f"addressed to {OTHER}, not to this device"] == reasons


def test_a_notice_signed_for_another_device_but_naming_this_one_is_ignored() -> None:
    """The device id is bound as external AAD: the signature covers who it is for."""
    harness = authorized()
    notice = ooc(notice_seq=99)
    payload = sign1(encode_payload(notice), collector_key(), external_aad=device_aad(OTHER))
    reasons = ignored(deliver(harness, payload))
    assert LicenseState.AUTHORIZED is harness.core.state
    assert ["signature refused"] == [r.split(":")[0] for r in reasons]


def test_a_replayed_old_pushed_notice_is_ignored() -> None:
    harness = authorized()
    seq = harness.script.next_notice_seq(DEVICE)
    old = seal(ooc(notice_seq=seq), collector_key())
    deliver(harness, old)
    newer = harness.script.compliance(DEVICE, int(T0) + 70, in_reply_to=None)
    deliver(harness, seal(newer, collector_key()), T0 + 70)
    reasons = ignored(deliver(harness, old, T0 + 80))
    assert LicenseState.AUTHORIZED is harness.core.state
    assert [f"pushed notice {seq} is not newer than {seq + 1} (replayed or out of date)"] == (
        reasons
    )


def test_unsigned_garbage_is_ignored() -> None:
    harness = authorized()
    reasons = ignored(deliver(harness, b"\xa1\x01\x02 definitely not COSE"))
    assert 1 == len(reasons)
    assert reasons[0].startswith("unreadable message")


def test_a_message_on_another_topic_is_ignored() -> None:
    harness = authorized()
    notice = seal(ooc(notice_seq=99), collector_key())
    reasons = ignored(harness.receive(("smartlic/v1/d/other/down", notice), T0 + 60))
    assert ["arrived on 'smartlic/v1/d/other/down', not this device's downlink"] == reasons


def test_a_device_message_echoed_on_the_downlink_is_ignored() -> None:
    harness = authorized()
    report = UsageReport(device_id=DEVICE, seq=9, issued_at=int(T0), period=0, counts={})
    reasons = ignored(deliver(harness, seal(report, collector_key())))
    assert ["a USAGE_REPORT is not a collector message"] == reasons


def test_an_answer_to_a_report_not_in_the_outbox_is_ignored() -> None:
    harness = authorized()
    notice = seal(ooc(notice_seq=99, in_reply_to=77), collector_key())
    assert ["answers report 77, which is not in the outbox"] == ignored(deliver(harness, notice))


def test_a_stale_stored_answer_clears_its_report_without_rolling_state_back() -> None:
    """The collector re-sends a stored answer with its old notice_seq: outbox yes, state no."""
    harness = authorized()
    harness.deliver = False
    harness.usage({TAG: 3}, T0 + 100)
    harness.tick(T0 + 106)
    ((_, stored_authorization),) = harness.held
    harness.held = []
    newer = harness.script.next_notice_seq(DEVICE)
    deliver(harness, seal(ooc(notice_seq=newer), collector_key()), T0 + 110)
    answers = of_type(deliver(harness, stored_authorization, T0 + 120), ReportAnswered)
    assert (LicenseState.OUT_OF_COMPLIANCE, 0, [False]) == (
        harness.core.state,
        harness.core.outbox_depth,
        [a.applied for a in answers],
    )


def test_a_pushed_not_registered_returns_the_device_to_evaluation() -> None:
    harness = authorized()
    actions = harness.receive(harness.script.push_not_registered(DEVICE, T0 + 60), T0 + 60)
    assert (LicenseState.EVALUATION, [True], None) == (
        harness.core.state,
        [d.by_collector for d in of_type(actions, Deregistered)],
        harness.core.collector_key,
    )


def test_notices_before_registration_are_ignored() -> None:
    harness = Harness(new_core())
    harness.start()
    notice = seal(ooc(notice_seq=1), collector_key())
    reasons = ignored(deliver(harness, notice))
    assert ["a OUT_OF_COMPLIANCE, but no collector key is pinned"] == reasons


def test_a_first_reply_from_a_key_other_than_the_tokens_is_ignored() -> None:
    """A broker (or anyone on it) answering with its own key cannot capture the device."""
    impostor = CollectorScript(key=collector_key(FORGER_SEED))
    harness = Harness(new_core(), script=impostor)
    harness.start()
    genuine = CollectorScript().token()
    actions = harness.run(harness.core.register(genuine, T0), T0)
    assert (LicenseState.EVALUATION, None, True) == (
        harness.core.state,
        harness.core.collector_key,
        any("token's fingerprint" in r for r in ignored(actions)),
    )


def test_a_refused_registration_says_why() -> None:
    harness = Harness(new_core())
    harness.script.refuse_registration = ErrorCode.TOKEN_EXPIRED
    harness.start()
    refusals = of_type(harness.register(), RegistrationRefused)
    assert ([ErrorCode.TOKEN_EXPIRED], None) == (
        [r.code for r in refusals],
        harness.core.pending,
    )


def test_the_registration_pins_the_collector_key() -> None:
    harness = authorized()
    key = harness.core.collector_key
    assert key is not None
    assert collector_key().public.fingerprint == key.fingerprint


def test_deregistration_returns_the_device_to_evaluation() -> None:
    harness = authorized()
    actions = harness.run(harness.core.deregister(T0 + 100), T0 + 100)
    assert (LicenseState.EVALUATION, [False]) == (
        harness.core.state,
        [d.by_collector for d in of_type(actions, Deregistered)],
    )


def test_deregistration_after_the_evaluation_was_spent_expires_it() -> None:
    harness = Harness(new_core(CoreSettings(evaluation_period=100.0, max_clock_step=None)))
    harness.script.entitled = {TAG: 10}
    harness.start()
    harness.tick(T0 + 200)
    harness.register(T0 + 201)
    harness.run(harness.core.deregister(T0 + 300), T0 + 300)
    assert LicenseState.EVALUATION_EXPIRED is harness.core.state


def test_an_authorization_from_the_collector_after_ooc_restores_authorized() -> None:
    harness = authorized()
    seq = harness.script.next_notice_seq(DEVICE)
    deliver(harness, seal(ooc(notice_seq=seq), collector_key()))
    fresh = harness.script.compliance(DEVICE, int(T0) + 90, in_reply_to=None)
    assert isinstance(fresh, Authorization)
    deliver(harness, seal(fresh, collector_key()), T0 + 90)
    assert LicenseState.AUTHORIZED is harness.core.state
