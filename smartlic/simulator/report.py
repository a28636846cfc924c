"""The end of a run: one report, printed for people and written as JSON for machines.

The JSON keys the issue names (``devices``, ``reports_sent``, ``reports_answered``,
``reports_lost``, ``reports_double_counted``, ``hostile_sent``, ``hostile_accepted``,
``throughput_rps``, ``latency_ms`` with ``p50``/``p95``/``p99``, ``states``) are always at the
top level; the rest adds detail. ``ok`` is false, and the exit status 1, when a report was
lost or double-counted, committed usage went stale, a hostile message was accepted, or the
story did not see what it expected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from smartlic.simulator.checks import Verdict
    from smartlic.simulator.metrics import LatencySummary
    from smartlic.simulator.stories.base import Expectation


@dataclass(slots=True, kw_only=True)
class RunReport:
    scenario: str
    story: str
    parameters: dict[str, object]
    broker: str
    protocol: str
    devices: int
    connect_seconds: float
    connected: int
    reports_sent: int
    reports_answered: int
    verdict: Verdict
    checked_committed: bool
    throughput_rps: float
    latency: LatencySummary | None
    phases: dict[str, object]
    states: dict[str, int]
    hostile: dict[str, tuple[int, int]]
    expectations: list[Expectation]
    extra: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    @property
    def connect_rate(self) -> float:
        return self.connected / self.connect_seconds if self.connect_seconds > 0 else 0.0

    @property
    def hostile_sent(self) -> int:
        return sum(sent for sent, _ in self.hostile.values())

    @property
    def hostile_accepted(self) -> int:
        return sum(accepted for _, accepted in self.hostile.values())

    def failures(self) -> list[str]:
        verdict, found = self.verdict, []
        if verdict.lost:
            found.append(f"{verdict.lost} report(s) lost")
        if verdict.double_counted:
            found.append(f"{verdict.double_counted} report(s) double-counted")
        if verdict.stale_usage:
            found.append(f"{verdict.stale_usage} device(s) with stale committed usage")
        if self.hostile_accepted:
            found.append(f"{self.hostile_accepted} hostile message(s) accepted")
        found += [f"expected: {e}" for e in self.expectations if not e.met]
        return found

    @property
    def ok(self) -> bool:
        return not self.failures()

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def as_json(self) -> dict[str, object]:
        verdict = self.verdict
        latency = (
            self.latency.as_dict() if self.latency else {"p50": None, "p95": None, "p99": None}
        )
        return {
            "scenario": self.scenario,
            "story": self.story,
            "ok": self.ok,
            "failures": self.failures(),
            "devices": self.devices,
            "reports_sent": self.reports_sent,
            "reports_answered": self.reports_answered,
            "reports_lost": verdict.lost,
            "reports_double_counted": verdict.double_counted if self.checked_committed else None,
            "double_counted_detail": verdict.detail() if self.checked_committed else None,
            "stale_usage": verdict.stale_usage if self.checked_committed else None,
            "hostile_sent": self.hostile_sent,
            "hostile_accepted": self.hostile_accepted,
            "hostile": {k: {"sent": s, "accepted": a} for k, (s, a) in self.hostile.items()},
            "throughput_rps": round(self.throughput_rps, 1),
            "latency_ms": latency,
            "states": self.states,
            "connect": {
                "devices": self.connected,
                "seconds": round(self.connect_seconds, 3),
                "rate_per_s": round(self.connect_rate, 1),
            },
            "phases": self.phases,
            "expectations": [
                {"what": e.what, "met": e.met, "detail": e.detail} for e in self.expectations
            ],
            "examples": verdict.examples,
            "broker": self.broker,
            "protocol": self.protocol,
            "duration_s": round(self.duration_s, 2),
            "parameters": self.parameters,
            **self.extra,
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n", encoding="utf-8")

    def render(self) -> str:
        v, p = self.verdict, self.parameters
        checked = (
            f" · double-counted {v.double_counted} · stale {v.stale_usage}"
            if self.checked_committed
            else " · double-counting not checked (no --db)"
        )
        lines = [
            (
                f"smartlic-sim {self.scenario}: {self.devices:,} devices, {self.duration_s:.1f} s"
                f" at x{p.get('time_scale', 1):g} virtual time"
                f" ({self.broker}, MQTT {self.protocol})"
            ),
            (
                f"  connections   {self.connected:,} in {self.connect_seconds:.2f} s"
                f" ({self.connect_rate:,.0f}/s)"
            ),
            (
                f"  reports       sent {self.reports_sent:,} · answered {self.reports_answered:,}"
                f" · lost {v.lost}{checked}"
            ),
            f"  throughput    {self.throughput_rps:,.1f} reports/s (main part)",
        ]
        if self.latency is not None:
            lat = self.latency
            lines.append(
                f"  latency       p50 {lat.p50:.1f} ms · p95 {lat.p95:.1f} ms · p99 {lat.p99:.1f}"
                f" ms (max {lat.max:.1f} ms, {lat.count:,} answers)"
            )
        lines.append(
            "  states        "
            + ", ".join(f"{name} {n:,}" for name, n in sorted(self.states.items()))
        )
        if self.hostile:
            kinds = ", ".join(f"{k} {s}/{a}" for k, (s, a) in sorted(self.hostile.items()))
            lines.append(
                f"  hostile       sent {self.hostile_sent} · accepted {self.hostile_accepted}"
                f" (sent/accepted: {kinds})"
            )
        for key in ("pushes", "refused"):
            values = self.extra.get(key)
            if values:
                text = ", ".join(f"{k} {n:,}" for k, n in sorted(values.items()))
                lines.append(f"  {key:<13} {text}")
        lines += [f"  ! {example}" for example in v.examples]
        failures = self.failures()
        lines.append(
            "  result        " + ("PASS" if not failures else "FAIL: " + "; ".join(failures))
        )
        return "\n".join(lines)
