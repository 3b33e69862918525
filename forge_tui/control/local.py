"""Control of a gateway embedded in this process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import operations
from ..schema import AuditInfo, ChangeResult, JobInfo, PreflightResult, Snapshot
from .base import ControlError

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["LocalControl"]


class LocalControl:
    """Drives the ``Runtime`` running in this process; calls the same operations as the admin API."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def gateway_url(self) -> str:
        return self.runtime.gateway.url

    @property
    def mode(self) -> str:
        return "embedded"

    async def snapshot(self) -> Snapshot:
        return self.runtime.gateway.snapshot()

    async def eligible_models(self, role: str) -> list[str]:
        if self.runtime.state.role(role) is None:
            raise ControlError(f"unknown role {role!r}")
        return [m.id for m in self.runtime.state.eligible_models(role)]

    async def swap(self, role: str, model: str, *, force: bool = False, actor: str = "operator") -> ChangeResult:
        return await operations.swap(self.runtime.state, self.runtime.hosts, role, model, force=force, actor=actor)

    async def rollback(self, role: str, *, actor: str = "operator") -> ChangeResult:
        return operations.rollback(self.runtime.state, role, actor=actor)

    async def rollback_trial(self, *, actor: str = "operator") -> ChangeResult:
        return operations.rollback_trial(self.runtime.state, actor=actor)

    async def set_deprecated(
        self, model: str, deprecated: bool, *, sunset: str | None = None, actor: str = "operator"
    ) -> ChangeResult:
        return operations.set_deprecated(self.runtime.state, model, deprecated, sunset=sunset, actor=actor)

    async def audit(self, limit: int = 200) -> list[AuditInfo]:
        return operations.audit_infos(self.runtime.state.audit_log(limit))

    def _hosts(self):  # type: ignore[no-untyped-def]
        if self.runtime.hosts is None:
            raise ControlError("the hosts service is not running (started with hosts disabled)")
        return self.runtime.hosts

    async def preflight(self, role: str, model: str) -> PreflightResult:
        return await self._hosts().preflight(role, model, self.runtime.state)

    async def start_job(self, kind: str, host: str) -> JobInfo:
        try:
            return self._hosts().start_job(kind, host)
        except ValueError as exc:
            raise ControlError(str(exc)) from None

    async def job_log(self, job_id: str, since: int = 0) -> list[str]:
        try:
            return self._hosts().job_log(job_id, since)
        except (KeyError, ValueError) as exc:
            raise ControlError(f"unknown job {job_id!r}") from exc

    async def cancel_job(self, job_id: str) -> JobInfo:
        try:
            return await self._hosts().cancel_job(job_id)
        except (KeyError, ValueError) as exc:
            raise ControlError(f"unknown job {job_id!r}") from exc

    async def close(self) -> None:
        """The runtime belongs to whoever started it; nothing to release here."""
