"""HostsService: periodic probes per host, inventory, preflight of role changes, and jobs.

Each host has its own probe loop and its own SSH connection, so a slow or unreachable host never
stalls another; every probe is bounded (connect timeout + command timeout) and time-stamped.
Jobs get a connection of their own: a probe giving up on a slow host must not cut a build.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..config.models import BackendKind, Catalog, Host
from ..schema import JobInfo, PreflightCheck, PreflightResult
from ..state import RoutingState
from .archcheck import ArchVerdict, ServingBinary, check_architectures
from .buildplan import make_plan
from .gguf import GgufError, read_remote_header
from .inventory import GgufFile, Inventory, expand_home, remote_home
from .jobs import JOB_KINDS, JobManager
from .preflight import FAIL, PASS, WARN, arch_check, capability_check, memory_check, primary_host
from .probes.collect import probe_memory, reading_from_gpus
from .probes.model import GIB, GpuMemory, MemoryReading
from .probes.serving import (
    RunningModel,
    parse_llama_version,
    parse_server_health,
    parse_server_props,
    parse_server_slots,
    parse_swap_performance,
    parse_swap_running,
    parse_swap_version,
)
from .rebuild import JobRunner, JobTimeouts
from .smoke import LLAMA_KINDS
from .transport import SshTransport, Transport, TransportError, transport_for

__all__ = ["BackendStatus", "HostProbe", "HostsService"]

VERSION_EVERY = 10  # re-read `llama-server --version` every N probes (it can init GPUs: not free)


@dataclass(slots=True)
class BackendStatus:
    name: str
    kind: str
    health: str = "unknown"  # ready, loading, down, error, unknown
    detail: str | None = None
    version: str | None = None
    running: list[RunningModel] = field(default_factory=list)  # llama-swap /running
    slots_busy: int | None = None
    slots_total: int | None = None
    gpus: list[GpuMemory] = field(default_factory=list)  # llama-swap /api/performance


@dataclass(slots=True)
class HostProbe:
    host: str
    reachable: bool | None = None  # None until the first probe finished
    memory_used_gb: float | None = None
    memory_total_gb: float | None = None
    memory_source: str | None = None
    serving_version: str | None = None
    probed_at: float | None = None  # unix time the probe finished
    error: str | None = None
    loaded_models: dict[str, list[str]] = field(default_factory=dict)  # backend -> names it has loaded
    gpus: list[GpuMemory] = field(default_factory=list)
    pressure: str | None = None  # Apple memory pressure: normal / warn / critical
    notes: list[str] = field(default_factory=list)
    backends: dict[str, BackendStatus] = field(default_factory=dict)
    duration_s: float | None = None


def _gb(n: int | None) -> float | None:
    return round(n / GIB, 2) if n is not None else None


class HostsService:
    def __init__(
        self,
        catalog: Catalog,
        *,
        state_dir: Path | None,
        gateway_url: Callable[[], str | None] = lambda: None,
        probe_interval_s: float = 15.0,
        state: RoutingState | None = None,
        inventory_interval_s: float = 300.0,
        http_timeout_s: float = 3.0,
        sysfs_root: str = "/sys",
        job_timeouts: JobTimeouts = JobTimeouts(),
    ) -> None:
        self.catalog = catalog
        self.state_dir = Path(state_dir).expanduser() if state_dir else None
        self._gateway_url = gateway_url
        self.probe_interval_s = probe_interval_s
        self._state = state
        self.inventory_interval_s = inventory_interval_s
        self.http_timeout_s = http_timeout_s
        self.sysfs_root = sysfs_root
        self.job_timeouts = job_timeouts
        # Reconnect backoff never longer than two probe intervals: a host back up shows up soon.
        backoff = max(1.0, min(30.0, 2 * probe_interval_s))
        self._transports: dict[str, Transport] = {
            n: transport_for(n, h, backoff_max_s=backoff) for n, h in catalog.hosts.items()
        }
        self._inventory: dict[str, Inventory] = {n: Inventory(t) for n, t in self._transports.items()}
        self._probes: dict[str, HostProbe] = {n: HostProbe(host=n) for n in catalog.hosts}
        self._locks: dict[str, asyncio.Lock] = {n: asyncio.Lock() for n in catalog.hosts}
        self._homes: dict[str, str] = {}
        self._versions: dict[str, tuple[int, str | None]] = {}  # host -> (probe count when read, label)
        self._arch_cache: dict[tuple[str, str, str], ArchVerdict] = {}
        self._counts: dict[str, int] = {n: 0 for n in catalog.hosts}
        self._loops: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None
        self._jobs = JobManager(self.state_dir)
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._loops:
            return
        self._http = httpx.AsyncClient(timeout=self.http_timeout_s)
        for name in self.catalog.hosts:
            self._loops.append(asyncio.get_running_loop().create_task(self._loop(name), name=f"probe {name}"))

    async def close(self) -> None:
        self._closed = True
        for t in self._loops:
            t.cancel()
        for t in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._loops.clear()
        await self._jobs.close()
        for tr in self._transports.values():
            await tr.close()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def set_state(self, state: RoutingState) -> None:
        """The routing state jobs read to know which roles a host serves (preflight gets it per call)."""
        self._state = state

    async def _loop(self, name: str) -> None:
        last_inventory: float | None = None  # attempts, not successes: a failing listing is not retried every probe
        while not self._closed:
            try:
                await self.probe_now(name)
            except Exception as exc:  # a bug in one probe must not end this host's loop for good
                self._probes[name] = HostProbe(
                    host=name,
                    reachable=None,
                    probed_at=time.time(),
                    error=f"probe failed: {exc.__class__.__name__}: {exc}",
                )
            now = asyncio.get_running_loop().time()
            due = last_inventory is None or now - last_inventory > self.inventory_interval_s
            if due and self._probes[name].reachable and self.catalog.hosts[name].model_dirs:
                last_inventory = now
                with contextlib.suppress(TransportError, GgufError, asyncio.TimeoutError):
                    await asyncio.wait_for(self.refresh_inventory(name), self._command_timeout(name) * 4)
            await asyncio.sleep(self.probe_interval_s)

    # ------------------------------------------------------------------ probes
    def probes(self) -> dict[str, HostProbe]:
        return dict(self._probes)

    def _host(self, name: str) -> Host:
        h = self.catalog.hosts.get(name)
        if h is None:
            raise ValueError(f"unknown host {name!r} (hosts: {', '.join(sorted(self.catalog.hosts)) or 'none'})")
        return h

    def _command_timeout(self, name: str) -> float:
        h = self.catalog.hosts[name]
        return h.ssh.command_timeout_s if h.transport == "ssh" else 30.0

    def probe_timeout(self, name: str) -> float:
        """How long a host may take to answer a trivial command before it counts as unreachable."""
        h = self.catalog.hosts[name]
        if h.transport == "ssh":
            return h.ssh.connect_timeout_s + h.ssh.command_timeout_s
        return 30.0

    def _probe_bound(self, name: str) -> float:
        # liveness + memory tools (a few commands) + HTTP + the binary's --version
        return self.probe_timeout(name) + 4 * self._command_timeout(name) + self.http_timeout_s + 2

    async def probe_now(self, host: str) -> HostProbe:
        self._host(host)
        async with self._locks[host]:
            try:
                probe = await asyncio.wait_for(self._probe(host), self._probe_bound(host))
            except TimeoutError:
                probe = HostProbe(
                    host=host,
                    reachable=False,
                    probed_at=time.time(),
                    error=f"probe did not finish within {self._probe_bound(host):g}s",
                )
                self._drop_connection(host)
            self._probes[host] = probe
            return probe

    def _drop_connection(self, host: str) -> None:
        t = self._transports[host]
        if isinstance(t, SshTransport):
            t.forget_connection()

    async def _probe(self, name: str) -> HostProbe:
        h = self.catalog.hosts[name]
        t = self._transports[name]
        started = time.time()
        self._counts[name] += 1
        probe = HostProbe(host=name)
        http = asyncio.ensure_future(self._probe_backends(name))
        reading: MemoryReading | None = None
        try:
            # Liveness first, so a hung GPU tool is not mistaken for a dead host.
            await asyncio.wait_for(t.run(["true"], self._command_timeout(name)), self.probe_timeout(name))
            probe.reachable = True
        except TimeoutError:
            probe.reachable = False
            probe.error = f"no answer within {self.probe_timeout(name):g}s"
            self._drop_connection(name)
        except TransportError as exc:
            probe.reachable = False
            probe.error = str(exc)
            self._drop_connection(name)
        if probe.reachable:
            try:
                reading = await asyncio.wait_for(
                    probe_memory(t, h, timeout=self._command_timeout(name), sysfs_root=self.sysfs_root),
                    3 * self._command_timeout(name),
                )
            except TimeoutError:
                probe.error = f"memory probe did not finish within {3 * self._command_timeout(name):g}s"
            except TransportError as exc:
                probe.reachable = False
                probe.error = str(exc)
        backends = await http
        probe.backends = backends
        for bname, st in backends.items():
            if st.running:
                probe.loaded_models[bname] = [r.model for r in st.running]
            elif st.health == "ready" and self.catalog.backends[bname].kind is BackendKind.LLAMA_SERVER:
                # A llama-server serves exactly its one model: the catalog's placements on it.
                probe.loaded_models[bname] = [
                    p.name or mid for mid, m in self.catalog.models.items() for p in m.placements if p.backend == bname
                ]
        perf = [g for st in backends.values() for g in st.gpus]
        if (reading is None or reading.total_bytes is None) and perf:
            reading = reading_from_gpus(perf, "llama-swap /api/performance")
        if reading is not None:
            probe.memory_used_gb = _gb(reading.used_bytes)
            probe.memory_total_gb = _gb(reading.total_bytes)
            probe.memory_source = reading.source if reading.total_bytes is not None else None
            probe.gpus = reading.gpus
            probe.pressure = reading.pressure
            probe.notes = list(reading.notes)
            if reading.total_bytes is None and probe.error is None:
                probe.error = "no memory source answered: " + "; ".join(reading.notes)
        if probe.reachable:
            probe.serving_version = await self._serving_version(name, backends)
        else:
            probe.serving_version = _version_from_backends(backends)
        probe.probed_at = time.time()
        probe.duration_s = round(probe.probed_at - started, 3)
        return probe

    async def _serving_version(self, name: str, backends: dict[str, BackendStatus]) -> str | None:
        h = self.catalog.hosts[name]
        from_http = _version_from_backends(backends)
        if h.build is None:
            return from_http
        seen = self._versions.get(name)
        if seen is None or self._counts[name] - seen[0] >= VERSION_EVERY:
            label: str | None = None
            try:
                binary = await self._binary_path(name)
                res = await self._transports[name].run([binary, "--version"], self._command_timeout(name))
                label = parse_llama_version(res.err + "\n" + res.out).label
            except (TransportError, ValueError, GgufError):
                label = None
            seen = (self._counts[name], label)
            self._versions[name] = seen
        if seen[1] is None:
            return from_http
        # The binary the jobs manage, then the llama-swap in front of it (other servers' builds are
        # in the backend details).
        swaps = [st.version for st in backends.values() if st.kind == BackendKind.LLAMA_SWAP.value and st.version]
        return " · ".join(dict.fromkeys([seen[1], *swaps]))

    async def _probe_backends(self, name: str) -> dict[str, BackendStatus]:
        out: dict[str, BackendStatus] = {}
        jobs = []
        for bname, b in self.catalog.backends.items():
            if b.host == name:
                st = BackendStatus(bname, b.kind.value)
                out[bname] = st
                jobs.append(self._probe_backend(st, b.base_url, b.kind, b.health_path))
        if jobs:
            await asyncio.gather(*jobs)
        return out

    async def _get(self, url: str) -> tuple[int, Any]:
        assert self._http is not None
        r = await self._http.get(url)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, None

    async def _probe_backend(self, st: BackendStatus, base: str, kind: BackendKind, health_path: str) -> None:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.http_timeout_s)
        try:
            if kind is BackendKind.LLAMA_SWAP:
                code, data = await self._get(f"{base}/running")
                st.running = parse_swap_running(data) if code == 200 else []
                st.health = "ready" if code == 200 else "error"
                code, data = await self._get(f"{base}/api/version")
                if code == 200:
                    st.version = parse_swap_version(data).label
                code, data = await self._get(f"{base}/api/performance")
                if code == 200:
                    st.gpus = parse_swap_performance(data)
            elif kind is BackendKind.LLAMA_SERVER:
                code, data = await self._get(f"{base}/health")
                h = parse_server_health(code, data)
                st.health, st.detail = h.state, h.detail or None
                if h.state == "ready":
                    code, data = await self._get(f"{base}/props")
                    if code == 200:
                        props = parse_server_props(data)
                        st.version = props.build.label if props.build else None
                    code, data = await self._get(f"{base}/slots")
                    if code == 200:
                        st.slots_busy, st.slots_total = parse_server_slots(data)
            elif kind is BackendKind.OPENAI_COMPATIBLE:
                code, data = await self._get(f"{base}/v1/models")
                st.health = "ready" if code == 200 else "error"
                if code == 200 and isinstance(data, dict) and isinstance(data.get("data"), list):
                    st.running = [RunningModel(str(m.get("id")), "ready") for m in data["data"] if isinstance(m, dict)]
            else:
                code, _ = await self._get(f"{base}{health_path}")
                st.health = "ready" if code == 200 else "error"
                if code != 200:
                    st.detail = f"HTTP {code}"
        except httpx.HTTPError as exc:
            st.health, st.detail = "down", f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
        except ValueError as exc:
            st.health, st.detail = "error", str(exc)

    # ------------------------------------------------------------------ inventory
    async def _home(self, name: str) -> str:
        if name not in self._homes:
            self._homes[name] = await remote_home(self._transports[name], self._command_timeout(name))
        return self._homes[name]

    async def refresh_inventory(self, host: str) -> list[GgufFile]:
        h = self._host(host)
        home = await self._home(host)
        dirs = [expand_home(d, home) for d in h.model_dirs]
        return await self._inventory[host].refresh(dirs, timeout=self._command_timeout(host) * 2)

    def inventory(self, host: str) -> list[GgufFile]:
        self._host(host)
        return list(self._inventory[host].files)

    def missing_model_dirs(self, host: str) -> list[str]:
        self._host(host)
        return list(self._inventory[host].missing_dirs)

    # ------------------------------------------------------------------ serving binary
    async def _binary_path(self, name: str) -> str:
        h = self.catalog.hosts[name]
        assert h.build is not None
        home = await self._home(name)
        return make_plan(h.build, home, 1).binary

    def local_binary(self, host: str) -> ServingBinary | None:
        """On a ``local`` host whose backends this console launches (xllamacpp), the serving stack is
        xllamacpp itself, run in a child Python."""
        h = self.catalog.hosts[host]
        launched = any(b.host == host and b.launch is not None for b in self.catalog.backends.values())
        return ServingBinary.xllamacpp(sys.executable) if h.transport == "local" and launched else None

    async def serving_binary(self, host: str) -> ServingBinary | None:
        h = self._host(host)
        if h.build is not None:
            return ServingBinary.llama_server(await self._binary_path(host))
        return self.local_binary(host)

    async def architecture_verdicts(
        self, host: str, architectures: list[str]
    ) -> tuple[ServingBinary | None, dict[str, ArchVerdict]]:
        """Verdicts from the host's serving binary, cached per binary identity (path + size + mtime)."""
        binary = await self.serving_binary(host)
        if binary is None:
            return None, {}
        t = self._transports[host]
        if binary.kind == "llama-server":
            ident = await t.run(["ls", "-lLn", binary.argv_prefix[0]], self._command_timeout(host))
            identity = ident.out.strip() if ident.ok else ""
        else:
            identity = binary.label
        out: dict[str, ArchVerdict] = {}
        todo = []
        for a in dict.fromkeys(architectures):
            hit = self._arch_cache.get((host, identity, a)) if identity else None
            if hit is not None:
                out[a] = hit
            else:
                todo.append(a)
        if todo:
            fresh = await check_architectures(t, binary, todo, timeout=max(60.0, self._command_timeout(host)))
            for a, v in fresh.items():
                out[a] = v
                if identity and v.outcome != "inconclusive":
                    self._arch_cache[(host, identity, a)] = v
        return binary, out

    # ------------------------------------------------------------------ preflight
    def _resolve_local_gguf(self, spec: str) -> str | None:
        from ..launch import LaunchError, resolve_gguf

        try:
            return str(resolve_gguf(spec))
        except LaunchError:
            return None

    async def preflight(self, role: str, model: str, state: RoutingState) -> PreflightResult:
        rv, mv = state.role(role), state.model(model)
        if rv is None or mv is None:
            what = f"unknown role {role!r}" if rv is None else f"unknown model {model!r}"
            return PreflightResult(
                role=role, model=model, checks=[PreflightCheck(name="catalog", outcome=FAIL, evidence=what)]
            )
        host, backend = primary_host(self.catalog, model)
        checks = [capability_check(rv, mv)]
        b = self.catalog.backends[backend]
        m = self.catalog.models[model]
        if b.kind not in LLAMA_KINDS:
            checks.append(
                PreflightCheck(
                    name="weights",
                    outcome=WARN,
                    evidence=(f"{model} is served by {backend} ({b.kind.value}) on {host}: no llama.cpp GGUF to check"),
                )
            )
            checks.append(
                PreflightCheck(
                    name="architecture",
                    outcome=WARN,
                    evidence=(f"{backend} is not a llama.cpp backend; its server decides what it can load"),
                )
            )
        else:
            try:
                weights, declared = await asyncio.wait_for(
                    self._weights_check(host, model), self.probe_timeout(host) * 2
                )
                checks.append(weights)
                checks.append(
                    await asyncio.wait_for(
                        self._arch_check(host, declared or m.architecture), self.probe_timeout(host) + 120
                    )
                )
            except (TimeoutError, TransportError) as exc:
                why = str(exc) or f"no answer within {self.probe_timeout(host) * 2:g}s"
                names = {c.name for c in checks}
                for name in ("weights", "architecture"):
                    if name not in names:
                        checks.append(PreflightCheck(name=name, outcome=FAIL, evidence=f"{host} unreachable: {why}"))
        probe = self._probes.get(host)
        checks.append(
            memory_check(
                self.catalog, state, role, model, host, measured_total_gb=probe.memory_total_gb if probe else None
            )
        )
        return PreflightResult(role=role, model=model, host=host, checks=checks)

    async def _weights_check(self, host: str, model: str) -> tuple[PreflightCheck, str | None]:
        m = self.catalog.models[model]
        h = self.catalog.hosts[host]
        if not m.gguf:
            return PreflightCheck(
                name="weights", outcome=WARN, evidence=f"the catalog has no gguf path for {model}: weights not checked"
            ), None
        if m.gguf.startswith("@"):
            # The first call assembles the bundled GGUF (~250 MB written once): off the event loop.
            path = await asyncio.to_thread(self._resolve_local_gguf, m.gguf) if h.transport == "local" else None
            if path is None:
                return PreflightCheck(
                    name="weights", outcome=FAIL, evidence=f"{m.gguf} (a bundled demo model) is not available on {host}"
                ), None
        else:
            path = expand_home(m.gguf, await self._home(host))
        t = self._transports[host]
        size = await t.run(["sh", "-c", 'wc -c < "$1"', "forge-size", path], self._command_timeout(host))
        if not size.ok:
            return PreflightCheck(
                name="weights", outcome=FAIL, evidence=f"{path} is not on {host}: {size.reason(1) or 'not found'}"
            ), None
        try:
            hdr = await read_remote_header(t, path, timeout=self._command_timeout(host))
        except GgufError as exc:
            return PreflightCheck(name="weights", outcome=FAIL, evidence=f"{path} on {host}: {exc}"), None
        where = (
            f"{path} on {host}: {_size(int(size.out.strip() or 0))}, GGUF v{hdr.version}, "
            f"declares general.architecture={hdr.architecture!r}"
        )
        if hdr.architecture != m.architecture:
            return PreflightCheck(
                name="weights", outcome=FAIL, evidence=(f"{where}, but the catalog says {m.architecture!r}")
            ), hdr.architecture
        home = await self._home(host)
        dirs = [expand_home(d, home) for d in h.model_dirs]
        if dirs and not any(path.startswith(d.rstrip("/") + "/") for d in dirs):
            return PreflightCheck(
                name="weights", outcome=WARN, evidence=f"{where}; outside the host's model_dirs ({', '.join(dirs)})"
            ), hdr.architecture
        return PreflightCheck(name="weights", outcome=PASS, evidence=where), hdr.architecture

    async def _arch_check(self, host: str, architecture: str) -> PreflightCheck:
        binary, verdicts = await self.architecture_verdicts(host, [architecture])
        if binary is None:
            return PreflightCheck(
                name="architecture",
                outcome=WARN,
                evidence=(
                    f"host {host} has no build settings (hosts.{host}.build): no serving binary to ask about "
                    f"{architecture!r}"
                ),
            )
        return arch_check(architecture, verdicts[architecture], binary.label, host)

    # ------------------------------------------------------------------ jobs
    def start_job(self, kind: str, host: str) -> JobInfo:
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r} (one of: {', '.join(JOB_KINDS)})")
        h = self._host(host)
        local = self.local_binary(host)
        if kind == "rebuild" and h.build is None:
            raise ValueError(f"host {host!r} has no build settings (hosts.{host}.build): nothing to rebuild")
        if kind == "verify" and h.build is None and local is None:
            raise ValueError(f"host {host!r} has no build settings (hosts.{host}.build): no serving binary to verify")
        runner = JobRunner(
            kind,
            host,
            h,
            self.catalog,
            transport_for(host, h),
            self._jobs,
            state=lambda: self._state,
            gateway_url=self._gateway_url,
            local_binary=local if h.build is None else None,
            timeouts=self.job_timeouts,
            resolve_local_gguf=self._resolve_local_gguf if h.transport == "local" else None,
        )
        job = self._jobs.start(kind, host, runner.steps, runner)
        assert job.task is not None
        job.task.add_done_callback(lambda _t: self._after_job(host))
        return job.info()

    def _after_job(self, host: str) -> None:
        # The binary may have changed: read its version and architectures afresh.
        self._versions.pop(host, None)
        for key in [k for k in self._arch_cache if k[0] == host]:
            del self._arch_cache[key]

    def jobs(self) -> list[JobInfo]:
        return self._jobs.jobs()

    def job_log(self, job_id: str, since: int = 0) -> list[str]:
        return self._jobs.log(job_id, since)

    def job_steps(self, job_id: str) -> list[dict[str, object]]:
        return self._jobs.steps(job_id)

    async def wait_job(self, job_id: str, timeout: float | None = None) -> JobInfo:
        job = self._jobs.get(job_id)
        if job.task is not None:
            await asyncio.wait({job.task}, timeout=timeout)
        return job.info()

    async def cancel_job(self, job_id: str) -> JobInfo:
        return await self._jobs.cancel(job_id)


def _size(n: int) -> str:
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n} bytes"


def _version_from_backends(backends: dict[str, BackendStatus]) -> str | None:
    labels = [st.version for st in backends.values() if st.version]
    return " · ".join(dict.fromkeys(labels)) or None
