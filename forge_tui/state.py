"""Runtime overlay on the catalog: role assignments and deprecation toggles, plus the audit log.

The operator's YAML is never rewritten (its comments survive). Changes go to a small JSON
state file written atomically (temp file, fsync, rename) and to an append-only JSONL audit
log. ``RoutingState`` merges catalog and overlay into the effective view the gateway reads on
every request, so a change takes effect for the next request without a restart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
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
    # Trial membership survives swaps and rollbacks: the baseline is the model the role had when its
    # trial began (what `R` returns to); status is active, rolled-back or promoted (trial ended).
    baseline: str | None = None
    trial_since: str | None = None
    trial_status: str | None = None


TRIAL_ACTIVE = "active"
TRIAL_ROLLED_BACK = "rolled-back"
TRIAL_PROMOTED = "promoted"


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
    id: str = ""  # unique per change: how start-up reconciliation finds an entry in the log

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str, sort_keys=True)


def _entry(actor: str, action: str, target: str, before: Any, after: Any, note: str = "") -> AuditEntry:
    return AuditEntry(_now(), actor, action, target, before, after, note, uuid.uuid4().hex)


def default_state_dir(config_path: str | Path) -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME", "~/.local/state")).expanduser()
    return base / "forge-tui" / Path(config_path).stem


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def secure_dir(d: Path) -> None:
    """Create ``d`` private (0700); tighten an existing one this user owns (it holds audit and history)."""
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        st = d.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            d.chmod(0o700)
    except OSError:
        pass


@contextlib.contextmanager
def _dir_lock(d: Path) -> Iterator[None]:
    """Serialise temp-file writes and start-up clean-up between processes sharing a state dir."""
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def atomic_write_text(path: Path, text: str) -> None:
    """Write via temp file (0600) + fsync + rename so a crash never leaves a half-written file."""
    secure_dir(path.parent)
    with _dir_lock(path.parent):
        _atomic_write_locked(path, text)


def _atomic_write_locked(path: Path, text: str) -> None:
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
        # Serialises changes: the operator service runs them in a worker thread (their fsyncs stay off the loop).
        self._lock = threading.RLock()
        self._listeners: list[Callable[[AuditEntry], None]] = []
        if self.state_dir is not None:
            secure_dir(self.state_dir)
            self._recover()
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

    def _persist(self, entries: Sequence[AuditEntry] = ()) -> None:
        """Write the overlay together with the audit entries of the change it applies: one durable step.
        The entries are appended to the log right after; if the process dies in between, the next start
        finds them here and appends them (``_recover``), so an applied change always has its entry."""
        f = self.state_file
        if f is None:
            return
        data = {
            "version": STATE_VERSION,
            "roles": self._overlay.roles,
            "models": self._overlay.models,
            "audit_pending": [asdict(e) for e in entries],
        }
        atomic_write_text(f, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")

    def _recover(self) -> None:
        """At start: remove temp files a crash left, repair a torn last audit line, append the entries of
        a change that was applied but whose audit append never happened."""
        d = self.state_dir
        assert d is not None
        with _dir_lock(d):
            for tmp in d.glob(".state.json.*"):
                try:
                    tmp.unlink()
                except OSError:
                    pass
        f, af = self.state_file, self.audit_file
        assert f is not None and af is not None
        if af.exists():
            try:
                if af.stat().st_mode & 0o077:
                    af.chmod(0o600)
            except OSError:
                pass
        try:
            data = json.loads(f.read_text(encoding="utf-8")) if f.exists() else {}
        except (OSError, ValueError):
            return  # _load reports an unreadable state file
        pending = data.get("audit_pending") if isinstance(data, dict) else None
        if not pending:
            return
        seen = self._logged_ids()
        missing = []
        for d_ in pending:
            try:
                e = AuditEntry(**d_)
            except TypeError:
                continue
            if e.id and e.id not in seen:
                missing.append(e)
        if missing:
            self._append(missing)
            self.warnings.append(
                f"state: {len(missing)} applied change(s) had no audit entry (the process stopped in between); "
                "they were added to the audit log"
            )

    def _logged_ids(self, tail_bytes: int = 1 << 20) -> set[str]:
        af = self.audit_file
        if af is None or not af.exists():
            return set()
        with open(af, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - tail_bytes))
            tail = fh.read()
        ids = set()
        for line in tail.splitlines():
            try:
                i = json.loads(line).get("id")
            except (ValueError, AttributeError):
                continue
            if isinstance(i, str) and i:
                ids.add(i)
        return ids

    def _append(self, entries: Sequence[AuditEntry]) -> None:
        """Append entries (0600 file, fsync); a torn last line from a crash gets its newline first, so the
        new entry is never merged into the fragment."""
        af = self.audit_file
        if af is None or not entries:
            return
        secure_dir(af.parent)
        fd = os.open(af, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            text = "".join(e.to_json() + "\n" for e in entries).encode()
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                text = b"\n" + text
            os.write(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _audit(self, entry: AuditEntry) -> None:
        self._append([entry])
        self._notify(entry)

    def _notify(self, entry: AuditEntry) -> None:
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
            trial = self._trial_of(name)
            status = trial.get("status") if trial else None
            baseline = trial.get("baseline") if trial else None
            trial_kw: dict[str, Any] = {
                "in_trial": status in (TRIAL_ACTIVE, TRIAL_ROLLED_BACK),
                "baseline": baseline if baseline in cat.models else None,
                "trial_since": trial.get("since") if trial else None,
                "trial_status": status,
            }
            if ov and ov.get("model") in cat.models:
                prev = ov.get("previous")
                roles[name] = RoleView(
                    name=name,
                    model=ov["model"],
                    previous=prev if prev in cat.models else None,
                    fallbacks=r.fallbacks,
                    requires=r.required(name),
                    rollback_by=rollback_by,
                    changed_at=ov.get("changed_at"),
                    changed_by=ov.get("actor"),
                    **trial_kw,
                )
            else:
                roles[name] = RoleView(
                    name=name,
                    model=r.model,
                    previous=r.previous,
                    fallbacks=r.fallbacks,
                    requires=r.required(name),
                    rollback_by=rollback_by,
                    **trial_kw,
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

    def _trial_of(self, name: str) -> dict[str, Any] | None:
        """The role's trial record: the overlay's, else the catalog's (``trial: true`` with a previous model)."""
        ov = self._overlay.roles.get(name) or {}
        t = ov.get("trial")
        if isinstance(t, dict):
            return t
        if ov.get("in_trial") and ov.get("previous"):  # state written before trial records existed
            return {"baseline": ov["previous"], "since": ov.get("changed_at"), "status": TRIAL_ACTIVE}
        r = self.catalog.roles.get(name)
        if ov.get("model") is None and r is not None and r.trial and r.previous:
            started = self.catalog.trial.started if self.catalog.trial else None
            return {"baseline": r.previous, "since": started.isoformat() if started else None, "status": TRIAL_ACTIVE}
        return None

    def _trial_after(self, rv: RoleView, new_model: str, now: str) -> dict[str, Any]:
        """The trial record once ``rv`` routes to ``new_model``: a change outside a trial starts one."""
        old = self._trial_of(rv.name)
        fresh = old is None or old.get("status") == TRIAL_PROMOTED
        t = {"baseline": rv.model, "since": now} if fresh or old is None else dict(old)
        t["status"] = TRIAL_ROLLED_BACK if new_model == t.get("baseline") else TRIAL_ACTIVE
        return t

    def trial_status(self) -> str | None:
        """The trial as a whole: active (a role still on its trial model), rolled-back, promoted, or None."""
        statuses = {r.trial_status for r in self._roles.values() if r.trial_status}
        if not statuses:
            return None
        if TRIAL_ACTIVE in statuses:
            return TRIAL_ACTIVE
        return TRIAL_ROLLED_BACK if TRIAL_ROLLED_BACK in statuses else TRIAL_PROMOTED

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
            now = _now()
            trial = self._trial_after(rv, model, now)
            self._overlay.roles[role] = {
                "model": model,
                "previous": rv.model,
                "in_trial": True,
                "trial": trial,
                "changed_at": now,
                "actor": actor,
            }
            return self._commit(
                actor,
                "swap",
                role,
                before,
                {"model": model, "previous": rv.model, "baseline": trial["baseline"]},
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
            now = _now()
            entry: dict[str, Any] = {
                "model": rv.previous,
                "previous": rv.model,
                "in_trial": rv.in_trial,
                "changed_at": now,
                "actor": actor,
            }
            after: dict[str, Any] = {"model": rv.previous, "previous": rv.model}
            if rv.trial_status in (TRIAL_ACTIVE, TRIAL_ROLLED_BACK):  # membership survives a rollback
                entry["trial"] = self._trial_after(rv, rv.previous, now)
                after["baseline"] = entry["trial"]["baseline"]
            self._overlay.roles[role] = entry
            return self._commit(actor, "rollback", role, before, after)

    def rollback_trial(self, *, actor: str) -> list[AuditEntry]:
        """Roll back every role in the current trial, all or nothing."""
        with self._lock:
            members = [r for r in self._roles.values() if r.in_trial and r.baseline]
            if not members:
                raise ChangeRefused("no role is in a trial with a baseline to return to")
            targets = [r for r in members if r.model != r.baseline]
            if not targets:
                raise ChangeRefused(
                    "the trial is already rolled back: every trial role is on its baseline "
                    f"({', '.join(f'{r.name}: {r.baseline}' for r in members)})"
                )
            for r in targets:
                self._check_assignable(r.name, r.baseline or "")
            saved = json.loads(json.dumps(self._overlay.roles))
            now = _now()
            entries = [
                _entry(
                    actor,
                    "rollback-trial",
                    r.name,
                    {"model": r.model, "previous": r.previous},
                    {"model": r.baseline, "previous": r.model, "baseline": r.baseline},
                )
                for r in targets
            ]
            try:
                for r in targets:
                    self._overlay.roles[r.name] = {
                        "model": r.baseline,
                        "previous": r.model,
                        "in_trial": True,
                        "trial": self._trial_after(r, r.baseline or "", now),
                        "changed_at": now,
                        "actor": actor,
                    }
                self._persist(entries)
            except BaseException:
                self._overlay.roles = saved
                raise
            self._rebuild()
            self._append(entries)
            for e in entries:
                self._notify(e)
            return entries

    def promote_role(self, role: str, *, actor: str) -> AuditEntry:
        """End the trial for ``role``: it keeps its current model and the baseline stops being its
        rollback target (``previous`` is cleared when it pointed at the baseline)."""
        with self._lock:
            rv = self._roles.get(role)
            if rv is None:
                raise ChangeRefused(f"unknown role {role!r}")
            if not rv.in_trial:
                raise ChangeRefused(f"role {role!r} is not in a trial")
            if rv.model == rv.baseline:
                raise ChangeRefused(
                    f"role {role!r} is on its baseline {rv.baseline!r}: nothing to promote (swap to the trial model first)"
                )
            now = _now()
            trial = dict(self._trial_of(role) or {})
            trial.update(status=TRIAL_PROMOTED, ended=now)
            previous = None if rv.previous == rv.baseline else rv.previous
            self._overlay.roles[role] = {
                "model": rv.model,
                "previous": previous,
                "in_trial": False,
                "trial": trial,
                "changed_at": now,
                "actor": actor,
            }
            return self._commit(
                actor,
                "promote",
                role,
                {"model": rv.model, "previous": rv.previous, "baseline": rv.baseline},
                {"model": rv.model, "previous": previous, "baseline": None},
                f"trial ended: {rv.model} kept, {rv.baseline} no longer the rollback target",
            )

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
        entry = _entry(actor, action, target, before, after, note)
        try:
            self._persist([entry])
        except BaseException:
            # Undo the in-memory change: what is on disk stays the truth.
            self._overlay = self._load()
            raise
        self._rebuild()
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
