"""Resolve a request's ``model`` (role name, model id, ``auto`` or absent) to ordered candidates.

The table is precomputed from the effective ``RoutingState`` and rebuilt only when the state
changes, so the request path does a dict lookup, never a walk over the catalog.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass
from email.utils import format_datetime
from typing import Any

from ..config.models import ModelState, Role, ThinkingPolicy
from ..state import RoutingState
from .errors import NotFound

__all__ = ["AUTO", "Candidate", "Route", "RouteTable", "classify", "pin"]

AUTO = "auto"

# Endpoint kinds and the role each classifies to when the caller names no model.
_KIND_ROLE = {
    "chat": "default-chat",
    "completions": "default-chat",
    "embeddings": "embed",
    "transcriptions": "transcribe",
    "audio_qa": "audio-qa",
}
_CHAT_LIKE = frozenset({"chat", "completions"})


@dataclass(frozen=True, slots=True)
class Candidate:
    """One place a request can be sent: a model's placement on a backend."""

    role: str | None
    model: str
    upstream_name: str  # the name the backend knows the model by
    backend: str
    host: str
    thinking: ThinkingPolicy
    fallback_of: str | None  # the role's own model when this candidate is a fallback model
    route_header: str  # the precomputed x-forge-route value
    headers: tuple[tuple[str, str], ...]  # Deprecation / Sunset for deprecated models


@dataclass(frozen=True, slots=True)
class Route:
    role: str | None
    model: str  # the model the role points at (or the model asked for)
    candidates: tuple[Candidate, ...]
    route_header: str  # before a candidate is chosen (errors)
    headers: tuple[tuple[str, str], ...]
    spill_after_s: float | None = None  # the role's spill-over: queue on a full candidate at most this long


def classify(kind: str, body: dict[str, Any] | None) -> str:
    """Pick the role for a request that names no model: image parts -> vision, audio -> audio-qa."""
    if kind == "chat" and body is not None:
        messages = body.get("messages")
        if isinstance(messages, list):
            saw_audio = False
            for m in messages:
                content = m.get("content") if isinstance(m, dict) else None
                if not isinstance(content, list):
                    continue
                for part in content:
                    t = part.get("type") if isinstance(part, dict) else None
                    if t == "image_url":
                        return "vision"
                    if t == "input_audio":
                        saw_audio = True
            if saw_audio:
                return "audio-qa"
    return _KIND_ROLE.get(kind, "default-chat")


def pin(route: Route, placement: str) -> Route:
    """The route narrowed to its candidates on one host or backend (an admin's ``x-forge-placement``).

    Only a filter: order, fallbacks and everything else about the route stay as they are.
    """
    cands = tuple(c for c in route.candidates if placement in (c.host, c.backend))
    if not cands:
        where = sorted({c.host for c in route.candidates} | {c.backend for c in route.candidates})
        what = f"role {route.role!r}" if route.role else f"model {route.model!r}"
        raise NotFound(
            f"{what} has no placement on {placement!r} (its hosts and backends: {', '.join(where) or 'none'})",
            param="x-forge-placement",
            code="placement_not_found",
        )
    return Route(route.role, route.model, cands, route.route_header, route.headers, route.spill_after_s)


def _spill_s(role: Role | None) -> float | None:
    ms = role.spill_after_ms if role is not None else None
    return None if ms is None else ms / 1000.0


def _route_header(role: str | None, model: str, host: str, backend: str, fallback_of: str | None) -> str:
    h = f"role={role or '-'}; model={model}; host={host}; backend={backend}"
    if fallback_of and fallback_of != model:
        h += f"; fallback={fallback_of}"
    return h


def _created_base(config_path: str | None, started_at: float | None) -> int:
    """``created`` for catalog entries: when the catalog file was written, else when the gateway started."""
    if config_path:
        try:
            return int(os.stat(config_path).st_mtime)
        except OSError:
            pass
    return int(started_at or time.time())


