"""The one interface the console uses to observe and steer a gateway.

Both implementations are adapters of one ``operator.service.OperatorService``: ``LocalControl``
calls the service of a runtime in the same process; ``RemoteControl`` drives a headless
``forge-tui serve`` through its admin API (``operator.admin_http``). Both return the schema models.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ..schema import AuditInfo, ChangeResult, JobInfo, PreflightResult, Snapshot
from ..trial.schema import Scorecard

__all__ = ["Control", "ControlError"]


class ControlError(Exception):
    """The gateway could not be reached or refused the call; the message is operator-facing."""


@runtime_checkable
class Control(Protocol):
    @property
    def gateway_url(self) -> str:
        """Base URL of the gateway's real HTTP port (smoke requests go there)."""

    @property
    def mode(self) -> str:
        """'embedded' or 'attached'."""

    async def snapshot(self) -> Snapshot: ...

    async def eligible_models(self, role: str) -> list[str]: ...

    async def swap(
        self, role: str, model: str, *, force: bool = False, actor: str = "operator", preflight_id: str | None = None
    ) -> ChangeResult:
        """``preflight_id``: the ``PreflightResult.id`` the operator was shown; still fresh, it is not run again."""

    async def rollback(self, role: str, *, actor: str = "operator") -> ChangeResult: ...

    async def rollback_trial(self, *, actor: str = "operator") -> ChangeResult: ...

    async def promote(self, role: str, *, actor: str = "operator") -> ChangeResult:
        """End the trial for ``role`` (it keeps its model; the baseline is no longer its rollback target)."""

    async def trial_scorecard(self, since: float | None = None, until: float | None = None) -> Scorecard:
        """The trial scorecard over [since, until) (defaults: a week before the trial began, until now)."""

    async def set_deprecated(
        self, model: str, deprecated: bool, *, sunset: str | None = None, actor: str = "operator"
    ) -> ChangeResult: ...

    async def audit(self, limit: int = 200) -> list[AuditInfo]: ...

    async def preflight(self, role: str, model: str) -> PreflightResult: ...

    async def start_job(self, kind: str, host: str) -> JobInfo: ...

    async def job_log(self, job_id: str, since: int = 0) -> list[str]: ...

    async def cancel_job(self, job_id: str) -> JobInfo: ...

    async def close(self) -> None: ...
