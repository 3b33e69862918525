"""The steps of the ``rebuild`` and ``verify`` jobs.

rebuild: connect -> backup -> update -> configure -> build -> version -> architectures ->
regression -> restart -> smoke -> cleanup. Any failed (or cancelled) step after the backup puts
the old build tree (and the old source commit) back and restarts the serving layer on it; the
job's error names the step and the reason.

verify: connect -> version -> architectures -> regression, nothing changed on the host.

- architectures: every model placed on this host's llama.cpp backends, its architecture read
  from the GGUF header on the host (the catalog's when there is no file), checked with the
  (new) binary itself (``archcheck``). Unknown or unproven fails.
- regression: the roles the host serves today still have a known architecture under this
  binary; and a smoke request per role through the gateway (before the restart in a rebuild:
  the baseline, so the final smoke can tell "broke" from "was already broken").
- smoke: after the restart, the same requests; every role must answer from this host.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import posixpath
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..config.models import Catalog, Host
from ..health import answers_as
from ..state import RoutingState
from .archcheck import ArchVerdict, ServingBinary, check_architectures
from .buildplan import BuildPlan, make_plan
from .gguf import GgufError, read_remote_header
from .inventory import expand_home, remote_home
from .jobs import Job, JobManager, StepFailed
from .probes.serving import parse_llama_version
from .smoke import LLAMA_KINDS, RoleCheck, roles_served_by, smoke_host_roles
from .transport import CommandResult, Transport, TransportError

__all__ = ["REBUILD_STEPS", "VERIFY_STEPS", "JobRunner", "JobTimeouts", "models_on_host"]

REBUILD_STEPS = [
    "connect",
    "backup",
    "update",
    "configure",
    "build",
    "version",
    "architectures",
    "regression",
    "restart",
    "smoke",
    "cleanup",
]
VERIFY_STEPS = ["connect", "version", "architectures", "regression"]
KEEP_BACKUPS = 2


@dataclass(frozen=True, slots=True)
class JobTimeouts:
    command: float = 60.0  # small commands (test, git rev-parse, mkdir)
    backup: float = 1800.0
    update: float = 900.0
    configure: float = 900.0
    build: float = 4 * 3600.0
    arch: float = 90.0  # per architecture
    restart: float = 300.0
    smoke: float | None = None  # default: the host's longest backend warmup + 60 s


@dataclass(frozen=True, slots=True)
class _Outcome:
    detail: str
    skipped: bool = False


def models_on_host(catalog: Catalog, host: str) -> dict[str, str]:
    """model id -> catalog architecture, for models with a placement on ``host``'s llama.cpp backends."""
    out = {}
    for mid, m in catalog.models.items():
        for p in m.placements:
            b = catalog.backends[p.backend]
            if b.host == host and b.kind in LLAMA_KINDS:
                out[mid] = m.architecture
                break
    return out