def _iso_ts(iso: str | None, default: int) -> int:
    if iso:
        try:
            return int(dt.datetime.fromisoformat(iso).timestamp())
        except ValueError:
            pass
    return default


def _http_date(d: dt.date) -> str:
    return format_datetime(dt.datetime(d.year, d.month, d.day, tzinfo=dt.UTC), usegmt=True)


class RouteTable:
    """An immutable routing snapshot of one ``RoutingState`` version."""

    def __init__(
        self,
        state: RoutingState,
        *,
        config_path: str | None = None,
        started_at: float | None = None,
        previous: RouteTable | None = None,
    ) -> None:
        self.roles_ref = state.roles()
        self.models_ref = state.models()
        cat = state.catalog
        self.role_names: tuple[str, ...] = tuple(sorted(self.roles_ref))
        deprecated_at = self._deprecation_times(state, config_path, started_at, previous)
        self.deprecated_at = deprecated_at

        model_headers: dict[str, tuple[tuple[str, str], ...]] = {}
        for mid, mv in self.models_ref.items():
            hs: list[tuple[str, str]] = []
            if mv.deprecated:
                hs.append(("Deprecation", f"@{int(deprecated_at.get(mid, started_at or time.time()))}"))
                if mv.sunset is not None:
                    hs.append(("Sunset", _http_date(mv.sunset)))
            model_headers[mid] = tuple(hs)
        self.model_headers = model_headers

        def placements(role: str | None, mid: str, fallback_of: str | None) -> list[Candidate]:
            m = cat.models[mid]
            fam = cat.families.get(m.family)
            policy = fam.thinking if fam is not None else ThinkingPolicy.NONE
            out = []
            for p in m.placements:
                host = cat.backends[p.backend].host
                out.append(
                    Candidate(
                        role=role,
                        model=mid,
                        upstream_name=p.name or mid,
                        backend=p.backend,
                        host=host,
                        thinking=policy,
                        fallback_of=fallback_of,
                        route_header=_route_header(role, mid, host, p.backend, fallback_of),
                        headers=model_headers[mid],
                    )
                )
            return out

        self.disabled = frozenset(mid for mid, mv in self.models_ref.items() if mv.state is ModelState.DISABLED)
        self.by_role: dict[str, Route] = {}
        for name, rv in self.roles_ref.items():
            cands: list[Candidate] = []
            seen: set[str] = set()
            for i, mid in enumerate((rv.model, *rv.fallbacks)):
                if mid in seen or mid in self.disabled or mid not in cat.models:
                    continue
                seen.add(mid)
                cands.extend(placements(name, mid, rv.model if i > 0 else None))
            self.by_role[name] = Route(
                role=name,
                model=rv.model,
                candidates=tuple(cands),
                route_header=f"role={name}; model={rv.model}",
                headers=model_headers.get(rv.model, ()),
                spill_after_s=_spill_s(cat.roles.get(name)),
            )
        self.by_model: dict[str, Route] = {}
        for mid in self.models_ref:
            if mid in self.disabled:
                continue
            self.by_model[mid] = Route(
                role=None,
                model=mid,
                candidates=tuple(placements(None, mid, None)),
                route_header=f"role=-; model={mid}",
                headers=model_headers[mid],
            )
        self.aliases: dict[str, str] = dict(cat.aliases)
        self.models_json, self.model_entries = self._models_list(state, _created_base(config_path, started_at))

    def current(self, state: RoutingState) -> bool:
        """True while ``state`` still serves the views this table was built from."""
        return state.roles() is self.roles_ref and state.models() is self.models_ref

    @staticmethod
    def _deprecation_times(
        state: RoutingState, config_path: str | None, started_at: float | None, previous: RouteTable | None
    ) -> dict[str, float]:
        """When each model became deprecated: the audit log, else when the catalog declaring it was written.

        The audit log is read once, for the first table; a rebuild carries the previous table's
        times over and dates a model deprecated since then to now (the change that did it just happened).
        """
        if previous is not None:
            now = time.time()
            was = previous.deprecated_at
            return {mid: was.get(mid, now) for mid, mv in state.models().items() if mv.deprecated}
        base = started_at or time.time()
        if config_path:
            try:
                base = os.stat(config_path).st_mtime
            except OSError:
                pass
        out: dict[str, float] = {}
        for mid, mv in state.models().items():
            if mv.deprecated:
                out[mid] = base
        if out:
            for e in state.audit_log(2000):
                if e.action == "deprecate" and e.target in out:
                    try:
                        out[e.target] = dt.datetime.fromisoformat(e.time).timestamp()
                    except ValueError:
                        continue
        return out

    def model_entry(self, name: str) -> bytes | None:
        """The ``GET /v1/models/{id}`` answer for a role, model or alias (None: unknown)."""
        return self.model_entries.get(name)

    def _models_list(self, state: RoutingState, base: int) -> tuple[bytes, dict[str, bytes]]:
        cat = state.catalog
        data: list[dict[str, Any]] = []
        for name in self.role_names:
            rv = self.roles_ref[name]
            mv = self.models_ref.get(rv.model)
            data.append(
                {
                    "id": name,
                    "object": "model",
                    "created": _iso_ts(rv.changed_at, base),
                    "owned_by": "forge",
                    "forge": {
                        "kind": "role",
                        "target": rv.model,
                        "fallbacks": list(rv.fallbacks),
                        "state": mv.state.value if mv else None,
                        "deprecated": bool(mv and mv.deprecated),
                        "sunset": mv.sunset.isoformat() if mv and mv.sunset else None,
                        "in_trial": rv.in_trial,
                    },
                }
            )
        for mid, mv in self.models_ref.items():
            fam = cat.families.get(mv.family)
            data.append(
                {
                    "id": mid,
                    "object": "model",
                    "created": base,
                    "owned_by": mv.family,
                    "forge": {
                        "kind": "model",
                        "state": mv.state.value,
                        "deprecated": mv.deprecated,
                        "sunset": mv.sunset.isoformat() if mv.sunset else None,
                        "roles": state.roles_using(mid),
                        "family": mv.family,
                        "architecture": mv.architecture,
                        "capabilities": [c.value for c in mv.capabilities],
                        "thinking": fam.thinking.value if fam else ThinkingPolicy.NONE.value,
                        "hosts": list(mv.hosts),
                    },
                }
            )
        by_id = {d["id"]: d for d in data}
        for alias, target in sorted(self.aliases.items()):
            t = by_id.get(target)
            data.append(
                {
                    "id": alias,
                    "object": "model",
                    "created": t["created"] if t else base,
                    "owned_by": t["owned_by"] if t else "forge",
                    "forge": {"kind": "alias", "target": target},
                }
            )
        entries = {d["id"]: json.dumps(d).encode() for d in data}  # the same entries the list shows
        return json.dumps({"object": "list", "data": data}).encode(), entries

    def resolve(self, name: str | None, kind: str, body: dict[str, Any] | None) -> Route:
        if name is None or name == "" or name == AUTO:
            role = classify(kind, body)
            route = self.by_role.get(role)
            if route is None and kind in _CHAT_LIKE and role != "default-chat":
                route = self.by_role.get("default-chat")
            if route is None:
                raise NotFound(
                    f"no model given and the {role!r} role this request classifies to is not defined; "
                    f"name a role ({self._roles_text()}) or a model id",
                    param="model",
                )
            return route
        name = self.aliases.get(name, name)
        route = self.by_role.get(name) or self.by_model.get(name)
        if route is not None:
            return route
        if name in self.disabled:
            raise NotFound(f"model {name!r} is disabled in the catalog and is never routed to", param="model")
        raise NotFound(
            f"unknown model or role {name[:200]!r}; valid roles: {self._roles_text()} (GET /v1/models lists model ids)",
            param="model",
        )

    def _roles_text(self) -> str:
        return ", ".join(self.role_names) or "none defined"
