"""The operator's changes (swap, rollback, trial rollback, deprecation), validated and audited.

Both the admin API (attach mode) and the in-process control call these, so a change means
the same thing whichever way the console reaches the gateway.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Any, Protocol

from .schema import AuditInfo, ChangeResult, PreflightResult
from .state import AuditEntry, ChangeRefused, RoutingState

__all__ = ["Preflighter", "audit_infos", "change_payload", "rollback", "rollback_trial", "set_deprecated", "swap"]


class Preflighter(Protocol):
    async def preflight(self, role: str, model: str, state: RoutingState) -> PreflightResult: ...


def _info(e: AuditEntry) -> AuditInfo:
    return AuditInfo(**asdict(e))


def audit_infos(entries: list[AuditEntry]) -> list[AuditInfo]:
    return [_info(e) for e in entries]


async def swap(
    state: RoutingState, hosts: Preflighter | None, role: str, model: str, *, force: bool, actor: str
) -> ChangeResult:
    """Swap ``role`` to ``model``. A failed preflight blocks unless forced; a force is audited."""
    rv = state.role(role)
    if rv is None:
        return ChangeResult(ok=False, message=f"unknown role {role!r} (roles: {', '.join(sorted(state.roles()))})")
    forced_note: str | None = None
    if hosts is not None:
        try:
            pf = await hosts.preflight(role, model, state)
        except ChangeRefused as exc:
            return ChangeResult(ok=False, message=str(exc))
        failed = [c for c in pf.checks if c.outcome == "fail"]
        if failed:
            evidence = "; ".join(f"{c.name}: {c.evidence}" for c in failed)
            if not force:
                return ChangeResult(ok=False, message=f"preflight failed for {model!r} in {role!r}: {evidence}")
            forced_note = evidence
    try:
        entry = state.swap_role(role, model, actor=actor, forced=forced_note)
    except ChangeRefused as exc:
        return ChangeResult(ok=False, message=str(exc))
    msg = f"{role}: {entry.before['model']} -> {model}"
    if forced_note:
        msg += " (forced past a failed preflight)"
    return ChangeResult(ok=True, message=msg, audit=[_info(entry)])


def rollback(state: RoutingState, role: str, *, actor: str) -> ChangeResult:
    try:
        entry = state.rollback_role(role, actor=actor)
    except ChangeRefused as exc:
        return ChangeResult(ok=False, message=str(exc))
    return ChangeResult(
        ok=True, message=f"{role}: {entry.before['model']} -> {entry.after['model']}", audit=[_info(entry)]
    )


def rollback_trial(state: RoutingState, *, actor: str) -> ChangeResult:
    try:
        entries = state.rollback_trial(actor=actor)
    except ChangeRefused as exc:
        return ChangeResult(ok=False, message=str(exc))
    moved = ", ".join(f"{e.target} -> {e.after['model']}" for e in entries)
    return ChangeResult(ok=True, message=f"rolled back {len(entries)} role(s): {moved}", audit=audit_infos(entries))


def set_deprecated(
    state: RoutingState, model: str, deprecated: bool, *, sunset: str | None, actor: str
) -> ChangeResult:
    date: dt.date | None = None
    if deprecated and sunset:
        try:
            date = dt.date.fromisoformat(sunset)
        except ValueError:
            return ChangeResult(ok=False, message=f"sunset {sunset!r} is not a date (expected YYYY-MM-DD)")
    try:
        entry = state.set_deprecated(model, deprecated, actor=actor, sunset=date)
    except ChangeRefused as exc:
        return ChangeResult(ok=False, message=str(exc))
    what = (
        f"deprecated until {date.isoformat()}"
        if deprecated and date
        else ("deprecated" if deprecated else "no longer deprecated")
    )
    return ChangeResult(ok=True, message=f"{model}: {what}", audit=[_info(entry)])


def change_payload(result: ChangeResult) -> dict[str, Any]:
    return result.model_dump(mode="json")