class JobRunner:
    """Runs one job's steps. Created per job by ``HostsService.start_job``."""

    def __init__(
        self,
        kind: str,
        host_name: str,
        host: Host,
        catalog: Catalog,
        transport: Transport,
        manager: JobManager,
        *,
        state: Callable[[], RoutingState | None],
        gateway_url: Callable[[], str | None],
        local_binary: ServingBinary | None = None,
        timeouts: JobTimeouts = JobTimeouts(),
        resolve_local_gguf: Callable[[str], str | None] | None = None,
    ) -> None:
        self.kind = kind
        self.host_name = host_name
        self.host = host
        self.catalog = catalog
        self.t = transport
        self.manager = manager
        self.state = state
        self.gateway_url = gateway_url
        self.local_binary = local_binary
        self.timeouts = timeouts
        self.resolve_local_gguf = resolve_local_gguf
        self.job: Job | None = None
        self.plan: BuildPlan | None = None
        self.binary: ServingBinary | None = local_binary
        self.home = "~"
        # recovery bookkeeping
        self.touched = False  # from the backup step on, a failure must restore
        self.backup: str | None = None
        self.fresh_build = False
        self.old_head: str | None = None
        self.updated = False
        self.verdicts: dict[str, ArchVerdict] = {}
        self.model_archs: dict[str, str] = {}
        self.baseline: dict[str, RoleCheck] = {}

    @property
    def steps(self) -> list[str]:
        return list(REBUILD_STEPS if self.kind == "rebuild" else VERIFY_STEPS)

    # ------------------------------------------------------------------ plumbing
    async def __call__(self, job: Job) -> None:
        self.job = job
        table: dict[str, Callable[[], Awaitable[_Outcome]]] = {
            "connect": self._connect,
            "backup": self._backup,
            "update": self._update,
            "configure": self._configure,
            "build": self._build,
            "version": self._version,
            "architectures": self._architectures,
            "regression": self._regression,
            "restart": self._restart,
            "smoke": self._smoke,
            "cleanup": self._cleanup,
        }
        job.log(f"== {self.kind} {self.host_name} ({self.host.address}, {self.host.transport})")
        try:
            for name in self.steps:
                await self._step(name, table[name])
        except (StepFailed, asyncio.CancelledError) as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            if cancelled:
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()  # recovery below must be able to await
            if self.touched:
                await self._recover()
            if cancelled:
                raise asyncio.CancelledError() from None  # re-cancel after the recovery ran
            raise
        finally:
            await self.t.close()

    async def _step(self, name: str, fn: Callable[[], Awaitable[_Outcome]]) -> None:
        job = self.job
        assert job is not None
        rec = job.step(name)
        rec.state, rec.started = "running", time.time()
        job.log(f"== {name}")
        self.manager.checkpoint(job, backup=self.backup)
        try:
            out = await fn()
        except StepFailed as exc:
            rec.state, rec.finished, rec.detail = "failed", time.time(), str(exc)
            job.error = f"step {name} failed: {exc}"
            job.log(f"== {name}: FAILED after {rec.duration_s:.1f}s: {exc}")
            raise
        except TransportError as exc:
            rec.state, rec.finished, rec.detail = "failed", time.time(), str(exc)
            job.error = f"step {name} failed: {exc}"
            job.log(f"== {name}: FAILED after {rec.duration_s:.1f}s: {exc}")
            raise StepFailed(str(exc)) from None
        except asyncio.CancelledError:
            rec.state, rec.finished, rec.detail = "cancelled", time.time(), "cancelled by the operator"
            job.error = f"cancelled during step {name}"
            job.log(f"== {name}: cancelled after {rec.duration_s:.1f}s")
            raise
        rec.state = "skipped" if out.skipped else "ok"
        rec.finished, rec.detail = time.time(), out.detail
        job.log(f"== {name}: {rec.state} in {rec.duration_s:.1f}s" + (f": {out.detail}" if out.detail else ""))

    def _out(self, stream: str, line: str) -> None:
        if self.job is not None:
            self.job.log(f"   | {line}")

    async def _run(
        self, argv: list[str] | tuple[str, ...], timeout: float, *, cwd: str | None = None, quiet: bool = False
    ) -> CommandResult:
        if self.job is not None and not quiet:
            self.job.log(f"   $ {shlex.join(argv)}" + (f"   (in {cwd})" if cwd else ""))
        return await self.t.run(list(argv), timeout, cwd=cwd, on_output=None if quiet else self._out)

    async def _must(
        self,
        argv: list[str] | tuple[str, ...],
        timeout: float,
        what: str,
        *,
        cwd: str | None = None,
        quiet: bool = False,
    ) -> CommandResult:
        res = await self._run(argv, timeout, cwd=cwd, quiet=quiet)
        if not res.ok:
            raise StepFailed(f"{what}: exit {res.exit_status}: {res.reason() or 'no output'}")
        return res

    # ------------------------------------------------------------------ steps
    async def _connect(self) -> _Outcome:
        res = await self._must(["uname", "-sm"], self.timeouts.command, "uname")
        self.home = await remote_home(self.t, self.timeouts.command)
        parts = [res.out.strip()]
        b = self.host.build
        if b is not None:
            n = await self._run(
                ["sh", "-c", "getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu"],
                self.timeouts.command,
                quiet=True,
            )
            nproc = int(n.out.strip()) if n.ok and n.out.strip().isdigit() else 4
            try:
                self.plan = make_plan(b, self.home, nproc)
            except ValueError as exc:
                raise StepFailed(f"hosts.{self.host_name}.{exc}") from None
            self.binary = ServingBinary.llama_server(self.plan.binary)
            parts.append(f"source {self.plan.source_dir}, binary {self.plan.binary}")
            if self.kind == "rebuild":
                await self._must(
                    ["test", "-d", self.plan.source_dir],
                    self.timeouts.command,
                    f"source directory {self.plan.source_dir} is missing",
                )
                tools = ["git"] if self.plan.derived_update else []
                tools += [a[0] for a in (self.plan.configure, self.plan.build) if a[0] != "sh"]
                for tool in dict.fromkeys(tools):
                    await self._must(
                        ["sh", "-c", 'command -v "$1"', "forge-which", tool],
                        self.timeouts.command,
                        f"{tool} is not installed on {self.host_name}",
                        quiet=True,
                    )
        elif self.binary is None:
            raise StepFailed(f"host {self.host_name} has no build settings: no serving binary to check")
        else:
            parts.append(f"serving stack {self.binary.label}")
        return _Outcome("; ".join(parts))

    async def _backup(self) -> _Outcome:
        plan = self._plan()
        head = await self._run(["git", "-C", plan.source_dir, "rev-parse", "HEAD"], self.timeouts.command, quiet=True)
        self.old_head = head.out.strip() if head.ok else None
        exists = await self._run(["test", "-d", plan.build_dir], self.timeouts.command, quiet=True)
        self.touched = True
        if exists.ok:
            backup = plan.backup_dir(dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
            await self._must(["cp", "-a", plan.build_dir, backup], self.timeouts.backup, "copying the build tree")
            self.backup = backup
            self.manager.checkpoint(self.job, backup=backup)  # type: ignore[arg-type]
            return _Outcome(
                f"{plan.build_dir} -> {backup}" + (f"; source at {self.old_head[:12]}" if self.old_head else "")
            )
        self.fresh_build = True
        return _Outcome(f"no build tree at {plan.build_dir} yet: nothing to back up (a failure removes the new one)")

    async def _update(self) -> _Outcome:
        plan = self._plan()
        self.updated = True
        for argv in plan.update:
            await self._must(argv, self.timeouts.update, "updating the source", cwd=plan.source_dir)
        head = await self._run(["git", "-C", plan.source_dir, "rev-parse", "HEAD"], self.timeouts.command, quiet=True)
        new = head.out.strip()[:12] if head.ok else "?"
        old = self.old_head[:12] if self.old_head else "?"
        return _Outcome(f"source {old} -> {new} (ref {self.host.build.ref if self.host.build else '?'})")

    async def _configure(self) -> _Outcome:
        plan = self._plan()
        await self._must(plan.configure, self.timeouts.configure, "configure", cwd=plan.source_dir)
        return _Outcome(shlex.join(plan.configure))

    async def _build(self) -> _Outcome:
        plan = self._plan()
        await self._must(plan.build, self.timeouts.build, "build", cwd=plan.source_dir)
        await self._must(
            ["test", "-x", plan.binary],
            self.timeouts.command,
            f"the build finished but {plan.binary} is not an executable",
            quiet=True,
        )
        return _Outcome(plan.binary)

    async def _version(self) -> _Outcome:
        binary = self.binary
        assert binary is not None
        if binary.kind == "xllamacpp":
            res = await self._must(
                [
                    binary.argv_prefix[0],
                    "-c",
                    "import xllamacpp; print('xllamacpp', getattr(xllamacpp, '__version__', '?'))",
                ],
                self.timeouts.command,
                "importing xllamacpp",
            )
            return _Outcome(res.out.strip())
        res = await self._run([binary.argv_prefix[0], "--version"], self.timeouts.command)
        if res.exit_status in (126, 127):
            raise StepFailed(f"cannot run {binary.label}: {res.reason(2)}")
        try:
            v = parse_llama_version(res.err + "\n" + res.out)
        except ValueError as exc:
            raise StepFailed(str(exc)) from None
        return _Outcome(
            f"{v.label}"
            + (f", built with {v.compiler}" if v.compiler else "")
            + (f" for {v.target}" if v.target else "")
        )

    async def _declared_arch(self, mid: str) -> str:
        """The architecture the model's GGUF on the host declares (the catalog's if no file)."""
        m = self.catalog.models[mid]
        job = self.job
        assert job is not None
        if not m.gguf:
            return m.architecture
        path: str | None
        if m.gguf.startswith("@"):
            path = await asyncio.to_thread(self.resolve_local_gguf, m.gguf) if self.resolve_local_gguf else None
            if path is None:
                job.log(f"   {mid}: {m.gguf} is resolved only on a local host; using the catalog's {m.architecture!r}")
                return m.architecture
        else:
            path = expand_home(m.gguf, self.home)
        try:
            h = await read_remote_header(self.t, path, timeout=self.timeouts.command)
        except GgufError as exc:
            job.log(f"   {mid}: cannot read the GGUF header ({exc}); using the catalog's {m.architecture!r}")
            return m.architecture
        if h.architecture is None:
            job.log(f"   {mid}: {path} declares no general.architecture; using the catalog's {m.architecture!r}")
            return m.architecture
        if h.architecture != m.architecture:
            job.log(
                f"   {mid}: WARNING the catalog says {m.architecture!r} but {path} declares {h.architecture!r}; "
                f"checking what the file declares"
            )
        return h.architecture

    async def _architectures(self) -> _Outcome:
        binary = self.binary
        assert binary is not None and self.job is not None
        models = models_on_host(self.catalog, self.host_name)
        if not models:
            return _Outcome(f"no model is placed on {self.host_name}'s llama.cpp backends", skipped=True)
        for mid in models:
            self.model_archs[mid] = await self._declared_arch(mid)
        self.verdicts = await check_architectures(
            self.t, binary, list(self.model_archs.values()), timeout=self.timeouts.arch
        )
        bad = []
        for mid, arch in self.model_archs.items():
            v = self.verdicts[arch]
            self.job.log(f"   {mid}: {arch}: {v.outcome}: {v.evidence}")
            if v.outcome != "known":
                bad.append(f"{mid} ({arch}): {v.evidence}")
        if bad:
            raise StepFailed(f"{binary.label} cannot load " + "; ".join(bad))
        known = sorted(set(self.model_archs.values()))
        return _Outcome(f"{len(models)} model(s), architectures {', '.join(known)}: all known to {binary.label}")

    async def _regression(self) -> _Outcome:
        job = self.job
        assert job is not None
        roles = roles_served_by(self.catalog, self.state(), self.host_name)
        if not roles:
            return _Outcome(f"{self.host_name} serves no role today", skipped=True)
        lost = []
        for role, (mid, _) in roles.items():
            arch = self.model_archs.get(mid)
            v = self.verdicts.get(arch) if arch else None
            if v is not None and v.outcome != "known":
                lost.append(f"{role} -> {mid} ({arch}): {v.evidence}")
        if lost:
            raise StepFailed("routes served today would break: " + "; ".join(lost))
        parts = [f"{len(roles)} route(s) keep a known architecture"]
        url = self.gateway_url()
        if not url:
            job.log("   no gateway URL (the gateway is not running here): routes not smoked")
            return _Outcome(parts[0] + "; gateway not running, no smoke")
        checks = await smoke_host_roles(
            url,
            roles,
            self.host_name,
            api_key=self._api_key(),
            timeout=self._smoke_timeout(),
            known_as=answers_as(self.catalog),
        )
        failing = []
        for c in checks:
            job.log(f"   {c.role} -> {c.model}: {'ok' if c.ok else 'FAIL'}: {c.detail}")
            self.baseline[c.role] = c
            if not c.ok:
                failing.append(f"{c.role}: {c.detail}")
        hard = [f for f, c in zip(failing, [c for c in checks if not c.ok], strict=True) if not c.shape_only]
        if hard and self.kind == "verify":
            raise StepFailed("smoke through the gateway failed: " + "; ".join(hard))
        shape = [c.role for c in checks if not c.ok and c.shape_only]
        if shape:
            # The stack serves; the model's answers are poor. Not the binary's fault: said, not failed.
            parts.append(f"answered, but with a bad answer shape (the model, not the build): {', '.join(shape)}")
        if hard:
            parts.append(f"already failing before the restart: {', '.join(c.role for c in checks if not c.ok)}")
        parts.append(f"{sum(c.ok for c in checks)}/{len(checks)} answered through the gateway")
        return _Outcome("; ".join(parts))

    async def _restart(self) -> _Outcome:
        plan = self._plan()
        if plan.restart is None:
            return _Outcome(
                f"hosts.{self.host_name}.build.restart is not set: the serving layer was not restarted", skipped=True
            )
        await self._must(plan.restart, self.timeouts.restart, "restart", cwd=plan.source_dir)
        return _Outcome(plan.restart[-1])

    async def _smoke(self) -> _Outcome:
        job = self.job
        assert job is not None
        roles = roles_served_by(self.catalog, self.state(), self.host_name)
        if not roles:
            return _Outcome(f"{self.host_name} serves no role", skipped=True)
        url = self.gateway_url()
        if not url:
            return _Outcome("the gateway is not running here: no smoke through it", skipped=True)
        checks = await smoke_host_roles(
            url,
            roles,
            self.host_name,
            api_key=self._api_key(),
            timeout=self._smoke_timeout(),
            known_as=answers_as(self.catalog),
        )
        failing: list[str] = []
        kept: list[str] = []
        for c in checks:
            before = self.baseline.get(c.role)
            was = (
                ""
                if before is None
                else (
                    " (answered before the restart: a regression)"
                    if before.ok
                    else " (was failing before the restart too)"
                )
            )
            # The same poor answer as before the restart is the model's, not a regression of the build.
            same = before is not None and not before.ok and before.shape_only and c.shape_only
            job.log(f"   {c.role} -> {c.model}: {'ok' if c.ok else 'FAIL'}: {c.detail}{'' if c.ok else was}")
            if not c.ok and not same:
                failing.append(f"{c.role}: {c.detail}{was}")
            elif not c.ok:
                kept.append(c.role)
        if failing:
            raise StepFailed("smoke through the gateway failed: " + "; ".join(failing))
        note = f"; answer shape as poor as before the restart: {', '.join(kept)}" if kept else ""
        return _Outcome(f"{len(checks)} role(s) answered through the gateway: {', '.join(roles)}{note}")

    async def _cleanup(self) -> _Outcome:
        plan = self._plan()
        parent, base = posixpath.split(plan.build_dir)
        res = await self._run(
            ["find", parent, "-maxdepth", "1", "-name", f"{base}.bak-*"], self.timeouts.command, quiet=True
        )
        backups = sorted(p for p in res.out.splitlines() if p.startswith(plan.build_dir + ".bak-"))
        old = backups[:-KEEP_BACKUPS]
        for p in old:
            await self._must(["rm", "-rf", p], self.timeouts.backup, f"removing old backup {p}")
        kept = backups[-KEEP_BACKUPS:]
        return _Outcome(f"kept {len(kept)} backup(s)" + (f", removed {len(old)}" if old else ""))

    # ------------------------------------------------------------------ recovery
    async def _recover(self) -> None:
        """Put the old build (and source commit) back, then restart the serving layer on it."""
        job = self.job
        plan = self.plan
        assert job is not None and plan is not None
        rec = job.step("restore")
        rec.state, rec.started = "running", time.time()
        job.log("== restore")
        problems = []
        try:
            if self.backup:
                await self._must(["rm", "-rf", plan.build_dir], self.timeouts.backup, "removing the failed build")
                await self._must(["mv", self.backup, plan.build_dir], self.timeouts.backup, "moving the backup back")
                rec.detail = f"{self.backup} -> {plan.build_dir}"
            elif self.fresh_build:
                await self._must(["rm", "-rf", plan.build_dir], self.timeouts.backup, "removing the failed build")
                rec.detail = f"removed the new {plan.build_dir} (there was no build before)"
            if self.updated and self.old_head:
                await self._must(
                    ["git", "-C", plan.source_dir, "checkout", "--detach", self.old_head],
                    self.timeouts.update,
                    "checking out the old source commit",
                )
                rec.detail += f"; source back at {self.old_head[:12]}"
        except (StepFailed, TransportError) as exc:
            problems.append(f"restore failed: {exc}")
        rec.state = "failed" if problems else "ok"
        rec.finished = time.time()
        job.restored = not problems
        job.log(f"== restore: {rec.state}: {rec.detail or '; '.join(problems)}")
        if plan.restart is not None:
            rr = job.step("restart-old")
            rr.state, rr.started = "running", time.time()
            job.log("== restart-old")
            try:
                await self._must(
                    plan.restart, self.timeouts.restart, "restarting on the old build", cwd=plan.source_dir
                )
                rr.state, rr.detail = "ok", plan.restart[-1]
            except (StepFailed, TransportError) as exc:
                rr.state, rr.detail = "failed", str(exc)
                problems.append(f"restart on the old build failed: {exc}")
            rr.finished = time.time()
            job.log(f"== restart-old: {rr.state}")
        if problems:
            job.error = f"{job.error}; " + "; ".join(problems)
        else:
            job.error = f"{job.error}; the old build was restored" + (" and restarted" if plan.restart else "")

    # ------------------------------------------------------------------ helpers
    def _plan(self) -> BuildPlan:
        if self.plan is None:
            raise StepFailed(f"host {self.host_name} has no build settings (hosts.{self.host_name}.build)")
        return self.plan

    def _api_key(self) -> str | None:
        keys = self.catalog.gateway.api_keys
        return keys[0] if keys else None

    def _smoke_timeout(self) -> float:
        if self.timeouts.smoke is not None:
            return self.timeouts.smoke
        warm = [b.warmup_timeout_s for b in self.catalog.backends.values() if b.host == self.host_name]
        return max(warm, default=120.0) + 60.0
