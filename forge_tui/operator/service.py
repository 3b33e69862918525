"""The operator service: everything an operator can see and change, in one in-process object.

    svc = OperatorService(state, telemetry=tel, gateway=gw, hosts=hosts_or_None)
    svc.snapshot()                                  # the console's whole view (cheap, no I/O)
    await svc.swap(role, model, force=False, actor="op", preflight_id=None)   # -> ChangeResult
    await svc.rollback(role, actor=...); await svc.rollback_trial(actor=...); await svc.set_deprecated(...)
    await svc.audit(limit); svc.eligible_models(role); await svc.preflight(role, model)
    svc.start_job(kind, host); svc.jobs(); svc.job_log(id, since); await svc.cancel_job(id)

Two adapters sit on it and add nothing of their own: ``control.local.LocalControl`` (the embedded
console) calls it directly; ``operator.admin_http.AdminHttp`` (the admin HTTP API that
``control.remote.RemoteControl`` talks to) maps its answers and ``OperatorError``s onto HTTP.

A refused change is a ``ChangeResult(ok=False)``, not an exception; a question that cannot be
answered (no hosts service, unknown job or role, a bad job kind) raises an ``OperatorError``.

Changes are serialised (one at a time) and their file writes (state file + audit log, each
fsynced) run in a worker thread, so the event loop the gateway shares never waits on a disk.

To add an operation: a method here (raise the ``OperatorError`` that fits), a route + handler in
``admin_http.AdminHttp.routes``, and the same method on ``control.base.Control``, ``LocalControl``
and ``RemoteControl``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..schema import AuditInfo, ChangeResult, JobInfo, PreflightResult, Snapshot, TelemetryInfo
from ..state import AuditEntry, ChangeRefused, RoutingState
from .snapshot import build_snapshot, model_infos, role_infos

if TYPE_CHECKING:
    from ..trial.schema import Scorecard

if TYPE_CHECKING:
    from ..gateway.app import Gateway

__all__ = [
    "PREFLIGHT_FRESH_S",
    "HostProbeLike",
    "HostsLike",
    "Invalid",
    "NotFound",
    "OperatorError",
    "OperatorService",
    "TelemetryView",
    "Unavailable",
]

# A preflight the operator was shown stands for the swap that follows it this long; older, it is
# run again (host memory and loaded models move).
PREFLIGHT_FRESH_S = 120.0
_KEEP_PREFLIGHTS = 32

T = TypeVar("T")


class OperatorError(Exception):
    """A question the service cannot answer; the message is operator-facing."""


class Unavailable(OperatorError):
    """A part the operation needs is not running (the hosts service)."""


class NotFound(OperatorError):
    """The named role, model or job does not exist."""

    def __init__(self, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


class Invalid(OperatorError):
    """The request itself is wrong (e.g. an unknown job kind)."""


class TelemetryView(Protocol):
    """What the snapshot reads from telemetry."""

    def info(self, inflight: int = 0) -> TelemetryInfo: ...

    @property
    def history_error(self) -> str | None: ...


class HostProbeLike(Protocol):
    reachable: bool | None
    memory_used_gb: float | None
    memory_total_gb: float | None
    memory_source: str | None
    serving_version: str | None
    probed_at: float | None
    error: str | None


class HostsLike(Protocol):
    """What the service needs from the hosts service (anything with these methods will do)."""

    def probes(self) -> Mapping[str, HostProbeLike]: ...

    async def preflight(self, role: str, model: str, state: RoutingState) -> PreflightResult: ...

    def start_job(self, kind: str, host: str) -> JobInfo: ...

    def jobs(self) -> list[JobInfo]: ...

    def job_log(self, job_id: str, since: int = 0) -> list[str]: ...

    async def cancel_job(self, job_id: str) -> JobInfo: ...


@dataclass(frozen=True, slots=True)
class _Shown:
    """A preflight result handed to an operator, kept so the swap that follows can reuse it."""

    result: PreflightResult
    at: float


def _info(e: AuditEntry) -> AuditInfo:
    return AuditInfo(**asdict(e))


class OperatorService:
    def __init__(
        self,
        state: RoutingState,
        *,
        telemetry: TelemetryView | None = None,
        gateway: Gateway | None = None,
        hosts: HostsLike | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self.telemetry = telemetry
        self.gateway = gateway
        self.hosts = hosts
        self._clock = clock
        self._changes = asyncio.Lock()
        self._shown: dict[str, _Shown] = {}
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ views
    def snapshot(self) -> Snapshot:
        return build_snapshot(self.state, self.gateway, self.hosts, self.telemetry)

    def eligible_models(self, role: str) -> list[str]:
        if self.state.role(role) is None:
            raise NotFound(self._unknown_role(role), code="role_not_found", param="role")
        return [m.id for m in self.state.eligible_models(role)]

    async def audit(self, limit: int = 200) -> list[AuditInfo]:
        entries = await asyncio.to_thread(self.state.audit_log, limit)
        return [_info(e) for e in entries]

    def _unknown_role(self, role: str) -> str:
        return f"unknown role {role!r} (roles: {', '.join(sorted(self.state.roles()))})"

    # ------------------------------------------------------------------ hosts
    def _hosts(self) -> HostsLike:
        if self.hosts is None:
            raise Unavailable("the hosts service is not running in this gateway (preflight and jobs need it)")
        return self.hosts

    async def preflight(self, role: str, model: str) -> PreflightResult:
        """Run the preflight and remember it: a swap given its ``id`` soon after does not run it again."""
        result = await self._hosts().preflight(role, model, self.state)
        result = result.model_copy(update={"id": f"pf-{next(self._ids)}"})
        self._shown[result.id or ""] = _Shown(result, self._clock())
        while len(self._shown) > _KEEP_PREFLIGHTS:
            del self._shown[next(iter(self._shown))]
        return result

    def _reusable(self, preflight_id: str | None, role: str, model: str) -> PreflightResult | None:
        shown = self._shown.get(preflight_id) if preflight_id else None
        if shown is None or shown.result.role != role or shown.result.model != model:
            return None
        if self._clock() - shown.at > PREFLIGHT_FRESH_S:
            return None
        return shown.result

    def start_job(self, kind: str, host: str) -> JobInfo:
        try:
            return self._hosts().start_job(kind, host)
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    def jobs(self) -> list[JobInfo]:
        return self._hosts().jobs()

    def job_log(self, job_id: str, since: int = 0) -> list[str]:
        try:
            return self._hosts().job_log(job_id, since)
        except (KeyError, ValueError):
            raise NotFound(f"unknown job {job_id!r}", code="job_not_found") from None

    async def cancel_job(self, job_id: str) -> JobInfo:
        try:
            return await self._hosts().cancel_job(job_id)
        except (KeyError, ValueError):
            raise NotFound(f"unknown job {job_id!r}", code="job_not_found") from None

    # ------------------------------------------------------------------ changes
    async def _commit(self, change: Callable[[], T]) -> T:
        """Run one state change in a worker thread (its fsyncs stay off the loop), one at a time."""
        async with self._changes:
            return await asyncio.to_thread(change)

    def _result(self, message: str, entries: list[AuditEntry], roles: list[str], models: list[str]) -> ChangeResult:
        """A successful change with the rows it changed, so a console repaints those rows only."""
        return ChangeResult(
            ok=True,
            message=message,
            audit=[_info(e) for e in entries],
            roles=role_infos(self.state, roles),
            models=model_infos(self.state, self.gateway, models),
        )

    async def swap(
        self, role: str, model: str, *, force: bool = False, actor: str = "operator", preflight_id: str | None = None
    ) -> ChangeResult:
        """Swap ``role`` to ``model``. A failed preflight blocks unless forced; a force is audited.

        ``preflight_id`` names the preflight the operator was shown: still fresh and for the same
        role and model, it stands (the swap does not run it again over SSH).
        """
        rv = self.state.role(role)
        if rv is None:
            return ChangeResult(ok=False, message=self._unknown_role(role))
        forced_note: str | None = None
        if self.hosts is not None:
            pf = self._reusable(preflight_id, role, model)
            if pf is None:
                try:
                    pf = await self.hosts.preflight(role, model, self.state)
                except ChangeRefused as exc:
                    return ChangeResult(ok=False, message=str(exc))
            failed = [c for c in pf.checks if c.outcome in ("fail", "unproven")]  # cannot prove = blocked
            if failed:
                evidence = "; ".join(f"{c.name}: {c.evidence}" for c in failed)
                if not force:
                    return ChangeResult(ok=False, message=f"preflight failed for {model!r} in {role!r}: {evidence}")
                forced_note = evidence
        try:
            entry = await self._commit(lambda: self.state.swap_role(role, model, actor=actor, forced=forced_note))
        except ChangeRefused as exc:
            return ChangeResult(ok=False, message=str(exc))
        before = str(entry.before["model"])
        msg = f"{role}: {before} -> {model}"
        if forced_note:
            msg += " (forced past a failed preflight)"
        return self._result(msg, [entry], [role], [before, model])

    async def rollback(self, role: str, *, actor: str = "operator") -> ChangeResult:
        try:
            entry = await self._commit(lambda: self.state.rollback_role(role, actor=actor))
        except ChangeRefused as exc:
            return ChangeResult(ok=False, message=str(exc))
        before, after = str(entry.before["model"]), str(entry.after["model"])
        return self._result(f"{role}: {before} -> {after}", [entry], [role], [before, after])

    async def rollback_trial(self, *, actor: str = "operator") -> ChangeResult:
        try:
            entries = await self._commit(lambda: self.state.rollback_trial(actor=actor))
        except ChangeRefused as exc:
            return ChangeResult(ok=False, message=str(exc))
        moved = ", ".join(f"{e.target} -> {e.after['model']}" for e in entries)
        models = [str(m) for e in entries for m in (e.before["model"], e.after["model"])]
        return self._result(
            f"rolled back {len(entries)} role(s): {moved}", entries, [e.target for e in entries], models
        )

    async def promote(self, role: str, *, actor: str = "operator") -> ChangeResult:
        """End the trial for ``role``: keep its model; its baseline stops being the rollback target."""
        try:
            entry = await self._commit(lambda: self.state.promote_role(role, actor=actor))
        except ChangeRefused as exc:
            return ChangeResult(ok=False, message=str(exc))
        return self._result(f"{role}: promoted {entry.after['model']} (trial ended)", [entry], [role], [])

    async def trial_scorecard(self, since: float | None = None, until: float | None = None) -> Scorecard:
        """The trial scorecard from this gateway's history (read in a worker thread)."""
        from ..telemetry import HistoryError
        from ..trial import scorecard_from_state

        path = getattr(self.telemetry, "history_path", None)
        if path is None:
            raise Unavailable("this gateway keeps no request history (gateway.history is off): no scorecard")
        flush = getattr(self.telemetry, "flush", None)
        if flush is not None:
            await flush()  # the newest requests are in the scorecard too
        try:
            used = {}
            if self.hosts is not None:  # measured host memory, where a probe reported it
                used = {h: p.memory_used_gb for h, p in self.hosts.probes().items() if p.memory_used_gb is not None}
            return await asyncio.to_thread(
                scorecard_from_state, self.state, path, since=since, until=until, host_used=used
            )
        except HistoryError as exc:
            raise Unavailable(str(exc)) from None
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    async def set_deprecated(
        self, model: str, deprecated: bool, *, sunset: str | None = None, actor: str = "operator"
    ) -> ChangeResult:
        date: dt.date | None = None
        if deprecated and sunset:
            try:
                date = dt.date.fromisoformat(sunset)
            except ValueError:
                return ChangeResult(ok=False, message=f"sunset {sunset!r} is not a date (expected YYYY-MM-DD)")
        try:
            entry = await self._commit(lambda: self.state.set_deprecated(model, deprecated, actor=actor, sunset=date))
        except ChangeRefused as exc:
            return ChangeResult(ok=False, message=str(exc))
        what = (
            f"deprecated until {date.isoformat()}"
            if deprecated and date
            else ("deprecated" if deprecated else "no longer deprecated")
        )
        return self._result(f"{model}: {what}", [entry], [], [model])
