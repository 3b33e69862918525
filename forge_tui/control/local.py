"""Control of a gateway embedded in this process: the operator service, called directly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..operator.service import OperatorError, OperatorService
from ..schema import AuditInfo, ChangeResult, JobInfo, PreflightResult, Snapshot
from ..trial.schema import Scorecard
from .base import ControlError

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["LocalControl"]


@contextmanager
def _answered() -> Iterator[None]:
    """The service's ``OperatorError`` is the console's ``ControlError`` (same message)."""
    try:
        yield
    except OperatorError as exc:
        raise ControlError(str(exc)) from None


class LocalControl:
    """Drives the ``Runtime`` running in this process through its ``OperatorService`` (as the admin API does)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def service(self) -> OperatorService:
        return self.runtime.operator

    @property
    def gateway_url(self) -> str:
        return self.runtime.gateway.url

    @property
    def mode(self) -> str:
        return "embedded"

    async def snapshot(self) -> Snapshot:
        return self.service.snapshot()

    async def eligible_models(self, role: str) -> list[str]:
        with _answered():
            return self.service.eligible_models(role)

    async def swap(
        self, role: str, model: str, *, force: bool = False, actor: str = "operator", preflight_id: str | None = None
    ) -> ChangeResult:
        return await self.service.swap(role, model, force=force, actor=actor, preflight_id=preflight_id)

    async def rollback(self, role: str, *, actor: str = "operator") -> ChangeResult:
        return await self.service.rollback(role, actor=actor)

    async def rollback_trial(self, *, actor: str = "operator") -> ChangeResult:
        return await self.service.rollback_trial(actor=actor)

    async def promote(self, role: str, *, actor: str = "operator") -> ChangeResult:
        return await self.service.promote(role, actor=actor)

    async def trial_scorecard(self, since: float | None = None, until: float | None = None) -> Scorecard:
        with _answered():
            return await self.service.trial_scorecard(since, until)

    async def set_deprecated(
        self, model: str, deprecated: bool, *, sunset: str | None = None, actor: str = "operator"
    ) -> ChangeResult:
        return await self.service.set_deprecated(model, deprecated, sunset=sunset, actor=actor)

    async def audit(self, limit: int = 200) -> list[AuditInfo]:
        return await self.service.audit(limit)

    async def preflight(self, role: str, model: str) -> PreflightResult:
        with _answered():
            return await self.service.preflight(role, model)

    async def start_job(self, kind: str, host: str) -> JobInfo:
        with _answered():
            return self.service.start_job(kind, host)

    async def job_log(self, job_id: str, since: int = 0) -> list[str]:
        with _answered():
            return self.service.job_log(job_id, since)

    async def cancel_job(self, job_id: str) -> JobInfo:
        with _answered():
            return await self.service.cancel_job(job_id)

    async def close(self) -> None:
        """The runtime belongs to whoever started it; nothing to release here."""
