"""Build the console's ``Snapshot`` (and single rows of it) from the live parts (cheap: about once a second).

The gateway contributes its backends (health, slots, what is loaded), its URL and in-flight count;
the hosts service its probes and jobs; the routing state the roles and models. Any part may be
absent (no gateway yet, hosts disabled): the snapshot then says less, never something untrue.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..config.models import BackendKind, ThinkingPolicy
from ..gateway.backends import DOWN, READY, STARTING, UNKNOWN, BackendRuntime
from ..health import known_names, models_held
from ..schema import BackendInfo, HostInfo, ModelInfo, RoleInfo, Snapshot
from ..state import RoleView, RoutingState

if TYPE_CHECKING:
    from ..gateway.app import Gateway
    from .service import HostsLike, TelemetryView

__all__ = ["backend_loaded_models", "build_snapshot", "model_infos", "role_infos"]


def backend_loaded_models(gw: Gateway, b: BackendRuntime) -> list[str] | None:
    """Model ids loaded on ``b`` right now (None: the backend's state is not known yet)."""
    placed = gw.placements_on(b.name)  # upstream name -> model id
    if b.kind is BackendKind.LLAMA_SWAP:
        if b.health != READY:
            return None if b.health == UNKNOWN else []
        return sorted({placed.get(n, n) for n in b.loaded})
    # A llama-server holds the one file it was started with, whatever the catalog places on it:
    # what it reports (/props, /v1/models) decides. Other kinds do not say what is loaded (None).
    if b.health == READY:
        held = gw.health.state(b.name).holds
        return None if held is None else models_held(gw.catalog, b.name, held)
    if b.health in (DOWN, STARTING):
        return []
    return None


def _loaded_by_backend(gw: Gateway | None) -> dict[str, list[str] | None]:
    if gw is None:
        return {}
    return {name: backend_loaded_models(gw, b) for name, b in gw.backends.items()}


def _role_info(r: RoleView) -> RoleInfo:
    return RoleInfo(
        name=r.name,
        model=r.model,
        previous=r.previous,
        fallbacks=list(r.fallbacks),
        requires=[c.value for c in r.requires],
        in_trial=r.in_trial,
        baseline=r.baseline,
        rollback_by=r.rollback_by.isoformat() if r.rollback_by else None,
        changed_at=r.changed_at,
        changed_by=r.changed_by,
    )


def role_infos(state: RoutingState, names: Iterable[str]) -> list[RoleInfo]:
    """The rows of the named roles (unknown names skipped), in the order given, each once."""
    roles = state.roles()
    return [_role_info(roles[n]) for n in dict.fromkeys(names) if n in roles]


def _model_infos(
    state: RoutingState, ids: Iterable[str], loaded_by_backend: dict[str, list[str] | None]
) -> list[ModelInfo]:
    cat = state.catalog
    views = state.models()
    out = []
    for mid in dict.fromkeys(ids):
        mv = views.get(mid)
        if mv is None:
            continue
        m = cat.models[mid]
        fam = cat.families.get(mv.family)
        seen = [loaded_by_backend.get(p.backend) for p in m.placements]
        if any(s is not None and mid in s for s in seen):
            loaded: bool | None = True
        elif seen and all(s is not None for s in seen):
            loaded = False
        else:
            loaded = None
        out.append(
            ModelInfo(
                id=mid,
                family=mv.family,
                architecture=mv.architecture,
                capabilities=[c.value for c in mv.capabilities],
                state=mv.state.value,
                deprecated=mv.deprecated,
                sunset=mv.sunset.isoformat() if mv.sunset else None,
                memory_gb=mv.memory_gb,
                hosts=list(mv.hosts),
                roles=state.roles_using(mid),
                thinking=(fam.thinking if fam else ThinkingPolicy.NONE).value,
                loaded=loaded,
                answers_as=sorted({n for p in m.placements for n in known_names(cat, mid, p.backend)}),
            )
        )
    return out


def model_infos(state: RoutingState, gw: Gateway | None, ids: Iterable[str]) -> list[ModelInfo]:
    """The rows of the named models (unknown ids skipped), in the order given, each once."""
    return _model_infos(state, ids, _loaded_by_backend(gw))


def build_snapshot(
    state: RoutingState, gw: Gateway | None, hosts_svc: HostsLike | None, telemetry: TelemetryView | None
) -> Snapshot:
    cat = state.catalog
    roles = [_role_info(r) for r in state.roles().values()]
    loaded_by_backend = _loaded_by_backend(gw)
    models = _model_infos(state, state.models(), loaded_by_backend)

    probes = hosts_svc.probes() if hosts_svc is not None else {}
    backends_rt = gw.backends if gw is not None else {}
    hosts = []
    for hname, h in cat.hosts.items():
        backends = []
        for bname, b in backends_rt.items():
            if b.host != hname:
                continue
            backends.append(
                BackendInfo(
                    name=bname,
                    host=hname,
                    kind=b.kind.value,
                    base_url=b.cfg.base_url,
                    health=b.status_label(),
                    detail=b.detail,
                    inflight=b.limiter.inflight,
                    queued=b.limiter.queued,
                    max_concurrency=b.limiter.limit,
                    loaded_models=loaded_by_backend.get(bname) or [],
                    checked_at=b.checked_at,
                )
            )
        info = HostInfo(
            name=hname,
            address=h.address,
            platform=h.platform.value,
            memory_budget_gb=h.memory_budget_gb,
            backends=backends,
        )
        p = probes.get(hname)
        if p is not None:
            info.reachable = p.reachable
            info.memory_used_gb = p.memory_used_gb
            info.memory_total_gb = p.memory_total_gb
            info.memory_source = p.memory_source
            info.serving_version = p.serving_version
            info.probed_at = p.probed_at
            info.error = p.error
        else:
            _from_backends(info, state, backends)
        hosts.append(info)

    trial = cat.trial
    inflight = gw.inflight if gw is not None else 0
    snap = Snapshot(
        gateway_url=gw.url if gw is not None else "",
        config_path=gw.config_path if gw is not None else None,
        trial=trial.name if trial else None,
        trial_rollback_by=trial.rollback_by.isoformat() if trial and trial.rollback_by else None,
        trial_status=state.trial_status(),
        roles=roles,
        models=models,
        hosts=hosts,
        jobs=hosts_svc.jobs() if hosts_svc is not None else [],
        warnings=list(state.warnings) + (gw.warnings() if gw is not None else []),
        taken_at=time.time(),
    )
    if telemetry is not None:
        snap.telemetry = telemetry.info(inflight=inflight)
        snap.telemetry.history_error = telemetry.history_error
    return snap


def _from_backends(info: HostInfo, state: RoutingState, backends: list[BackendInfo]) -> None:
    """No host probe: what the backends say (reachable if any answers; memory = catalog sizes of loaded models)."""
    healths = [b.health for b in backends]
    if any(h in (READY, STARTING) for h in healths):
        info.reachable = True
    elif healths and all(h in (DOWN, "circuit-open") for h in healths):
        info.reachable = False
    checked = [b.checked_at for b in backends if b.checked_at]
    info.probed_at = max(checked) if checked else None
    loaded = {m for b in backends for m in b.loaded_models}
    if loaded:
        models = state.models()
        info.memory_used_gb = round(sum(models[m].memory_gb for m in loaded if m in models), 2)
        info.memory_source = "catalog footprint of loaded models"
    down = [f"{b.name}: {b.detail}" for b in backends if b.health in (DOWN, "circuit-open") and b.detail]
    info.error = "; ".join(down) or None
