"""The vocabulary every layer speaks (gateway, hosts, telemetry, operator service, console), as pydantic models.

The same models travel in-process (``LocalControl``) and over the admin API (``RemoteControl``),
so the console cannot tell, and the tests cover both with one suite.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AuditInfo",
    "BackendInfo",
    "ChangeResult",
    "DeprecateRequest",
    "ErrorInfo",
    "HostInfo",
    "JobInfo",
    "ModelInfo",
    "PreflightCheck",
    "PreflightResult",
    "RequestInfo",
    "RoleInfo",
    "RoleStats",
    "SeriesPoint",
    "Snapshot",
    "SwapRequest",
    "TelemetryInfo",
]


class _M(BaseModel):
    model_config = ConfigDict(extra="ignore")


class RoleInfo(_M):
    name: str
    model: str
    previous: str | None = None
    fallbacks: list[str] = []
    requires: list[str] = []
    in_trial: bool = False
    baseline: str | None = None  # the model the trial started from (R returns the role to it)
    rollback_by: str | None = None  # ISO date
    changed_at: str | None = None
    changed_by: str | None = None


class ModelInfo(_M):
    id: str
    family: str
    architecture: str
    capabilities: list[str]
    state: str  # hot, cold, on-demand, disabled
    deprecated: bool = False
    sunset: str | None = None
    memory_gb: float = 0.0
    hosts: list[str] = []
    roles: list[str] = []  # roles currently routed to it
    thinking: str = "none"  # family thinking policy
    loaded: bool | None = None  # seen loaded on a backend right now (None: unknown)
    answers_as: list[str] = []  # names its backends put in an answer's "model" (smoke's wrong-model check)


class BackendInfo(_M):
    name: str
    host: str
    kind: str
    base_url: str
    health: str = "unknown"  # ready, starting, down, circuit-open, unknown
    detail: str | None = None  # last probe error or status text
    inflight: int = 0
    queued: int = 0
    max_concurrency: int = 0
    loaded_models: list[str] = []
    checked_at: float | None = None


class HostInfo(_M):
    name: str
    address: str
    platform: str
    memory_budget_gb: float
    reachable: bool | None = None  # None until a probe has run
    memory_used_gb: float | None = None
    memory_total_gb: float | None = None
    memory_source: str | None = None  # e.g. "sysfs gtt", "rocm-smi", "llama-swap /api/performance", "backends"
    serving_version: str | None = None
    probed_at: float | None = None
    error: str | None = None
    backends: list[BackendInfo] = []


class SeriesPoint(_M):
    t: float  # bucket start, unix seconds
    count: int
    p50_ms: float | None = None
    p95_ms: float | None = None


class RoleStats(_M):
    """Window figures of one group of requests. In ``TelemetryInfo.roles`` ``role`` is the role name;
    in ``TelemetryInfo.models`` it holds the model id and in ``TelemetryInfo.hosts`` the host name
    (``(unrouted)``: requests that never got that far; ``(other)``: names folded past the cap)."""

    role: str
    count: int = 0
    errors: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    rps: float = 0.0
    series: list[SeriesPoint] = []


class ErrorInfo(_M):
    time: float
    request_id: str
    error_class: str
    status: int
    role: str | None = None
    model: str | None = None
    host: str | None = None
    backend: str | None = None
    message: str = ""


class RequestInfo(_M):
    time: float
    request_id: str
    endpoint: str
    role: str | None = None
    model: str | None = None
    host: str | None = None
    backend: str | None = None
    stream: bool = False
    status: int = 0
    error_class: str = "ok"
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    fallback: bool = False
    thinking_injected: bool = False
    thinking_leaked: bool = False
    asked: str | None = None  # the model name the caller sent (404 rows show it)
    seq: int = 0  # the gateway's own id for the record (unique per gateway run; the console keys rows by it)


class TelemetryInfo(_M):
    window_s: float = 600.0
    total: int = 0
    rps: float = 0.0
    inflight: int = 0
    roles: list[RoleStats] = []
    models: list[RoleStats] = []  # the same window per model id (``RoleStats.role`` holds the id)
    hosts: list[RoleStats] = []  # the same window per host (``RoleStats.role`` holds the host name)
    errors_by_class: dict[str, int] = {}
    errors_by_target: dict[str, int] = {}  # "role/model" -> count
    last_errors: list[ErrorInfo] = []
    recent: list[RequestInfo] = []
    thinking_leaks: int = 0
    history_error: str | None = None  # the last failed history write (None: all is well); the status bar shows it


class JobInfo(_M):
    id: str
    kind: str  # rebuild, verify
    host: str
    state: str  # running, succeeded, failed, cancelled
    started: float
    finished: float | None = None
    step: str | None = None
    steps_done: int = 0
    steps_total: int = 0
    error: str | None = None


class Snapshot(_M):
    gateway_url: str
    config_path: str | None = None
    trial: str | None = None
    trial_rollback_by: str | None = None
    trial_status: str | None = None  # RoutingState.trial_status(): active, rolled-back, promoted (None: no trial)
    roles: list[RoleInfo] = []
    models: list[ModelInfo] = []
    hosts: list[HostInfo] = []
    telemetry: TelemetryInfo = Field(default_factory=TelemetryInfo)
    jobs: list[JobInfo] = []
    warnings: list[str] = []
    taken_at: float = 0.0


class AuditInfo(_M):
    time: str
    actor: str
    action: str
    target: str
    before: object = None
    after: object = None
    note: str = ""


class ChangeResult(_M):
    ok: bool
    message: str
    audit: list[AuditInfo] = []
    # The rows the change touched, as they are now: a console repaints these instead of a full snapshot.
    roles: list[RoleInfo] = []
    models: list[ModelInfo] = []


class SwapRequest(_M):
    model: str
    actor: str = "operator"
    force: bool = False  # swap even if the preflight fails (recorded in the audit log)
    preflight_id: str | None = None  # the preflight the operator was shown: stands if still fresh


class DeprecateRequest(_M):
    deprecated: bool
    sunset: str | None = None  # ISO date
    actor: str = "operator"


class PreflightCheck(_M):
    name: str
    outcome: str  # pass, warn, fail, unproven (could not be checked: blocks like fail unless forced)
    evidence: str
    fix: str | None = None  # how to make a failed or unproven check pass


class PreflightResult(_M):
    role: str
    model: str
    host: str | None = None
    checks: list[PreflightCheck] = []
    id: str | None = None  # set by the operator service; pass it to the swap so it is not run again

    @property
    def blocked(self) -> bool:
        return any(c.outcome in ("fail", "unproven") for c in self.checks)
