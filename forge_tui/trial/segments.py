"""Which roles are in the trial, their baseline and trial model, and the segments of the window
in which each model held the role: from the routing state and the audit log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .schema import Mark

__all__ = ["AuditLike", "RoleLike", "TrialRole", "audit_time", "trial_roles"]

_CHANGES = ("swap", "rollback", "rollback-trial")
_MARKED = (*_CHANGES, "promote")


class RoleLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def baseline(self) -> str | None: ...
    @property
    def trial_status(self) -> str | None: ...


class AuditLike(Protocol):
    @property
    def time(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def before(self) -> Any: ...
    @property
    def after(self) -> Any: ...
    @property
    def note(self) -> str: ...


@dataclass(slots=True)
class TrialRole:
    name: str
    status: str | None
    baseline: str | None
    trial_model: str | None
    current_model: str
    segments: list[tuple[float, float, str]] = field(default_factory=list)  # (start, end, model) in the window
    marks: list[Mark] = field(default_factory=list)

    def model_at(self, t: float) -> str | None:
        for start, end, model in self.segments:
            if start <= t < end:
                return model
        return self.segments[-1][2] if self.segments and t >= self.segments[-1][1] else None

    def hours_on(self, model: str | None) -> float:
        if model is None:
            return 0.0
        return sum(end - start for start, end, m in self.segments if m == model) / 3600.0


def audit_time(entry: AuditLike) -> float | None:
    try:
        t = dt.datetime.fromisoformat(entry.time)
    except (TypeError, ValueError):
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def _model(v: Any) -> str | None:
    m = v.get("model") if isinstance(v, dict) else None
    return m if isinstance(m, str) else None


def trial_roles(roles: Iterable[RoleLike], audit: Sequence[AuditLike], since: float, until: float) -> list[TrialRole]:
    """Every role with a trial record (active, rolled back or promoted), sorted by name."""
    dated = sorted(
        ((t, e) for e in audit if (t := audit_time(e)) is not None and e.action in _MARKED), key=lambda p: p[0]
    )
    out: list[TrialRole] = []
    for r in sorted(roles, key=lambda r: r.name):
        if not r.trial_status:
            continue
        mine = [(t, e) for t, e in dated if e.target == r.name]
        changes = [(t, e) for t, e in mine if e.action in _CHANGES]
        trial_model = r.model if r.model != r.baseline else None
        if trial_model is None:  # rolled back: the trial model is the last non-baseline one it had
            for _, e in reversed(changes):
                for m in (_model(e.after), _model(e.before)):
                    if m and m != r.baseline:
                        trial_model = m
                        break
                if trial_model:
                    break
        # the model in force at ``since``: the last change before it, else the first change's before
        start_model = _model(changes[0][1].before) if changes else r.model
        for t, e in changes:
            if t < since:
                start_model = _model(e.after) or start_model
        points: list[tuple[float, str]] = [(since, start_model or r.model)]
        for t, e in changes:
            m = _model(e.after)
            if since <= t < until and m:
                points.append((t, m))
        segments = [
            (start, points[i + 1][0] if i + 1 < len(points) else until, m) for i, (start, m) in enumerate(points)
        ]
        marks = [
            Mark(
                time=t,
                action=e.action,
                model=_model(e.after),
                label=f"{e.action} -> {_model(e.after)}" if e.action != "promote" else f"promote {_model(e.after)}",
                forced="forced" in (e.note or ""),
            )
            for t, e in mine
            if since <= t < until
        ]
        out.append(
            TrialRole(
                name=r.name,
                status=r.trial_status,
                baseline=r.baseline,
                trial_model=trial_model,
                current_model=r.model,
                segments=[s for s in segments if s[1] > s[0]],
                marks=marks,
            )
        )
    return out
