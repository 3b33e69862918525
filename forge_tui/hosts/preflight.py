"""Preflight checks of a role change, each pass / warn / fail with its evidence.

The questions of the migration: does the backend serve the model at all (a bare llama-server
serves only the GGUF it was started with), are the weights on the host that will serve it, does
that host's serving build know the architecture (asked of the binary, see ``archcheck``), and
does the hot set still fit the host's memory budget. The pure parts live here; gathering the
evidence is ``preflighter.Preflighter``.

Fails closed: a check that could not be made is ``unproven`` and blocks like a failure (a swap
can still be forced, and the force is audited); its ``fix`` says what would let it run.
"""

from __future__ import annotations

from ..config.models import BackendKind, Catalog, ModelState
from ..health import BackendState, known_names, matches
from ..schema import PreflightCheck
from ..state import ModelView, RoleView, RoutingState
from .archcheck import ArchVerdict

__all__ = [
    "BLOCKING",
    "FAIL",
    "PASS",
    "UNPROVEN",
    "WARN",
    "arch_check",
    "capability_check",
    "memory_check",
    "primary_host",
    "serves_check",
    "unproven",
]

PASS, WARN, FAIL = "pass", "warn", "fail"
UNPROVEN = "unproven"  # could not be checked: blocks like a failure unless forced
BLOCKING = frozenset({FAIL, UNPROVEN})


def unproven(name: str, evidence: str, fix: str) -> PreflightCheck:
    return PreflightCheck(name=name, outcome=UNPROVEN, evidence=evidence, fix=fix)


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


def arch_check(
    architecture: str, verdict: ArchVerdict, binary_label: str, host: str, source: str = ""
) -> PreflightCheck:
    if verdict.outcome == "known":
        return PreflightCheck(
            name="architecture",
            outcome=PASS,
            evidence=f"{binary_label} on {host} knows {architecture!r}: {verdict.evidence}",
        )
    if verdict.outcome == "unknown":
        return PreflightCheck(
            name="architecture",
            outcome=FAIL,
            evidence=f"{binary_label} on {host}: {verdict.evidence}",
            fix=f"rebuild the serving stack: forge-tui job rebuild {host}",
        )
    where = f" (from {source})" if source else ""
    missing = verdict.evidence.startswith(("no llama-server at", "cannot run"))
    fix = (
        f"install or build llama-server there (forge-tui job rebuild {host}), or point "
        f"hosts.{host}.serving_binary at the binary"
        if missing
        else f"run the check by hand: {binary_label} -m <a GGUF declaring {architecture!r}> on {host}"
    )
    return unproven(
        "architecture",
        f"could not prove {binary_label}{where} on {host} knows {architecture!r}: {verdict.evidence}",
        fix,
    )


def serves_check(
    catalog: Catalog, model: str, backend: str, st: BackendState, also: frozenset[str] = frozenset()
) -> PreflightCheck:
    """Can ``backend`` answer for ``model``, by what the backend itself reports (not the catalog)?
    ``also``: more names the model's file goes by (its symlink target on the host)."""
    b = catalog.backends[backend]
    names = known_names(catalog, model, backend) | also
    upstream = next((p.name or model for p in catalog.models[model].placements if p.backend == backend), model)
    if b.kind is BackendKind.AUDIO_SIDECAR:
        return PreflightCheck(
            name="serves", outcome=WARN, evidence=f"{backend} is an audio sidecar: it has no model list to check"
        )
    if not st.ready:
        why = st.detail or ("not probed yet" if st.checked_at is None else st.health.value)
        return unproven(
            "serves",
            f"cannot tell what {backend} ({b.kind.value}) serves: it is {st.health.value} ({why})",
            f"start {backend} at {b.base_url} (forge-tui hosts probe {b.host} shows it), then run the preflight again",
        )
    if b.kind is BackendKind.LLAMA_SERVER:
        if st.holds is None:
            return unproven(
                "serves",
                f"{backend} is up but its /props and /v1/models did not say which model it holds",
                f"start llama-server with --props (or a build that answers /v1/models) on {b.host}",
            )
        shown = st.model_path or ", ".join(sorted(st.holds)) or "nothing"
        if matches(st.holds, names):
            return PreflightCheck(name="serves", outcome=PASS, evidence=f"{backend} holds {shown}")
        gguf = catalog.models[model].gguf
        return PreflightCheck(
            name="serves",
            outcome=FAIL,
            evidence=(
                f"{backend} is a llama-server holding {shown}, not {model}"
                + (f" ({gguf})" if gguf else "")
                + ": it answers every request with the model it was started with"
            ),
            fix=f"start {backend} with {model}'s GGUF, or place {model} on a llama-swap backend",
        )
    if st.serves is None:
        return unproven(
            "serves",
            f"{backend} is up but its /v1/models did not answer: cannot tell whether it knows {upstream!r}",
            f"check {b.base_url}/v1/models",
        )
    loaded = st.holds is not None and matches(st.holds, names)
    if matches(st.serves, names):
        now = "loaded now" if loaded else "loaded on the first request"
        return PreflightCheck(name="serves", outcome=PASS, evidence=f"{backend} lists {upstream!r} ({now})")
    listed = ", ".join(sorted(st.serves)[:8]) or "nothing"
    return PreflightCheck(
        name="serves",
        outcome=FAIL,
        evidence=f"{backend} ({b.kind.value}) does not list {upstream!r} in /v1/models (it lists {listed})",
        fix=f"add {upstream!r} to {backend}'s own config, or fix the placement name in the catalog",
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
