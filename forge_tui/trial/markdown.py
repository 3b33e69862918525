"""The scorecard as Markdown an operator can paste into a post."""

from __future__ import annotations

import datetime as dt

from .fmt import fmt_ms, fmt_pct
from .schema import Estimate, Rate, RoleCard, Scorecard, Side

__all__ = ["render_markdown"]


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _est(e: Estimate) -> str:
    if e.value is None:
        return "-"
    return f"{fmt_ms(e.value)} ({fmt_ms(e.low)}-{fmt_ms(e.high)})"


def _rate(r: Rate | None) -> str:
    if r is None or r.rate is None:
        return "-"
    return f"{fmt_pct(r.rate)} ({100 * (r.low or 0):.1f}-{100 * (r.high or 0):.1f}) of {r.total}"


def _num(v: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def _mem(s: Side) -> str:
    if s.memory_gb is None:
        return "-"
    share = f" ({fmt_pct(s.budget_share, 0)} of {s.host}'s budget)" if s.budget_share is not None else ""
    used = ""
    if s.host_used_gb is not None:
        used = f"; {s.host} uses {s.host_used_gb:.1f} of {s.host_budget_gb:g} GB now"
    return f"{s.memory_gb:g} GB{share}{used}"


def _rows(t: Side, b: Side) -> list[tuple[str, str, str]]:
    def errs(s: Side) -> str:
        return ", ".join(f"{k} {v}" for k, v in s.errors_by_class.items()) or "none"

    return [
        ("Requests", str(t.requests), str(b.requests)),
        ("Uses per hour", _num(t.per_hour), _num(b.per_hour)),
        ("Latency p50", _est(t.latency_ms.p50), _est(b.latency_ms.p50)),
        ("Latency p95", _est(t.latency_ms.p95), _est(b.latency_ms.p95)),
        ("Latency p99", _est(t.latency_ms.p99), _est(b.latency_ms.p99)),
        ("TTFT p50", _est(t.ttft_ms.p50), _est(b.ttft_ms.p50)),
        ("TTFT p95", _est(t.ttft_ms.p95), _est(b.ttft_ms.p95)),
        ("p95 idle backend", _est(t.load.idle_p95_ms), _est(b.load.idle_p95_ms)),
        ("p95 busy backend", _est(t.load.loaded_p95_ms), _est(b.load.loaded_p95_ms)),
        ("Output tok/s (mean)", _num(t.tokens_per_s), _num(b.tokens_per_s)),
        ("Error rate", _rate(t.errors), _rate(b.errors)),
        ("Errors by class", errs(t), errs(b)),
        ("Fallback", _rate(t.fallback), _rate(b.fallback)),
        ("Spill-over", _rate(t.spill), _rate(b.spill)),
        (
            "Cold starts",
            f"{t.cold_starts} (p50 {fmt_ms(t.cold_p50_ms)})",
            f"{b.cold_starts} (p50 {fmt_ms(b.cold_p50_ms)})",
        ),
        ("Structured output parsed", _rate(t.structured), _rate(b.structured)),
        ("Thinking leaks", str(t.thinking_leaks), str(b.thinking_leaks)),
        ("Eval pass rate", _rate(t.eval), _rate(b.eval)),
        ("Memory", _mem(t), _mem(b)),
    ]


def _card(c: RoleCard) -> list[str]:
    out = [
        f"### {c.role}: **{c.verdict}**",
        "",
        f"Trial `{c.trial_model or '-'}` vs baseline `{c.baseline_model or '-'}`"
        f" (now on `{c.current_model}`, trial {c.status or '-'})",
        "",
    ]
    out += [f"- {r}" for r in c.reasons]
    out += ["", f"| | trial: {c.trial_model or '-'} | baseline: {c.baseline_model or '-'} |", "|---|---|---|"]
    out += [f"| {a} | {b} | {d} |" for a, b, d in _rows(c.trial, c.baseline)]
    if c.excluded:
        out += [
            "",
            "Not compared: "
            + "; ".join(f"{s.source} on {s.model}: {s.requests} requests, {s.errors} errors" for s in c.excluded),
        ]
    if c.marks:
        out += [
            "",
            "Changes in the window: "
            + "; ".join(f"{_when(m.time)} {m.label}{' (forced)' if m.forced else ''}" for m in c.marks),
        ]
    return [*out, ""]


def render_markdown(sc: Scorecard) -> str:
    raw = sc.criteria.get("exclude_sources")
    excluded = ", ".join(str(x) for x in raw) if isinstance(raw, list | tuple) and raw else "nothing"
    lines = [
        f"## Trial {sc.trial or ''}: {sc.overall}".rstrip(),
        "",
        f"Window {_when(sc.since)} to {_when(sc.until)}. Intervals are 95 % (Wilson for rates, order statistics"
        " for percentiles, which are read from 10 %-wide latency buckets: within 5 %); a difference counts only"
        f" when they separate. Not compared (own line per role): {excluded}.",
        "",
        "| Role | Verdict | Trial | Baseline | Requests (trial / baseline) |",
        "|---|---|---|---|---|",
    ]
    for c in sc.roles:
        lines.append(
            f"| {c.role} | {c.verdict} | {c.trial_model or '-'} | {c.baseline_model or '-'} | "
            f"{c.trial.requests} / {c.baseline.requests} |"
        )
    lines.append("")
    for c in sc.roles:
        lines += _card(c)
    if sc.notes:
        lines += ["Notes: " + "; ".join(sc.notes), ""]
    return "\n".join(lines)
