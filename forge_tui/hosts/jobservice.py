"""Rebuild and verify jobs: started per host, each on a connection of its own (a probe giving up
on a slow host must not cut a build), logged, cancellable, remembered across restarts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from ..schema import JobInfo
from ..state import RoutingState
from .binaries import ServingBinaries
from .context import HostContext
from .jobs import JOB_KINDS, JobManager
from .preflighter import Preflighter
from .rebuild import JobRunner, JobTimeouts
from .transport import transport_for

__all__ = ["JobService"]


class JobService:
    def __init__(
        self,
        ctx: HostContext,
        binaries: ServingBinaries,
        *,
        state_dir: Path | None,
        state: Callable[[], RoutingState | None],
        gateway_url: Callable[[], str | None],
        timeouts: JobTimeouts,
    ) -> None:
        self._ctx = ctx
        self._binaries = binaries
        self._state = state
        self._gateway_url = gateway_url
        self.timeouts = timeouts
        self._jobs = JobManager(state_dir)

    def start(self, kind: str, host: str) -> JobInfo:
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r} (one of: {', '.join(JOB_KINDS)})")
        h = self._ctx.host(host)
        local = self._binaries.local(host)
        if kind == "rebuild" and h.build is None:
            raise ValueError(f"host {host!r} has no build settings (hosts.{host}.build): nothing to rebuild")
        if kind == "verify" and h.build is None and local is None:
            raise ValueError(f"host {host!r} has no build settings (hosts.{host}.build): no serving binary to verify")
        runner = JobRunner(
            kind,
            host,
            h,
            self._ctx.catalog,
            transport_for(host, h),
            self._jobs,
            state=self._state,
            gateway_url=self._gateway_url,
            local_binary=local if h.build is None else None,
            timeouts=self.timeouts,
            resolve_local_gguf=Preflighter.resolve_local_gguf if h.transport == "local" else None,
        )
        job = self._jobs.start(kind, host, runner.steps, runner)
        assert job.task is not None
        job.task.add_done_callback(lambda _t: self._binaries.forget(host))
        return job.info()

    def jobs(self) -> list[JobInfo]:
        return self._jobs.jobs()

    def log(self, job_id: str, since: int = 0) -> list[str]:
        return self._jobs.log(job_id, since)

    def steps(self, job_id: str) -> list[dict[str, object]]:
        return self._jobs.steps(job_id)

    async def wait(self, job_id: str, timeout: float | None = None) -> JobInfo:
        job = self._jobs.get(job_id)
        if job.task is not None:
            await asyncio.wait({job.task}, timeout=timeout)
        return job.info()

    async def cancel(self, job_id: str) -> JobInfo:
        return await self._jobs.cancel(job_id)

    async def close(self) -> None:
        await self._jobs.close()
