"""What ``smartlic-agent status`` shows, computed from a snapshot alone (no key, no broker)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smartlic.agent.snapshot import collector_key_from
from smartlic.agent.states import LicenseState
from smartlic.protocol import format_fingerprint

if TYPE_CHECKING:
    from collections.abc import Mapping

    from smartlic.agent.snapshot import Snapshot
    from smartlic.agent.timekeeping import Deadline


@dataclass(frozen=True, slots=True, kw_only=True)
class TagStatus:
    count: int
    status: str
    """``evaluation``, ``evaluation-expired``, ``pending`` (no answer covers it yet),
    ``in-compliance``, ``out-of-compliance`` or ``authorization-expired``."""
    in_use: int | None = None
    entitled: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStatus:
    udi: str
    state: LicenseState
    smart_account: str | None
    virtual_account: str | None
    collector_fingerprint: str | None
    tags: Mapping[str, TagStatus]
    evaluation_remaining: float | None
    authorization_expires: float | None
    next_report_at: float | None
    last_report_at: float | None
    last_answer_at: float | None
    outbox: int
    pending: str | None
    """``register`` or ``deregister`` while such a request awaits its answer."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "udi": self.udi,
            "state": self.state.value,
            "smart_account": self.smart_account,
            "virtual_account": self.virtual_account,
            "collector_fingerprint": self.collector_fingerprint,
            "tags": {
                tag: {
                    "count": t.count,
                    "status": t.status,
                    "in_use": t.in_use,
                    "entitled": t.entitled,
                }
                for tag, t in sorted(self.tags.items())
            },
            "evaluation_remaining": _rounded(self.evaluation_remaining),
            "authorization_expires": _rounded(self.authorization_expires),
            "next_report_at": _rounded(self.next_report_at),
            "last_report_at": _rounded(self.last_report_at),
            "last_answer_at": _rounded(self.last_answer_at),
            "outbox": self.outbox,
            "pending": self.pending,
        }

    def render(self) -> str:
        """The human form: aligned ``key: value`` lines, times in UTC."""
        lines = [
            ("UDI", self.udi),
            ("state", self.state.value),
            ("smart account", self.smart_account or "-"),
            ("virtual account", self.virtual_account or "-"),
            ("collector key", self.collector_fingerprint or "-"),
        ]
        if self.evaluation_remaining is not None:
            lines.append(("evaluation left", f"{self.evaluation_remaining / 86400:.1f} days"))
        lines += [
            ("authorized until", _when(self.authorization_expires)),
            ("next report", _when(self.next_report_at)),
            ("last report", _when(self.last_report_at)),
            ("last answer", _when(self.last_answer_at)),
            ("outbox", f"{self.outbox} report(s) awaiting an answer"),
        ]
        if self.pending:
            lines.append(("pending", f"{self.pending} request awaiting the collector's answer"))
        width = max(len(k) for k, _ in lines)
        text = [f"{k + ':':<{width + 1}} {v}" for k, v in lines]
        text.append("tags:" if self.tags else "tags: none reported")
        for tag, t in sorted(self.tags.items()):
            extra = "" if t.entitled is None else f" (pool: {t.in_use} in use / {t.entitled})"
            text.append(f"  {tag}: {t.count} {t.status}{extra}")
        return "\n".join(text)


_VALID_STATES = (LicenseState.AUTHORIZED, LicenseState.OUT_OF_COMPLIANCE)


def _rounded(value: float | None) -> int | None:
    return None if value is None else round(value)


def _when(value: float | None) -> str:
    if value is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(value))


def _expires(deadline: Deadline | None, *, now: float, elapsed: float) -> float | None:
    if deadline is None:
        return None
    return min(deadline.wall, now + deadline.elapsed - elapsed)


def status_of(snapshot: Snapshot, *, now: float, evaluation_period: float) -> AgentStatus:
    """The status a snapshot describes, ``now`` being the wall time to measure from."""
    state = snapshot.state
    expires = _expires(snapshot.authorization, now=now, elapsed=snapshot.use_elapsed)
    if state in _VALID_STATES and expires is not None and expires <= now:
        # Saved while still valid by an agent that is not running now: what it would say.
        state = LicenseState.AUTHORIZATION_EXPIRED
    tags: dict[str, TagStatus] = {}
    for tag in sorted({*snapshot.usage, *snapshot.tags}):
        count = snapshot.usage.get(tag, 0)
        pool = snapshot.tags.get(tag)
        if not state.registered:
            status = state.value.lower().replace("_", "-")
        elif state is LicenseState.AUTHORIZATION_EXPIRED:
            status = "authorization-expired"
        elif pool is None:
            status = "pending"
        else:
            status = "out-of-compliance" if pool.in_use > pool.entitled else "in-compliance"
        tags[tag] = TagStatus(
            count=count,
            status=status,
            in_use=None if pool is None else pool.in_use,
            entitled=None if pool is None else pool.entitled,
        )
    key = snapshot.collector_key
    fingerprint = None
    if key is not None and snapshot.collector_key_type is not None:
        fingerprint = format_fingerprint(
            collector_key_from(snapshot.collector_key_type, key).fingerprint
        )
    return AgentStatus(
        udi=snapshot.udi,
        state=state,
        smart_account=snapshot.smart_account,
        virtual_account=snapshot.virtual_account,
        collector_fingerprint=fingerprint,
        tags=tags,
        evaluation_remaining=max(0.0, evaluation_period - snapshot.evaluation_used)
        if not state.registered
        else None,
        authorization_expires=expires
        if state in _VALID_STATES or state is LicenseState.AUTHORIZATION_EXPIRED
        else None,
        next_report_at=_expires(snapshot.next_report, now=now, elapsed=snapshot.use_elapsed)
        if state.registered
        else None,
        last_report_at=snapshot.last_report_at,
        last_answer_at=snapshot.last_answer_at,
        outbox=len(snapshot.outbox),
        pending=None if snapshot.pending is None else snapshot.pending.kind.value,
    )
