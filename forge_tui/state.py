"""Runtime overlay on the catalog: role assignments and deprecation toggles, plus the audit log.

The operator's YAML is never rewritten (its comments survive). Changes go to a small JSON
state file written atomically (temp file, fsync, rename) and to an append-only JSONL audit
log. ``RoutingState`` merges catalog and overlay into the effective view the gateway reads on
every request, so a change takes effect for the next request without a restart.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config.models import Capability, Catalog, ModelState

__all__ = [
    "AuditEntry",
    "ChangeRefused",
    "ModelView",
    "RoleView",
    "RoutingState",
    "StateError",
    "default_state_dir",
]

STATE_VERSION = 1


class StateError(Exception):
    """The state file exists but cannot be read; it is left untouched."""


class ChangeRefused(Exception):
    """A requested change does not validate; nothing was changed."""


@dataclass(frozen=True, slots=True)
class RoleView:
    name: str
    model: str
    previous: str | None
    fallbacks: tuple[str, ...]
    requires: tuple[Capability, ...]
    in_trial: bool
    rollback_by: dt.date | None
    changed_at: str | None = None
    changed_by: str | None = None


@dataclass(frozen=True, slots=True)
class ModelView:
    id: str
    family: str
    architecture: str
    capabilities: tuple[Capability, ...]
    state: ModelState
    deprecated: bool
    sunset: dt.date | None
    memory_gb: float
    hosts: tuple[str, ...]

    @property
    def label(self) -> str:
        if self.deprecated:
            return f"deprecated{' until ' + self.sunset.isoformat() if self.sunset else ''}"
        return self.state.value


@dataclass(frozen=True, slots=True)
class AuditEntry:
    time: str
    actor: str
    action: str
    target: str
    before: Any
    after: Any
    note: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str, sort_keys=True)


def default_state_dir(config_path: str | Path) -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME", "~/.local/state")).expanduser()
    return base / "forge-tui" / Path(config_path).stem


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via temp file + fsync + rename so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@dataclass
class _Overlay:
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)


class RoutingState:
    """Catalog + overlay. All mutations validate first, then persist, then notify listeners."""

    def __init__(self, catalog: Catalog, state_dir: str | Path | None) -> None:
        self.catalog = catalog
        self.state_dir = Path(state_dir).expanduser() if state_dir else None
        self.warnings: list[str] = []
        self._lock = threading.RLock()
        self._listeners: list[Callable[[AuditEntry], None]] = []
        self._overlay = self._load()
        self._rebuild()

    # ---------------------------------------------------------------- files
    @property
    def state_file(self) -> Path | None:
        return self.state_dir / "state.json" if self.state_dir else None

    @property
    def audit_file(self) -> Path | None:
        return self.state_dir / "audit.jsonl" if self.state_dir else None

    def _load(self) -> _Overlay:
        f = self.state_file
        if f is None or not f.exists():
            return _Overlay()
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StateError(f"{f}: cannot read state overlay ({exc}); fix or move it aside") from None
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise StateError(f"{f}: unexpected state format (version {data.get('version')!r} if a mapping)")
        ov = _Overlay(roles=dict(data.get("roles") or {}), models=dict(data.get("models") or {}))
        # Entries that no longer match the catalog are kept on disk but not applied.
        for r, entry in ov.roles.items():
            if r not in self.catalog.roles:
                self.warnings.append(f"state: role {r!r} is not in the catalog; ignored")
            elif entry.get("model") not in self.catalog.models:
                self.warnings.append(f"state: role {r!r} points at unknown model {entry.get('model')!r}; ignored")
        for m in ov.models:
            if m not in self.catalog.models:
                self.warnings.append(f"state: model {m!r} is not in the catalog; ignored")
        return ov

    def _persist(self) -> None:
        f = self.state_file
        if f is None:
            return
        data = {"version": STATE_VERSION, "roles": self._overlay.roles, "models": self._overlay.models}
        atomic_write_text(f, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def _audit(self, entry: AuditEntry) -> None:
        f = self.audit_file
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            with open(f, "a", encoding="utf-8") as fh:
                fh.write(entry.to_json() + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        for cb in list(self._listeners):
            try:
                cb(entry)
            except Exception:  # a broken listener must not undo a persisted change
                pass

    # ---------------------------------------------------------------- views
    def _rebuild(self) -> None:
        cat = self.catalog
        rollback_by = cat.trial.rollback_by if cat.trial else None
        roles: dict[str, RoleView] = {}
        for name, r in cat.roles.items():
            ov = self._overlay.roles.get(name)
            if ov and ov.get("model") in cat.models:
                prev = ov.get("previous")
                roles[name] = RoleView(
                    name=name,
                    model=ov["model"],
                    previous=prev if prev in cat.models else None,
                    fallbacks=r.fallbacks,
                    requires=r.required(name),
                    in_trial=bool(ov.get("in_trial", False)),
                    rollback_by=rollback_by,
                    changed_at=ov.get("changed_at"),
                    changed_by=ov.get("actor"),
                )
            else:
                roles[name] = RoleView(
                    name=name,
                    model=r.model,
                    previous=r.previous,
                    fallbacks=r.fallbacks,
                    requires=r.required(name),
                    in_trial=r.trial,
                    rollback_by=rollback_by,
                )
        models: dict[str, ModelView] = {}
        for mid, m in cat.models.items():
            ov = self._overlay.models.get(mid) or {}
            deprecated = bool(ov.get("deprecated", m.deprecated))
            sunset = m.sunset
            if "sunset" in ov:
                sunset = dt.date.fromisoformat(ov["sunset"]) if ov["sunset"] else None
            hosts = tuple(dict.fromkeys(cat.backends[p.backend].host for p in m.placements))
            models[mid] = ModelView(
                id=mid,
                family=m.family,
                architecture=m.architecture,
                capabilities=m.capabilities,
                state=m.state,
                deprecated=deprecated,
                sunset=sunset if deprecated else None,
                memory_gb=m.memory_gb,
                hosts=hosts,
            )
        # Swap whole dicts: readers on the request path never see a half-updated view.
        self._roles = roles
        self._models = models

    def roles(self) -> dict[str, RoleView]:
        return self._roles

    def models(self) -> dict[str, ModelView]:
        return self._models

    def role(self, name: str) -> RoleView | None:
        return self._roles.get(name)

    def model(self, mid: str) -> ModelView | None:
        return self._models.get(mid)

    def roles_using(self, mid: str) -> list[str]:
        return [r.name for r in self._roles.values() if r.model == mid]

    def subscribe(self, cb: Callable[[AuditEntry], None]) -> Callable[[], None]:
        self._listeners.append(cb)
        return lambda: self._listeners.remove(cb) if cb in self._listeners else None

    def eligible_models(self, role: str) -> list[ModelView]:
        """Models whose capabilities fit ``role`` and that are not disabled."""
        rv = self._roles.get(role)
        if rv is None:
            return []
        return [
            m
            for m in self._models.values()
            if m.state is not ModelState.DISABLED and all(c in m.capabilities for c in rv.requires)
        ]

    # ---------------------------------------------------------------- changes
    def _check_assignable(self, role: str, model: str) -> RoleView:
        rv = self._roles.get(role)
        if rv is None:
            raise ChangeRefused(f"unknown role {role!r} (roles: {', '.join(sorted(self._roles))})")
        mv = self._models.get(model)
        if mv is None:
            raise ChangeRefused(f"unknown model {model!r}")
        if mv.state is ModelState.DISABLED:
            raise ChangeRefused(f"model {model!r} is disabled in the catalog")
        missing = [c.value for c in rv.requires if c not in mv.capabilities]
        if missing:
            raise ChangeRefused(
                f"model {model!r} cannot hold role {role!r}: missing capability {', '.join(missing)} "
                f"(it has {', '.join(c.value for c in mv.capabilities) or 'none'})"
            )
        return rv

    def swap_role(self, role: str, model: str, *, actor: str, forced: str | None = None) -> AuditEntry:
        with self._lock:
            rv = self._check_assignable(role, model)
            if rv.model == model:
                raise ChangeRefused(f"role {role!r} already routes to {model!r}")
            before = {"model": rv.model, "previous": rv.previous}
            self._overlay.roles[role] = {
                "model": model,
                "previous": rv.model,
                "in_trial": True,
                "changed_at": _now(),
                "actor": actor,
            }
            return self._commit(
                actor,
                "swap",
                role,
                before,
                {"model": model, "previous": rv.model},
                f"forced past failed preflight: {forced}" if forced else "",
            )

    def rollback_role(self, role: str, *, actor: str) -> AuditEntry:
        with self._lock:
            rv = self._roles.get(role)
            if rv is None:
                raise ChangeRefused(f"unknown role {role!r}")
            if not rv.previous:
                raise ChangeRefused(f"role {role!r} has no previous model to roll back to")
            self._check_assignable(role, rv.previous)
            before = {"model": rv.model, "previous": rv.previous}
            self._overlay.roles[role] = {
                "model": rv.previous,
                "previous": rv.model,
                "in_trial": False,
                "changed_at": _now(),
                "actor": actor,
            }
            return self._commit(actor, "rollback", role, before, {"model": rv.previous, "previous": rv.model})

    def rollback_trial(self, *, actor: str) -> list[AuditEntry]:
        """Roll back every role in the current trial, all or nothing."""
        with self._lock:
            targets = [r for r in self._roles.values() if r.in_trial and r.previous]
            if not targets:
                raise ChangeRefused("no role in the current trial has a previous model")
            for r in targets:
                self._check_assignable(r.name, r.previous or "")
            saved = json.loads(json.dumps(self._overlay.roles))
            now = _now()
            try:
                for r in targets:
                    self._overlay.roles[r.name] = {
                        "model": r.previous,
                        "previous": r.model,
                        "in_trial": False,
                        "changed_at": now,
                        "actor": actor,
                    }
                self._persist()
            except BaseException:
                self._overlay.roles = saved
                raise
            self._rebuild()
            entries = []
            for r in targets:
                e = AuditEntry(
                    _now(),
                    actor,
                    "rollback-trial",
                    r.name,
                    {"model": r.model, "previous": r.previous},
                    {"model": r.previous, "previous": r.model},
                )
                self._audit(e)
                entries.append(e)
            return entries

    def set_deprecated(self, model: str, deprecated: bool, *, actor: str, sunset: dt.date | None = None) -> AuditEntry:
        with self._lock:
            mv = self._models.get(model)
            if mv is None:
                raise ChangeRefused(f"unknown model {model!r}")
            if deprecated and sunset is not None and sunset < dt.date.today():
                raise ChangeRefused(f"sunset date {sunset.isoformat()} is in the past")
            before = {"deprecated": mv.deprecated, "sunset": mv.sunset.isoformat() if mv.sunset else None}
            after = {"deprecated": deprecated, "sunset": sunset.isoformat() if (deprecated and sunset) else None}
            self._overlay.models[model] = dict(after)
            return self._commit(actor, "deprecate" if deprecated else "undeprecate", model, before, after)

    def _commit(self, actor: str, action: str, target: str, before: Any, after: Any, note: str = "") -> AuditEntry:
        try:
            self._persist()
        except BaseException:
            # Undo the in-memory change: what is on disk stays the truth.
            self._overlay = self._load()
            raise
        self._rebuild()
        entry = AuditEntry(_now(), actor, action, target, before, after, note)
        self._audit(entry)
        return entry

    def audit_log(self, limit: int = 500) -> list[AuditEntry]:
        f = self.audit_file
        if f is None or not f.exists():
            return []
        out: list[AuditEntry] = []
        with open(f, encoding="utf-8") as fh:
            lines = fh.readlines()[-limit:]
        for line in lines:
            try:
                d = json.loads(line)
                out.append(AuditEntry(**d))
            except (ValueError, TypeError):
                continue  # a torn last line after a crash is skipped, not fatal
        return out
