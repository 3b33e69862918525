"""What the gateway needs from its neighbours (telemetry, hosts service), as structural types.

The gateway never imports the hosts package: anything with these methods will do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from ..schema import JobInfo, PreflightResult, TelemetryInfo
from ..state import RoutingState
from ..telemetry.records import RequestRecord

__all__ = ["HostProbeLike", "HostsLike", "TelemetryLike"]


class TelemetryLike(Protocol):
    def record(self, rec: RequestRecord) -> None: ...

    def info(self, inflight: int = 0) -> TelemetryInfo: ...

    def prometheus(self) -> str: ...


class HostProbeLike(Protocol):
    reachable: bool | None
    memory_used_gb: float | None
    memory_total_gb: float | None
    memory_source: str | None
    serving_version: str | None
    probed_at: float | None
    error: str | None


class HostsLike(Protocol):
    def probes(self) -> Mapping[str, HostProbeLike]: ...

    async def preflight(self, role: str, model: str, state: RoutingState) -> PreflightResult: ...

    def start_job(self, kind: str, host: str) -> JobInfo: ...

    def jobs(self) -> list[JobInfo]: ...

    def job_log(self, job_id: str, since: int = 0) -> list[str]: ...

    async def cancel_job(self, job_id: str) -> JobInfo: ...
