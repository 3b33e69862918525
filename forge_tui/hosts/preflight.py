"""Preflight checks of a role change, each pass / warn / fail with its evidence.

The three questions of the migration: are the weights on the host that will serve the model,
does that host's serving build know the architecture (asked of the binary, see ``archcheck``),
and does the hot set still fit the host's memory budget. The pure parts live here; gathering
the evidence over SSH is ``HostsService.preflight``.
"""

from __future__ import annotations

from ..config.models import Catalog, ModelState
from ..schema import PreflightCheck
from ..state import ModelView, RoleView, RoutingState
from .archcheck import ArchVerdict

__all__ = ["FAIL", "PASS", "WARN", "arch_check", "capability_check", "memory_check", "primary_host"]

PASS, WARN, FAIL = "pass", "warn", "fail"
NEAR_BUDGET = 0.9  # warn above this share of the budget


def primary_host(catalog: Catalog, model_id: str) -> tuple[str, str]:
    """(host, backend) of the model's first placement: where the gateway sends it first."""
    p = catalog.models[model_id].placements[0]
    return catalog.backends[p.backend].host, p.backend


def capability_check(role: RoleView, model: ModelView) -> PreflightCheck:
    missing = [c.value for c in role.requires if c not in model.capabilities]
    have = ", ".join(c.value for c in model.capabilities) or "none"
    if model.state is ModelState.DISABLED:
        return PreflightCheck(name="capabilities", outcome=FAIL, evidence=f"{model.id} is disabled in the catalog")
    if missing:
        return PreflightCheck(
            name="capabilities", outcome=FAIL, evidence=f"{role.name} needs {', '.join(missing)}; {model.id} has {have}"
        )
    need = ", ".join(c.value for c in role.requires)
    return PreflightCheck(
        name="capabilities", outcome=PASS, evidence=f"{role.name} needs {need}; {model.id} has {have}"
    )


def arch_check(architecture: str, verdict: ArchVerdict, binary_label: str, host: str) -> PreflightCheck:
    if verdict.outcome == "known":
        return PreflightCheck(
            name="architecture",
            outcome=PASS,
            evidence=f"{binary_label} on {host} knows {architecture!r} ({verdict.evidence})",
        )
    if verdict.outcome == "unknown":
        return PreflightCheck(
            name="architecture",
            outcome=FAIL,
            evidence=f"{binary_label} on {host}: {verdict.evidence} (rebuild: forge-tui job rebuild {host})",
        )
    return PreflightCheck(
        name="architecture",
        outcome=WARN,
        evidence=f"could not prove {binary_label} on {host} knows {architecture!r}: {verdict.evidence}",
    )


def memory_check(
    catalog: Catalog,
    state: RoutingState,
    role: str,
    model: str,
    host: str,
    *,
    measured_total_gb: float | None = None,
) -> PreflightCheck:
    """The hot set on ``host`` after the change: models kept hot plus every model a role routes to
    (an on-demand or cold model that holds a role gets loaded by the next request), counted on the
    host of its first placement, against ``memory_budget_gb``."""
    after = {name: rv.model for name, rv in state.roles().items()}
    after[role] = model
    hot: list[tuple[str, float, str]] = []
    for mid, mv in state.models().items():
        if mv.state is ModelState.DISABLED or primary_host(catalog, mid)[0] != host:
            continue
        routed = sorted(r for r, m in after.items() if m == mid)
        if mv.state is ModelState.HOT or routed:
            why = ("roles " if len(routed) > 1 else "role ") + ",".join(routed) if routed else "kept hot"
            hot.append((mid, mv.memory_gb, why))
    total = sum(gb for _, gb, _ in hot)
    budget = catalog.hosts[host].memory_budget_gb
    listing = ", ".join(f"{mid} {gb:g} GB ({why})" for mid, gb, why in sorted(hot, key=lambda x: -x[1])) or "nothing"
    evidence = f"hot on {host} after the change: {listing} = {total:.1f} GB of the {budget:g} GB budget"
    if total > budget:
        return PreflightCheck(name="memory", outcome=FAIL, evidence=evidence)
    if measured_total_gb is not None and total > measured_total_gb:
        return PreflightCheck(
            name="memory",
            outcome=WARN,
            evidence=f"{evidence}; the host reports only {measured_total_gb:.1f} GB in total",
        )
    if total > NEAR_BUDGET * budget:
        return PreflightCheck(name="memory", outcome=WARN, evidence=f"{evidence} (over {NEAR_BUDGET:.0%})")
    return PreflightCheck(name="memory", outcome=PASS, evidence=evidence)
