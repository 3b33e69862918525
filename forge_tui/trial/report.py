"""Build a scorecard from files: the catalog, the routing state (trial records, audit log) and
the history database. No gateway needed; the operator service calls the same function."""

from __future__ import annotations

import datetime as dt
import importlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..config.models import Catalog, TrialCriteria
from ..state import RoutingState
from ..telemetry._history import open_for_read
from .schema import Scorecard
from .score import MemoryInfo, score
from .segments import AuditLike, RoleLike, audit_time, trial_roles
from .window import Cell, load_cells

__all__ = ["default_window", "eval_pass_rates", "memory_info", "scorecard", "scorecard_from_state"]

_BASELINE_LOOKBACK_S = 7 * 86400.0  # baseline traffic before the trial began, by default


def memory_info(catalog: Catalog, host_used: Mapping[str, float] | None = None) -> dict[str, MemoryInfo]:
    """Catalog footprint per model, on the host of its first placement, with that host's budget and,
    where a host probe measured it, the memory in use on that host now (all its models together)."""
    out = {}
    for mid, m in catalog.models.items():
        host = catalog.backends[m.placements[0].backend].host if m.placements else None
        budget = catalog.hosts[host].memory_budget_gb if host in catalog.hosts else None
        out[mid] = MemoryInfo(m.memory_gb or None, host, budget, (host_used or {}).get(host or ""))
    return out


def eval_pass_rates(db_path: Path, since: float | None, until: float | None) -> dict[str, tuple[int, int]] | None:
    """Eval pass rates per model from the eval helper's store, or None when there are none."""
    try:
        store = importlib.import_module("forge_tui.evals.store")
    except ImportError:
        return None
    fn = getattr(store, "pass_rates", None)
    if fn is None:
        return None
    try:
        rates = fn(db_path, since, until)
    except Exception:  # a store from another version, a missing table: show "-", never fail the report
        return None
    return dict(rates) if rates else None


def default_window(
    catalog: Catalog, roles: Sequence[RoleLike], audit: Sequence[AuditLike], now: float
) -> tuple[float, float]:
    """From a week before the trial began (its first swap, or the catalog's start date) until now."""
    starts = [t for e in audit if e.action == "swap" and (t := audit_time(e)) is not None]
    if catalog.trial and catalog.trial.started:
        starts.append(dt.datetime.combine(catalog.trial.started, dt.time(), dt.UTC).timestamp())
    for r in roles:
        since = getattr(r, "trial_since", None)
        if since:
            try:
                d = dt.datetime.fromisoformat(str(since))
                starts.append((d if d.tzinfo else d.replace(tzinfo=dt.UTC)).timestamp())
            except ValueError:
                pass
    begin = min(starts) if starts else now - _BASELINE_LOOKBACK_S
    return begin - _BASELINE_LOOKBACK_S, now


def scorecard(
    catalog: Catalog,
    roles: Sequence[RoleLike],
    audit: Sequence[AuditLike],
    history: Path,
    *,
    since: float | None = None,
    until: float | None = None,
    now: float | None = None,
    host_used: Mapping[str, float] | None = None,
    criteria: TrialCriteria | None = None,
) -> Scorecard:
    """The scorecard over [since, until) (defaults: ``default_window``). Raises HistoryError."""
    now = time.time() if now is None else now
    d_since, d_until = default_window(catalog, roles, audit, now)
    since = d_since if since is None else since
    until = d_until if until is None else until
    if until <= since:
        raise ValueError(f"the window is empty: since {since} is not before until {until}")
    crit = criteria or (catalog.trial.criteria if catalog.trial else TrialCriteria())
    troles = trial_roles(roles, audit, since, until)
    notes: list[str] = []
    cells: list[Cell] = []
    if Path(history).is_file():
        open_for_read(Path(history))
        cells, notes = load_cells(Path(history), since, until, [r.name for r in troles] + [""])
    else:
        notes.append(f"no history at {history}: nothing recorded yet")
    return score(
        cells,
        troles,
        crit,
        since=since,
        until=until,
        generated_at=now,
        trial_name=catalog.trial.name if catalog.trial else None,
        evals=eval_pass_rates(Path(history), since, until),
        memory=memory_info(catalog, host_used),
        notes=notes,
    )


def scorecard_from_state(
    state: RoutingState,
    history: Path,
    *,
    since: float | None = None,
    until: float | None = None,
    now: float | None = None,
    host_used: Mapping[str, float] | None = None,
) -> Scorecard:
    """Same, reading roles and the audit log from a RoutingState (the gateway's or a fresh one)."""
    return scorecard(
        state.catalog,
        list(state.roles().values()),
        state.audit_log(limit=100_000),
        history,
        since=since,
        until=until,
        now=now,
        host_used=host_used,
    )
