"""Build the console's ``Snapshot`` from the gateway's live state (cheap: called about once a second)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ..config.models import BackendKind, ThinkingPolicy
from ..schema import BackendInfo, HostInfo, ModelInfo, RoleInfo, Snapshot
from .backends import DOWN, READY, STARTING, UNKNOWN, BackendRuntime

if TYPE_CHECKING:
    from .app import Gateway

__all__ = ["backend_loaded_models", "build_snapshot"]


def backend_loaded_models(gw: Gateway, b: BackendRuntime) -> list[str] | None:
    """Model ids loaded on ``b`` right now (None: the backend's state is not known yet)."""
    placed = gw.placements_on(b.name)  # upstream name -> model id
    if b.kind is BackendKind.LLAMA_SWAP:
        if b.health != READY:
            return None if b.health == UNKNOWN else []
        return sorted({placed.get(n, n) for n in b.loaded})
    # One server, one model: a ready backend has its model(s) loaded.
    if b.health == READY:
        return sorted(set(placed.values()))
    if b.health in (DOWN, STARTING):
        return []
    return None


def build_snapshot(gw: Gateway) -> Snapshot:
    state = gw.state
    cat = state.catalog
    roles = [
        RoleInfo(
            name=r.name,
            model=r.model,
            previous=r.previous,
            fallbacks=list(r.fallbacks),
            requires=[c.value for c in r.requires],
            in_trial=r.in_trial,
            rollback_by=r.rollback_by.isoformat() if r.rollback_by else None,
            changed_at=r.changed_at,
            changed_by=r.changed_by,
        )
        for r in state.roles().values()
    ]

    loaded_by_backend = {name: backend_loaded_models(gw, b) for name, b in gw.backends.items()}
    models = []
    for mid, mv in state.models().items():
        m = cat.models[mid]
        fam = cat.families.get(mv.family)
        seen = [loaded_by_backend.get(p.backend) for p in m.placements]
        if any(s is not None and mid in s for s in seen):
            loaded: bool | None = True
        elif seen and all(s is not None for s in seen):
            loaded = False
        else:
            loaded = None
        models.append(
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
            )
        )

    probes = gw.hosts.probes() if gw.hosts is not None else {}
    hosts = []
    for hname, h in cat.hosts.items():
        backends = []
        for bname, b in gw.backends.items():
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
            _from_backends(info, gw, backends)
        hosts.append(info)

    trial = cat.trial
    return Snapshot(
        gateway_url=gw.url,
        config_path=gw.config_path,
        trial=trial.name if trial else None,
        trial_rollback_by=trial.rollback_by.isoformat() if trial and trial.rollback_by else None,
        roles=roles,
        models=models,
        hosts=hosts,
        telemetry=gw.telemetry.info(inflight=gw.inflight),
        jobs=gw.hosts.jobs() if gw.hosts is not None else [],
        warnings=list(state.warnings) + gw.warnings(),
        taken_at=time.time(),
    )


def _from_backends(info: HostInfo, gw: Gateway, backends: list[BackendInfo]) -> None:
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
        models = gw.state.models()
        info.memory_used_gb = round(sum(models[m].memory_gb for m in loaded if m in models), 2)
        info.memory_source = "catalog footprint of loaded models"
    down = [f"{b.name}: {b.detail}" for b in backends if b.health in (DOWN, "circuit-open") and b.detail]
    info.error = "; ".join(down) or None
