"""Per-target figures of a run, side by side: pass rate, p50 / p95 latency, tokens/s, errors."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .runner import CaseResult

__all__ = ["TargetSummary", "compare_table", "percentile", "summarize"]


@dataclass(frozen=True, slots=True)
class TargetSummary:
    target: str
    cases: int
    passed: int
    failed: int  # answered, scored, not passed
    errors: int  # no scorable answer (HTTP error, timeout, malformed)
    p50_ms: float | None
    p95_ms: float | None
    tokens_per_s: float | None  # mean over answered cases that reported it
    startup_waits: int
    saturation_retries: int
    served: str  # model@host pairs that answered

    @property
    def pass_rate(self) -> float:
        return self.passed / self.cases if self.cases else 0.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))
    return s[k]


def summarize(cases: Iterable[CaseResult]) -> list[TargetSummary]:
    by: dict[str, list[CaseResult]] = {}
    for c in cases:
        by.setdefault(c.target, []).append(c)
    out = []
    for target, cs in by.items():
        answered = [c for c in cs if c.error is None]
        lat = [c.latency_ms for c in answered]
        tps = [c.tokens_per_s for c in answered if c.tokens_per_s]
        served = sorted({f"{c.served_model}@{c.served_host}" for c in cs if c.served_model})
        out.append(
            TargetSummary(
                target=target,
                cases=len(cs),
                passed=sum(1 for c in cs if c.success),
                failed=sum(1 for c in answered if not c.success),
                errors=len(cs) - len(answered),
                p50_ms=percentile(lat, 50),
                p95_ms=percentile(lat, 95),
                tokens_per_s=sum(tps) / len(tps) if tps else None,
                startup_waits=sum(c.startup_waits for c in cs),
                saturation_retries=sum(c.saturation_retries for c in cs),
                served=", ".join(served),
            )
        )
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def compare_table(rows: Sequence[TargetSummary]) -> list[list[str]]:
    """Header + one row per target, as text cells (the CLI, Markdown and the console all show these)."""
    head = ["target", "pass", "rate", "p50", "p95", "tok/s", "errors", "waits", "429 retries", "served by"]
    body = [
        [
            r.target,
            f"{r.passed}/{r.cases}",
            f"{r.pass_rate:.0%}",
            _ms(r.p50_ms),
            _ms(r.p95_ms),
            "-" if r.tokens_per_s is None else f"{r.tokens_per_s:.1f}",
            str(r.errors),
            str(r.startup_waits),
            str(r.saturation_retries),
            r.served or "-",
        ]
        for r in rows
    ]
    return [head, *body]
