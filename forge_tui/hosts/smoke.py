"""Which roles a host serves, and smoking them through the gateway on behalf of a job.

The requests themselves are ``forge_tui.smoke`` (the same ones ``forge-tui smoke`` and the
console send). What a job adds: a role answered by another host (a fallback) does not count as
this host passing, because ``x-forge-route`` names the host that answered.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import httpx

from ..config.models import BackendKind, Capability, Catalog
from ..smoke import smoke_role
from ..state import RoutingState

__all__ = ["LLAMA_KINDS", "RoleCheck", "roles_served_by", "route_host", "smoke_host_roles"]

# Backends whose binary a rebuild replaces.
LLAMA_KINDS = (BackendKind.LLAMA_SWAP, BackendKind.LLAMA_SERVER)


@dataclass(frozen=True, slots=True)
class RoleCheck:
    role: str
    model: str
    ok: bool
    detail: str
    # The routed model on this host answered (HTTP 200), and only the answer's shape failed
    # (a leaked template token, an echo): a matter of the model, not of the serving stack.
    shape_only: bool = False


def roles_served_by(catalog: Catalog, state: RoutingState | None, host: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """role -> (model, required capabilities) for the roles whose current model is served by
    ``host`` through llama.cpp (its first placement: the one the gateway tries first). Audio roles
    are left out: the binary a rebuild replaces does not serve them."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    if state is not None:
        roles = {n: (r.model, tuple(c.value for c in r.requires)) for n, r in state.roles().items()}
    else:
        roles = {n: (r.model, tuple(c.value for c in r.required(n))) for n, r in catalog.roles.items()}
    for role, (model_id, requires) in sorted(roles.items()):
        m = catalog.models.get(model_id)
        if m is None or Capability.AUDIO in m.capabilities:
            continue
        b = catalog.backends[m.placements[0].backend]
        if b.host == host and b.kind in LLAMA_KINDS:
            out[role] = (model_id, requires)
    return out


def route_host(header: str | None) -> str | None:
    """The host named in ``x-forge-route`` (``role=...; model=...; host=NAME; backend=...``)."""
    if not header:
        return None
    m = re.search(r"(?:^|[;,\s])host=([^;,\s]+)", header)
    return m.group(1) if m else None


async def smoke_host_roles(
    gateway_url: str,
    roles: dict[str, tuple[str, tuple[str, ...]]],
    host: str,
    *,
    api_key: str | None = None,
    timeout: float = 180.0,
    known_as: Mapping[str, Collection[str]] | None = None,
) -> list[RoleCheck]:
    out = []
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(base_url=gateway_url.rstrip("/"), timeout=timeout, headers=headers) as client:
        for role, (model, requires) in roles.items():
            r = await smoke_role(gateway_url, role, requires, timeout=timeout, client=client, known_as=known_as)
            answered = route_host(r.route)
            if not r.ok:
                shape = r.status == 200 and answered in (None, host) and not r.reason.startswith("answered by model")
                out.append(RoleCheck(role, model, False, f"{r.reason} ({r.kind}, {r.latency_ms:.0f} ms)", shape))
            elif answered is not None and answered != host:
                out.append(RoleCheck(role, model, False, f"answered by {answered} (a fallback), not by {host}"))
            else:
                where = f"by {answered}" if answered else "(no x-forge-route to name the host)"
                out.append(RoleCheck(role, model, True, f"{r.kind} HTTP {r.status} in {r.latency_ms:.0f} ms {where}"))
    return out
