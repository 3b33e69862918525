"""The trial scorecard as JSON: a stable, documented schema (``schema`` = "forge-trial-scorecard/1").

Times are unix seconds; latencies milliseconds; rates fractions in [0, 1]. Every interval is
95 %: Wilson for rates, order statistics for percentiles. A figure nobody measured is ``null``
(shown as "-"). Fields are only ever added within a schema version, never renamed or removed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "SCHEMA_ID",
    "Estimate",
    "LoadSplit",
    "Mark",
    "Percentiles",
    "Rate",
    "RoleCard",
    "Scorecard",
    "SeriesPoint",
    "Side",
    "SourceLine",
    "Verdict",
]

SCHEMA_ID = "forge-trial-scorecard/1"

Verdict = Literal["keep", "roll back", "not enough data"]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Estimate(_M):
    """A point value with its 95 % interval (all null when there were no samples)."""

    value: float | None = None
    low: float | None = None
    high: float | None = None


class Rate(_M):
    """``count`` of ``total`` with a Wilson 95 % interval on ``count / total``."""

    count: int = 0
    total: int = 0
    rate: float | None = None
    low: float | None = None
    high: float | None = None


class Percentiles(_M):
    """Warm, answered requests only (cold starts are counted apart)."""

    samples: int = 0
    p50: Estimate = Estimate()
    p95: Estimate = Estimate()
    p99: Estimate = Estimate()


class LoadSplit(_M):
    """p95 latency when the backend had no other request in flight (idle) vs one or more (loaded)."""

    idle_samples: int = 0
    idle_p95_ms: Estimate = Estimate()
    loaded_samples: int = 0
    loaded_p95_ms: Estimate = Estimate()


class Side(_M):
    """One side of a trial role: the trial model or the baseline."""

    model: str | None = None
    requests: int = 0
    per_hour: float | None = None  # requests per hour while this side held the role
    hours: float = 0.0  # how long this side held the role within the window
    errors: Rate = Rate()  # service errors (not the caller's 4xx) over requests
    errors_by_class: dict[str, int] = {}  # every non-ok class, caller errors included
    latency_ms: Percentiles = Percentiles()
    ttft_ms: Percentiles = Percentiles()
    tokens_per_s: float | None = None  # mean output tokens/s over requests that reported it
    fallback: Rate = Rate()  # answered by a fallback model
    spill: Rate = Rate()  # answered by another host because the first was busy
    cold_starts: int = 0  # requests that waited out a backend startup
    cold_p50_ms: float | None = None
    load: LoadSplit = LoadSplit()
    structured: Rate = Rate()  # json_object / json_schema answers that parsed
    thinking_leaks: int = 0
    eval: Rate | None = None  # eval pass rate of this model (null: no eval results stored)
    memory_gb: float | None = None  # from the catalog
    host_used_gb: float | None = None  # memory in use on that host now (all its models), when a probe measured it
    host: str | None = None
    host_budget_gb: float | None = None
    budget_share: float | None = None  # memory_gb / host_budget_gb


class SourceLine(_M):
    """Traffic kept out of the comparison (smoke, bench, ...), shown on its own line."""

    source: str
    model: str
    requests: int
    errors: int


class Mark(_M):
    """A change of the role's model inside the window (from the audit log)."""

    time: float
    action: str  # swap, rollback, rollback-trial, promote
    model: str | None
    label: str
    forced: bool = False


class SeriesPoint(_M):
    t: float  # bucket start
    width_s: float
    trial_requests: int = 0
    baseline_requests: int = 0
    trial_p95_ms: float | None = None
    baseline_p95_ms: float | None = None
    trial_error_rate: float | None = None
    baseline_error_rate: float | None = None


class RoleCard(_M):
    role: str
    status: str | None  # trial status: active, rolled-back, promoted
    baseline_model: str | None
    trial_model: str | None
    current_model: str | None
    verdict: Verdict
    reasons: list[str]
    needs_trial_requests: int = 0  # more live requests needed on each side before a verdict
    needs_baseline_requests: int = 0
    trial: Side
    baseline: Side
    other_requests: int = 0  # requests of this role answered by neither model (fallbacks in a baseline segment)
    excluded: list[SourceLine] = []
    marks: list[Mark] = []
    series: list[SeriesPoint] = []


class Scorecard(_M):
    schema_id: Literal["forge-trial-scorecard/1"] = "forge-trial-scorecard/1"
    trial: str | None  # the catalog's trial name
    generated_at: float
    since: float
    until: float
    criteria: dict[str, object]
    overall: Verdict
    exit_code: int  # 0 keep everywhere, 1 any roll back, 2 not enough data (and no roll back)
    roles: list[RoleCard]
    notes: list[str] = []  # how the figures were read (rollups, pruned raw rows, ...)
