"""The scorecard itself: pure functions from cells (see ``window``) and trial roles to a Scorecard.

Attribution: a request of the role counts to the side of the model that answered it (trial model
or baseline), whatever its timestamp, so a clock stepping back across a restart cannot move it;
a request answered by a fallback model counts to the side whose segment it fell in (its fallback
rate is that side's); a request naming the baseline id directly (no role) while the role is on
its trial model counts to the baseline. Sources in ``criteria.exclude_sources`` (smoke, bench)
are not compared: they are listed per side on their own line.

A difference decides a verdict only when the two 95 % intervals separate and the point estimates
differ by more than the catalog's threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..config.models import TrialCriteria
from .fmt import fmt_ms, fmt_pct
from .schema import Estimate, LoadSplit, Percentiles, Rate, RoleCard, Scorecard, SeriesPoint, Side, SourceLine, Verdict
from .segments import TrialRole
from .stats import hist_quantile, quantile_interval, separated, wilson
from .window import Cell

__all__ = ["NOT_SERVICE_ERRORS", "MemoryInfo", "fmt_ms", "fmt_pct", "score"]

# Classes that are the caller's doing (or a deliberate shutdown), not the model's or the backend's.
NOT_SERVICE_ERRORS = frozenset({"ok", "caller_error", "not_found", "payload_too_large", "gateway_shutdown"})
_ANSWERED = frozenset({"ok", "model_output"})


@dataclass(frozen=True, slots=True)
class MemoryInfo:
    memory_gb: float | None
    host: str | None
    host_budget_gb: float | None
    host_used_gb: float | None = None  # measured in use on the host now (all its models), when probed


def _add_hist(into: dict[int, int], h: dict[int, int]) -> None:
    for k, v in h.items():
        into[k] = into.get(k, 0) + v


@dataclass(slots=True)
class _Sums:
    n: int = 0
    errors: int = 0
    by_class: dict[str, int] = field(default_factory=dict)
    lat: dict[int, int] = field(default_factory=dict)
    ttft: dict[int, int] = field(default_factory=dict)
    idle: dict[int, int] = field(default_factory=dict)
    loaded: dict[int, int] = field(default_factory=dict)
    cold_n: int = 0
    cold_lat: dict[int, int] = field(default_factory=dict)
    fallback: int = 0
    spill: int = 0
    structured: int = 0
    structured_ok: int = 0
    leaks: int = 0
    tps_n: int = 0
    tps_sum: float = 0.0

    def merge(self, o: _Sums) -> None:
        self.n += o.n
        self.errors += o.errors
        for k, v in o.by_class.items():
            self.by_class[k] = self.by_class.get(k, 0) + v
        for mine, theirs in (
            (self.lat, o.lat),
            (self.ttft, o.ttft),
            (self.idle, o.idle),
            (self.loaded, o.loaded),
            (self.cold_lat, o.cold_lat),
        ):
            _add_hist(mine, theirs)
        self.cold_n += o.cold_n
        self.fallback += o.fallback
        self.spill += o.spill
        self.structured += o.structured
        self.structured_ok += o.structured_ok
        self.leaks += o.leaks
        self.tps_n += o.tps_n
        self.tps_sum += o.tps_sum

    def add(self, c: Cell) -> None:
        a = c.acc
        self.n += a.n
        if c.error_class not in NOT_SERVICE_ERRORS:
            self.errors += a.n
        if c.error_class != "ok":
            self.by_class[c.error_class] = self.by_class.get(c.error_class, 0) + a.n
        if c.error_class in _ANSWERED:
            if c.cold:
                self.cold_n += a.n
                _add_hist(self.cold_lat, a.lat)
            else:
                _add_hist(self.lat, a.lat)
                _add_hist(self.ttft, a.ttft)
                _add_hist(self.loaded if c.loaded else self.idle, a.lat)
        elif c.cold:
            self.cold_n += a.n
        self.fallback += a.fallback
        self.spill += a.spill
        self.structured += a.structured
        self.structured_ok += a.structured_ok
        self.leaks += a.leaked
        self.tps_n += a.tps_n
        self.tps_sum += a.tps_sum


def _est(v: tuple[float | None, float | None, float | None]) -> Estimate:
    return Estimate(value=v[0], low=v[1], high=v[2])


def _rate(k: int, n: int) -> Rate:
    p, lo, hi = wilson(k, n)
    return Rate(count=k, total=n, rate=p, low=lo, high=hi)


def _pct(h: dict[int, int]) -> Percentiles:
    return Percentiles(
        samples=sum(h.values()),
        p50=_est(quantile_interval(h, 0.50)),
        p95=_est(quantile_interval(h, 0.95)),
        p99=_est(quantile_interval(h, 0.99)),
    )


def _side(
    model: str | None,
    s: _Sums,
    hours: float,
    evals: Mapping[str, tuple[int, int]] | None,
    memory: Mapping[str, MemoryInfo],
) -> Side:
    mem = memory.get(model or "")
    ev = evals.get(model) if evals is not None and model else None
    share = None
    if mem is not None and mem.memory_gb is not None and mem.host_budget_gb:
        share = mem.memory_gb / mem.host_budget_gb
    return Side(
        model=model,
        requests=s.n,
        hours=hours,
        per_hour=s.n / hours if hours > 0 else None,
        errors=_rate(s.errors, s.n),
        errors_by_class=dict(sorted(s.by_class.items())),
        latency_ms=_pct(s.lat),
        ttft_ms=_pct(s.ttft),
        tokens_per_s=s.tps_sum / s.tps_n if s.tps_n else None,
        fallback=_rate(s.fallback, s.n),
        spill=_rate(s.spill, s.n),
        cold_starts=s.cold_n,
        cold_p50_ms=hist_quantile(s.cold_lat, 0.5),
        load=LoadSplit(
            idle_samples=sum(s.idle.values()),
            idle_p95_ms=_est(quantile_interval(s.idle, 0.95)),
            loaded_samples=sum(s.loaded.values()),
            loaded_p95_ms=_est(quantile_interval(s.loaded, 0.95)),
        ),
        structured=_rate(s.structured_ok, s.structured),
        thinking_leaks=s.leaks,
        eval=_rate(ev[0], ev[1]) if ev and ev[1] else None,
        memory_gb=mem.memory_gb if mem else None,
        host_used_gb=mem.host_used_gb if mem else None,
        host=mem.host if mem else None,
        host_budget_gb=mem.host_budget_gb if mem else None,
        budget_share=share,
    )


def _rate_words(r: Rate) -> str:
    if r.rate is None:
        return "-"
    return f"{fmt_pct(r.rate)} [{100 * (r.low or 0):.1f}, {100 * (r.high or 0):.1f}]"


def _est_words(e: Estimate) -> str:
    if e.value is None:
        return "-"
    return f"{fmt_ms(e.value)} [{fmt_ms(e.low)}, {fmt_ms(e.high)}]"


def _verdict(tr: TrialRole, trial: Side, base: Side, c: TrialCriteria) -> tuple[Verdict, list[str], int, int]:
    if tr.trial_model is None:
        return "not enough data", ["no trial model has held this role yet"], c.min_requests, 0
    if tr.baseline is None:
        return "not enough data", ["the role has no baseline to compare with"], 0, c.min_requests
    need_t = max(0, c.min_requests - trial.requests)
    need_b = max(0, c.min_requests - base.requests)
    if need_t or need_b:
        parts = []
        if need_t:
            parts.append(f"{need_t} more trial requests ({trial.requests} of {c.min_requests})")
        if need_b:
            parts.append(f"{need_b} more baseline requests ({base.requests} of {c.min_requests})")
        return "not enough data", ["needs " + " and ".join(parts)], need_t, need_b
    worse: list[str] = []
    notes: list[str] = []
    te, be = trial.errors, base.errors
    sep = separated(te.low, te.high, be.low, be.high)
    words = f"error rate {_rate_words(te)} vs {_rate_words(be)}"
    if sep > 0 and (te.rate or 0) - (be.rate or 0) > c.max_error_rate_increase:
        worse.append(f"{words}: higher, by more than {fmt_pct(c.max_error_rate_increase)}")
    elif sep < 0:
        notes.append(f"{words}: lower")
    else:
        notes.append(f"{words}: no clear difference")
    tp, bp = trial.latency_ms.p95, base.latency_ms.p95
    if tp.value is not None and bp.value is not None:
        sep = separated(tp.low, tp.high, bp.low, bp.high)
        words = f"p95 {_est_words(tp)} vs {_est_words(bp)}"
        if sep > 0 and tp.value / max(bp.value, 1e-9) > c.max_p95_ratio:
            worse.append(f"{words}: slower, more than {c.max_p95_ratio:g}x")
        elif sep < 0:
            notes.append(f"{words}: faster")
        else:
            notes.append(f"{words}: no clear difference")
    ts, bs = trial.structured, base.structured
    if ts.total and bs.total:
        sep = separated(ts.low, ts.high, bs.low, bs.high)
        words = f"structured output {_rate_words(ts)} vs {_rate_words(bs)}"
        if sep < 0 and (bs.rate or 0) - (ts.rate or 0) > c.max_structured_drop:
            worse.append(f"{words}: fewer parse, by more than {fmt_pct(c.max_structured_drop)}")
        elif sep != 0:
            notes.append(f"{words}: {'better' if sep > 0 else 'worse, within the threshold'}")
    tf = _rate(trial.fallback.count + trial.spill.count, trial.requests)
    bf = _rate(base.fallback.count + base.spill.count, base.requests)
    if tf.count or bf.count:
        sep = separated(tf.low, tf.high, bf.low, bf.high)
        words = f"fallback/spill {_rate_words(tf)} vs {_rate_words(bf)}"
        if sep > 0 and (tf.rate or 0) - (bf.rate or 0) > c.max_fallback_increase:
            worse.append(f"{words}: more often, by more than {fmt_pct(c.max_fallback_increase)}")
    if trial.eval is not None and base.eval is not None:
        sep = separated(trial.eval.low, trial.eval.high, base.eval.low, base.eval.high)
        words = f"eval pass rate {_rate_words(trial.eval)} vs {_rate_words(base.eval)}"
        if sep < 0 and (base.eval.rate or 0) - (trial.eval.rate or 0) > c.max_eval_drop:
            worse.append(f"{words}: lower, by more than {fmt_pct(c.max_eval_drop)}")
        else:
            notes.append(words)
    if worse:
        return "roll back", worse + notes, 0, 0
    return "keep", notes, 0, 0


def _series(by_t: dict[tuple[float, float], dict[str, _Sums]]) -> list[SeriesPoint]:
    out = []
    for (t0, t1), sides in sorted(by_t.items()):
        if "trial" not in sides and "baseline" not in sides:
            continue
        t, b = sides.get("trial"), sides.get("baseline")
        out.append(
            SeriesPoint(
                t=t0,
                width_s=t1 - t0,
                trial_requests=t.n if t else 0,
                baseline_requests=b.n if b else 0,
                trial_p95_ms=hist_quantile(t.lat, 0.95) if t else None,
                baseline_p95_ms=hist_quantile(b.lat, 0.95) if b else None,
                trial_error_rate=t.errors / t.n if t and t.n else None,
                baseline_error_rate=b.errors / b.n if b and b.n else None,
            )
        )
    return out


def _which(tr: TrialRole, c: Cell) -> str | None:
    mid = (c.t0 + c.t1) / 2
    if c.role == tr.name:
        if not c.fallback:
            if c.model == tr.trial_model:
                return "trial"
            if c.model == tr.baseline:
                return "baseline"
            return "other"
        m = tr.model_at(mid)
        return "trial" if m == tr.trial_model else "baseline" if m == tr.baseline else "other"
    if c.role == "" and tr.baseline and c.model == tr.baseline and not c.fallback:
        m = tr.model_at(mid)
        if m is not None and m != tr.baseline:
            return "baseline"
    return None


def score(
    cells: Sequence[Cell],
    roles: Sequence[TrialRole],
    criteria: TrialCriteria,
    *,
    since: float,
    until: float,
    generated_at: float,
    trial_name: str | None = None,
    evals: Mapping[str, tuple[int, int]] | None = None,
    memory: Mapping[str, MemoryInfo] | None = None,
    notes: Sequence[str] = (),
) -> Scorecard:
    memory = memory or {}
    excluded = set(criteria.exclude_sources)
    cards: list[RoleCard] = []
    for tr in roles:
        # each cell is added once, to its side in its time bucket; side totals merge the buckets
        by_t: dict[tuple[float, float], dict[str, _Sums]] = {}
        lines: dict[tuple[str, str], list[int]] = {}
        for c in cells:
            side = _which(tr, c)
            if side is None:
                continue
            if c.source in excluded:
                line = lines.setdefault((c.source, c.model), [0, 0])
                line[0] += c.acc.n
                line[1] += c.acc.n if c.error_class not in NOT_SERVICE_ERRORS else 0
                continue
            sides = by_t.get((c.t0, c.t1))
            if sides is None:
                sides = by_t[(c.t0, c.t1)] = {}
            acc = sides.get(side)
            if acc is None:
                acc = sides[side] = _Sums()
            acc.add(c)
        sums = {"trial": _Sums(), "baseline": _Sums(), "other": _Sums()}
        for sides in by_t.values():
            for side, acc in sides.items():
                sums[side].merge(acc)
        trial = _side(tr.trial_model, sums["trial"], tr.hours_on(tr.trial_model), evals, memory)
        base = _side(tr.baseline, sums["baseline"], tr.hours_on(tr.baseline), evals, memory)
        verdict, reasons, need_t, need_b = _verdict(tr, trial, base, criteria)
        cards.append(
            RoleCard(
                role=tr.name,
                status=tr.status,
                baseline_model=tr.baseline,
                trial_model=tr.trial_model,
                current_model=tr.current_model,
                verdict=verdict,
                reasons=reasons,
                needs_trial_requests=need_t,
                needs_baseline_requests=need_b,
                trial=trial,
                baseline=base,
                other_requests=sums["other"].n,
                excluded=[
                    SourceLine(source=s, model=m, requests=v[0], errors=v[1]) for (s, m), v in sorted(lines.items())
                ],
                marks=tr.marks,
                series=_series(by_t),
            )
        )
    verdicts = {c.verdict for c in cards}
    if "roll back" in verdicts:
        overall: Verdict = "roll back"
        code = 1
    elif "not enough data" in verdicts or not cards:
        overall, code = "not enough data", 2
    else:
        overall, code = "keep", 0
    return Scorecard(
        trial=trial_name,
        generated_at=generated_at,
        since=since,
        until=until,
        criteria=criteria.model_dump(mode="json"),
        overall=overall,
        exit_code=code,
        roles=cards,
        notes=list(notes) + ([] if cards else ["no role is in a trial"]),
    )
