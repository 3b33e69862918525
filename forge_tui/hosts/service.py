"""HostsService: a thin facade over the hosts services, each with one job.

- ``probing.HostProber``: a probe loop per host (SSH liveness, memory, serving version);
- ``inventories.Inventories``: the GGUF files under each host's model dirs;
- ``binaries.ServingBinaries``: each host's serving binary, its version and the architectures it knows;
- ``preflighter.Preflighter``: the evidence for a role change;
- ``jobservice.JobService``: rebuild / verify jobs.

Backend health is not probed here: it is the one ``health.BackendProber`` of the process (the
running gateway's, handed over with ``use_health``; one of its own for the CLI).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config.models import Catalog
from ..health import BackendProber
from ..schema import JobInfo, PreflightResult
from ..state import RoutingState
from .archcheck import ArchVerdict, ServingBinary
from .binaries import ServingBinaries
from .context import HostContext
from .inventories import Inventories
from .inventory import GgufFile
from .jobservice import JobService
from .preflighter import Preflighter
from .probing import HostProbe, HostProber
from .rebuild import JobTimeouts

__all__ = ["HostProbe", "HostsService"]


class HostsService:
    def __init__(
        self,
        catalog: Catalog,
        *,
        state_dir: Path | None,
        gateway_url: Callable[[], str | None] = lambda: None,
        probe_interval_s: float = 15.0,
        state: RoutingState | None = None,
        inventory_interval_s: float = 300.0,
        http_timeout_s: float = 3.0,
        sysfs_root: str = "/sys",
        job_timeouts: JobTimeouts | None = None,
        health: BackendProber | None = None,
    ) -> None:
        self.catalog = catalog
        self.state_dir = Path(state_dir).expanduser() if state_dir else None
        self.probe_interval_s = probe_interval_s
        self._state = state
        # Reconnect backoff never longer than two probe intervals: a host back up shows up soon.
        self._ctx = HostContext(catalog, backoff_max_s=max(1.0, min(30.0, 2 * probe_interval_s)))
        self._own_health = health is None
        self.health = health or BackendProber(catalog, interval_s=probe_interval_s, read_timeout_s=http_timeout_s)
        self.binaries = ServingBinaries(self._ctx)
        self.inventories = Inventories(self._ctx)
        self.prober = HostProber(
            self._ctx,
            self.binaries,
            self.inventories,
            self.health,
            probe_interval_s=probe_interval_s,
            inventory_interval_s=inventory_interval_s,
            http_timeout_s=http_timeout_s,
            sysfs_root=sysfs_root,
        )
        self.preflighter = Preflighter(self._ctx, self.binaries, lambda: self.health, self._measured_total)
        self.job_service = JobService(
            self._ctx,
            self.binaries,
            state_dir=self.state_dir,
            state=lambda: self._state,
            gateway_url=gateway_url,
            timeouts=job_timeouts or JobTimeouts(),
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.prober.start()

    async def close(self) -> None:
        await self.prober.close()
        await self.job_service.close()
        await self._ctx.close()
        if self._own_health:
            await self.health.stop()

    def set_state(self, state: RoutingState) -> None:
        """The routing state jobs read to know which roles a host serves (preflight gets it per call)."""
        self._state = state

    def use_health(self, health: BackendProber) -> None:
        """Read backend state from ``health`` (the running gateway's prober) instead of probing it here."""
        if health is self.health:
            return
        self.health = health
        self._own_health = False
        self.prober.use(health)

    # ------------------------------------------------------------------ probes
    def probes(self) -> dict[str, HostProbe]:
        return self.prober.probes()

    async def probe_now(self, host: str) -> HostProbe:
        return await self.prober.probe_now(host)

    def probe_timeout(self, name: str) -> float:
        return self._ctx.probe_timeout(name)

    def _measured_total(self, host: str) -> float | None:
        p = self.prober.probes().get(host)
        return p.memory_total_gb if p else None

    # ------------------------------------------------------------------ inventory
    async def refresh_inventory(self, host: str) -> list[GgufFile]:
        return await self.inventories.refresh(host)

    def inventory(self, host: str) -> list[GgufFile]:
        return self.inventories.files(host)

    def missing_model_dirs(self, host: str) -> list[str]:
        return self.inventories.missing_dirs(host)

    # ------------------------------------------------------------------ serving binary
    def local_binary(self, host: str) -> ServingBinary | None:
        return self.binaries.local(host)

    async def serving_binary(self, host: str) -> ServingBinary | None:
        return await self.binaries.binary(host)

    async def architecture_verdicts(
        self, host: str, architectures: list[str]
    ) -> tuple[ServingBinary | None, dict[str, ArchVerdict]]:
        return await self.binaries.verdicts(host, architectures)

    # ------------------------------------------------------------------ preflight
    async def preflight(self, role: str, model: str, state: RoutingState) -> PreflightResult:
        return await self.preflighter.preflight(role, model, state)

    # ------------------------------------------------------------------ jobs
    def start_job(self, kind: str, host: str) -> JobInfo:
        return self.job_service.start(kind, host)

    def jobs(self) -> list[JobInfo]:
        return self.job_service.jobs()

    def job_log(self, job_id: str, since: int = 0) -> list[str]:
        return self.job_service.log(job_id, since)

    def job_steps(self, job_id: str) -> list[dict[str, object]]:
        return self.job_service.steps(job_id)

    async def wait_job(self, job_id: str, timeout: float | None = None) -> JobInfo:
        return await self.job_service.wait(job_id, timeout)

    async def cancel_job(self, job_id: str) -> JobInfo:
        return await self.job_service.cancel(job_id)
