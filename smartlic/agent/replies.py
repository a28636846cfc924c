"""Answers in: what an accepted collector message does to the device.

:func:`~smartlic.agent.notices.judge` has already decided that the message is signed, addressed
to this device and relevant; here it takes effect. A registration result pins the collector key;
an answer retires its report (and every older one); a fresh notice — an answer or a push —
moves the state machine and sets the validity end and the next report time; ``NOT_REGISTERED``
returns the device to evaluation. A stale answer (old ``notice_seq``) only clears the outbox.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Final

from smartlic.agent.actions import (
    Deregistered,
    DeregistrationRefused,
    NoticeApplied,
    RegistrationRefused,
    RegistrationSucceeded,
    ReportAnswered,
)
from smartlic.agent.device import Device
from smartlic.agent.notices import Relevance
from smartlic.agent.retry import backoff_delay, unit_interval
from smartlic.agent.snapshot import StoredTag
from smartlic.agent.states import LicenseEvent
from smartlic.protocol import (
    Authorization,
    DeregistrationResult,
    ErrorCode,
    ErrorNotice,
    OutOfComplianceNotice,
    RegistrationResult,
)

if TYPE_CHECKING:
    from smartlic.agent.actions import Action
    from smartlic.agent.notices import Accepted
    from smartlic.protocol import CollectorMessage, VerifyingKey

DEREGISTERING: Final = frozenset({ErrorCode.NOT_REGISTERED, ErrorCode.UNKNOWN_DEVICE})
"""Refusals that mean the collector no longer has this device registered."""
_MAX_JUMP_DOUBLINGS: Final = 20


class Replies(Device):
    __slots__ = ()

    def _accept(self, verdict: Accepted, now: float, out: list[Action]) -> None:
        message, relevance = verdict.message, verdict.relevance
        if self._refused_for_waiting(message, relevance, now):
            return
        if relevance is Relevance.REGISTRATION:
            self._registration_answered(message, verdict.collector_key, now, out)
        elif relevance is Relevance.DEREGISTRATION:
            self._deregistration_answered(message, now, out)
        else:
            if relevance is not Relevance.PUSHED:
                self._report_answered(message, now, out, fresh=relevance is Relevance.ANSWER)
            if relevance is not Relevance.STALE_ANSWER:
                self._apply(message, now, out)

    def _report_answered(
        self, message: CollectorMessage, now: float, out: list[Action], *, fresh: bool
    ) -> None:
        if isinstance(message, RegistrationResult | DeregistrationResult):
            return
        seq = message.in_reply_to
        if not isinstance(seq, int):
            return
        entry, older = self._outbox.answered(seq)
        if entry is None:
            return
        for old in older:
            self._dropped(old, f"superseded: report {seq} was answered", now, out)
        code = message.code if isinstance(message, ErrorNotice) else None
        self._last_answer_at = now
        self._dirty = True
        self.counters.reports_answered += 1
        out.append(
            ReportAnswered(
                seq=seq,
                created_at=entry.created_at,
                first_sent_at=entry.first_sent_at,
                answered_at=now,
                answer=message.message_type,
                notice_seq=message.notice_seq,
                applied=fresh,
                code=code,
            )
        )
        was_latest = len(self._outbox) == 0
        if code is ErrorCode.REPLAYED and was_latest:
            # The collector has accepted a higher seq than ours: state restored from an old
            # copy. Jump ahead, doubling each time it happens again, and report afresh.
            s = self._settings
            self._next_seq += s.seq_jump << min(self._seq_jumps, _MAX_JUMP_DOUBLINGS)
            self._seq_jumps += 1
            # Report again at once the first time; back off if the collector keeps refusing.
            delay = 0.0
            if self._seq_jumps > 1:
                unit = unit_interval(self._entropy)
                delay = backoff_delay(
                    self._seq_jumps - 2, base=s.retry_base, cap=s.retry_cap, unit=unit
                )
            self._next_report = self._clock.after(delay, now)
        elif code is ErrorCode.CLOCK_SKEW and was_latest:
            # Each report is new (attempt 1), so the backoff counts the refusals in a row: a
            # clock that stays wrong is tried less and less often, up to retry_cap, not every
            # minute for ever.
            s = self._settings
            self._skew_refusals += 1
            unit = unit_interval(self._entropy)
            delay = backoff_delay(
                self._skew_refusals, base=s.retry_base, cap=s.retry_cap, unit=unit
            )
            self._next_report = self._clock.after(delay, now)

    def _apply(self, message: CollectorMessage, now: float, out: list[Action]) -> None:
        """Act on a fresh notice (answer or push); its ``notice_seq`` becomes the last one."""
        self._last_notice_seq = message.notice_seq
        self._dirty = True
        self.counters.notices_applied += 1
        if isinstance(message, ErrorNotice):
            out.append(
                NoticeApplied(
                    kind=message.message_type,
                    notice_seq=message.notice_seq,
                    in_reply_to=message.in_reply_to,
                    at=now,
                    code=message.code,
                )
            )
            if message.code in DEREGISTERING and self._state.registered:
                self._become_unregistered(now, out, by_collector=True)
            return
        if not isinstance(message, Authorization | OutOfComplianceNotice):
            return
        clock = self._clock
        self._virtual_account = message.virtual_account
        self._tags = {
            tag: StoredTag(in_use=c.in_use, entitled=c.entitled) for tag, c in message.tags.items()
        }
        self._last_nonce = message.nonce
        self._authorization = clock.at(
            message.valid_until, span=message.valid_until - message.issued_at
        )
        self._next_report = clock.at(
            message.next_report_at, span=message.next_report_at - message.issued_at
        )
        self._last_answer_at = now
        self._seq_jumps = self._skew_refusals = 0
        out.append(
            NoticeApplied(
                kind=message.message_type,
                notice_seq=message.notice_seq,
                in_reply_to=message.in_reply_to,
                at=now,
            )
        )
        authorized = isinstance(message, Authorization)
        self._move(
            LicenseEvent.AUTHORIZATION_RECEIVED
            if authorized
            else LicenseEvent.OUT_OF_COMPLIANCE_RECEIVED,
            now,
            out,
        )
        if clock.reached(self._authorization, now):
            self._move(LicenseEvent.VALIDITY_ENDED, now, out)

    def _refused_for_waiting(
        self, message: CollectorMessage, relevance: Relevance, now: float
    ) -> bool:
        """Whether a clock-skew refusal of the pending request is set aside, not given up.

        Copies re-sent after a while carry a fresh issue time but the same request id, so a
        refusal is first taken for an older copy's, which waited (in the broker, for a
        collector that was down), while a fresh copy's answer is still to come. One that can
        only be the current copy's is set aside too when that copy has itself grown stale
        (it is sent again, signed afresh); only a fresh copy refused means a wrong clock.
        """
        if (
            self._pending is None
            or relevance not in {Relevance.REGISTRATION, Relevance.DEREGISTRATION}
            or not isinstance(message, ErrorNotice)
            or message.code is not ErrorCode.CLOCK_SKEW
        ):
            return False
        if self._pending.older_copies > 0:
            self._pending = dataclasses.replace(
                self._pending, older_copies=self._pending.older_copies - 1
            )
            self._dirty = True
            return True
        if self._stale_request(now) is None:
            return False
        self._pending_in_flight = self._pending_acked = False
        self._dirty = True
        return True

    def _registration_answered(
        self, message: CollectorMessage, key: VerifyingKey, now: float, out: list[Action]
    ) -> None:
        self._set_pending(None)
        if isinstance(message, ErrorNotice):
            out.append(RegistrationRefused(code=message.code, message=message.message, at=now))
            return
        if not isinstance(message, RegistrationResult):
            return
        self._collector_key = key
        self._smart_account = message.smart_account
        self._virtual_account = message.virtual_account
        self._report_interval = message.report_interval
        self._registered_at = now
        self._last_notice_seq = message.notice_seq
        self._last_nonce = None
        self._tags = {}
        self._authorization = None
        self._skew_refusals = 0
        self._next_report = self._clock.after(0, now)
        self._move(LicenseEvent.REGISTRATION_ACCEPTED, now, out)
        out.append(
            RegistrationSucceeded(
                smart_account=message.smart_account,
                virtual_account=message.virtual_account,
                collector_fingerprint=key.fingerprint,
                at=now,
            )
        )

    def _deregistration_answered(
        self, message: CollectorMessage, now: float, out: list[Action]
    ) -> None:
        if isinstance(message, ErrorNotice) and message.code not in DEREGISTERING:
            self._set_pending(None)
            out.append(DeregistrationRefused(code=message.code, message=message.message, at=now))
            return
        if self._state.registered:
            self._become_unregistered(now, out, by_collector=False)

    def _become_unregistered(self, now: float, out: list[Action], *, by_collector: bool) -> None:
        for entry in self._outbox.clear():
            self._dropped(entry, "deregistered", now, out)
        self._set_pending(None)
        self._collector_key = None
        self._smart_account = self._virtual_account = None
        self._report_interval = None
        self._registered_at = None
        self._authorization = self._next_report = self._usage_due = None
        self._usage_since = None
        self._tags = {}
        self._reported = {}
        self._last_nonce = None
        self._last_notice_seq = 0
        spent = self._evaluation_used >= self._settings.evaluation_period
        event = LicenseEvent.DEREGISTERED_EVALUATION_SPENT if spent else LicenseEvent.DEREGISTERED
        self._move(event, now, out)
        out.append(Deregistered(by_collector=by_collector, at=now))
