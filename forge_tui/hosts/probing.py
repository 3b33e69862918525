"""Host probes: one loop per host (SSH liveness, memory, serving version), each on its own SSH
connection, so a slow or unreachable host never stalls another; every probe is bounded (connect
timeout + command timeout) and time-stamped.

What the host's backends hold and how they answer comes from the one backend prober
(``forge_tui.health``): when it runs (a gateway is up) its latest states are read, otherwise
(``forge-tui hosts probe``) the host's backends are probed once with it. Reachability is that
prober's ``Reachability``: this loop adds the SSH word, the backend probes the network word, so a
dropped link shows within one health interval; when the network comes back the host is probed
over SSH at once instead of at the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from ..config.models import BackendKind
from ..health import BackendProber, BackendState, models_held
from .binaries import ServingBinaries
from .context import HostContext
from .gguf import GgufError
from .inventories import Inventories
from .probes.collect import probe_memory, reading_from_gpus
from .probes.model import GIB, GpuMemory, MemoryReading
from .probes.serving import parse_build_info, parse_swap_performance, parse_swap_version
from .transport import TransportError

__all__ = ["HostProbe", "HostProber", "backend_version"]


@dataclass(slots=True)
class HostProbe:
    host: str
    reachable: bool | None = None  # None until someone (SSH or the backend probes) has said
    memory_used_gb: float | None = None
    memory_total_gb: float | None = None
    memory_source: str | None = None
    serving_version: str | None = None
    probed_at: float | None = None  # unix time the SSH probe finished
    error: str | None = None
    loaded_models: dict[str, list[str]] = field(default_factory=dict)  # backend -> what it holds now
    gpus: list[GpuMemory] = field(default_factory=list)
    pressure: str | None = None  # Apple memory pressure: normal / warn / critical
    notes: list[str] = field(default_factory=list)
    backends: dict[str, BackendState] = field(default_factory=dict)
    duration_s: float | None = None


def _gb(n: int | None) -> float | None:
    return round(n / GIB, 2) if n is not None else None


def backend_version(st: BackendState) -> str | None:
    """The build label a backend reports (llama-server ``/props`` build_info, llama-swap ``/api/version``)."""
    try:
        if st.build_info:
            return parse_build_info(st.build_info).label
        if st.swap_version:
            return parse_swap_version(st.swap_version).label
    except ValueError:
        return None
    return None


def _version_from_backends(backends: dict[str, BackendState]) -> str | None:
    labels = [v for st in backends.values() if (v := backend_version(st))]
    return " · ".join(dict.fromkeys(labels)) or None


class HostProber:
    def __init__(
        self,
        ctx: HostContext,
        binaries: ServingBinaries,
        inventories: Inventories,
        backends: BackendProber,
        *,
        probe_interval_s: float,
        inventory_interval_s: float,
        http_timeout_s: float,
        sysfs_root: str,
    ) -> None:
        self._ctx = ctx
        self._binaries = binaries
        self._inventories = inventories
        self.backends = backends
        self.probe_interval_s = probe_interval_s
        self.inventory_interval_s = inventory_interval_s
        self.http_timeout_s = http_timeout_s
        self.sysfs_root = sysfs_root
        names = list(ctx.catalog.hosts)
        self._probes: dict[str, HostProbe] = {n: HostProbe(host=n) for n in names}
        self._locks = {n: asyncio.Lock() for n in names}
        self._wake = {n: asyncio.Event() for n in names}
        self._counts = dict.fromkeys(names, 0)
        self._loops: list[asyncio.Task[None]] = []
        self._http: httpx.AsyncClient | None = None
        self._closed = False
        self._unsubscribe = backends.reach.subscribe(self._reach_changed)

    # ------------------------------------------------------------------ lifecycle
    def use(self, backends: BackendProber) -> None:
        """Read (and add the SSH word to) another prober: the running gateway's."""
        self._unsubscribe()
        self.backends = backends
        self._unsubscribe = backends.reach.subscribe(self._reach_changed)

    def start(self) -> None:
        if self._loops:
            return
        loop = asyncio.get_running_loop()
        for name in self._ctx.catalog.hosts:
            self._loops.append(loop.create_task(self._loop(name), name=f"probe {name}"))

    async def close(self) -> None:
        self._closed = True
        self._unsubscribe()
        for t in self._loops:
            t.cancel()
        for t in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._loops.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _reach_changed(self, host: str, reachable: bool | None) -> None:
        if host not in self._wake:
            return
        if self.backends.reach.said(host, "network") and self.backends.reach.said(host, "ssh") is False:
            self._wake[host].set()  # the network is back: ask SSH now, not at the next tick

    async def _loop(self, name: str) -> None:
        last_inventory: float | None = None  # attempts, not successes: a failing listing is not retried every probe
        while not self._closed:
            self._wake[name].clear()
            try:
                await self.probe_now(name)
            except Exception as exc:  # a bug in one probe must not end this host's loop for good
                self._probes[name] = HostProbe(
                    host=name, probed_at=time.time(), error=f"probe failed: {exc.__class__.__name__}: {exc}"
                )
            now = asyncio.get_running_loop().time()
            due = last_inventory is None or now - last_inventory > self.inventory_interval_s
            if due and self._probes[name].reachable and self._ctx.catalog.hosts[name].model_dirs:
                last_inventory = now
                with contextlib.suppress(TransportError, GgufError, asyncio.TimeoutError):
                    await asyncio.wait_for(self._inventories.refresh(name), self._ctx.command_timeout(name) * 4)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake[name].wait(), self.probe_interval_s)

    # ------------------------------------------------------------------ readers
    def probes(self) -> dict[str, HostProbe]:
        """The latest probe of every host, with reachability as of now (the network may have spoken since)."""
        return {n: self._view(p) for n, p in self._probes.items()}

    def _view(self, p: HostProbe) -> HostProbe:
        r = self.backends.reach.get(p.host)
        if r.reachable is None or r.reachable == p.reachable:
            return p
        if r.reachable is False:
            return replace(p, reachable=False, error=r.detail or p.error)
        # Back up by the network's word; before the first SSH probe the host stays "not known yet".
        return replace(p, reachable=True) if p.probed_at is not None else p

    def _probe_bound(self, name: str) -> float:
        # liveness + memory tools (a few commands) + HTTP + the binary's --version
        return self._ctx.probe_timeout(name) + 4 * self._ctx.command_timeout(name) + self.http_timeout_s + 2

    async def probe_now(self, host: str) -> HostProbe:
        self._ctx.host(host)
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
                self.backends.reach.observe(host, "ssh", False, probe.error)
                self._ctx.drop_connection(host)
            self._probes[host] = probe
            return self._view(probe)

    async def _backend_states(self, name: str) -> dict[str, BackendState]:
        if self.backends.running:
            return self.backends.on_host(name)
        return await self.backends.probe_host(name)

    async def _probe(self, name: str) -> HostProbe:
        h = self._ctx.catalog.hosts[name]
        t = self._ctx.transports[name]
        started = time.time()
        self._counts[name] += 1
        probe = HostProbe(host=name)
        http = asyncio.ensure_future(self._backend_states(name))
        reading: MemoryReading | None = None
        timeout = self._ctx.probe_timeout(name)
        try:
            # Liveness first, so a hung GPU tool is not mistaken for a dead host.
            await asyncio.wait_for(t.run(["true"], self._ctx.command_timeout(name)), timeout)
            probe.reachable = True
        except TimeoutError:
            probe.reachable = False
            probe.error = f"no answer within {timeout:g}s"
            self._ctx.drop_connection(name)
        except TransportError as exc:
            probe.reachable = False
            probe.error = str(exc)
            self._ctx.drop_connection(name)
        self.backends.reach.observe(name, "ssh", bool(probe.reachable), probe.error)
        if probe.reachable:
            cmd = self._ctx.command_timeout(name)
            try:
                reading = await asyncio.wait_for(probe_memory(t, h, timeout=cmd, sysfs_root=self.sysfs_root), 3 * cmd)
            except TimeoutError:
                probe.error = f"memory probe did not finish within {3 * cmd:g}s"
            except TransportError as exc:
                probe.reachable = False
                probe.error = str(exc)
        backends = await http
        probe.backends = backends
        cat = self._ctx.catalog
        for bname, st in backends.items():
            if st.holds:
                if st.kind is BackendKind.LLAMA_SERVER:
                    probe.loaded_models[bname] = models_held(cat, bname, st.holds) or sorted(st.holds)
                else:
                    probe.loaded_models[bname] = sorted(st.holds)
        perf = await self._swap_gpus(name)
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
        probe.serving_version = await self._serving_version(name, backends, bool(probe.reachable))
        probe.probed_at = time.time()
        probe.duration_s = round(probe.probed_at - started, 3)
        return probe

    async def _serving_version(self, name: str, backends: dict[str, BackendState], reachable: bool) -> str | None:
        from_http = _version_from_backends(backends)
        if not reachable:
            return from_http
        label = await self._binaries.version(name, self._counts[name])
        if label is None:
            return from_http
        # The binary the jobs manage, then the llama-swap in front of it (other servers' builds are
        # in the backend details).
        swaps = [v for st in backends.values() if st.kind is BackendKind.LLAMA_SWAP and (v := backend_version(st))]
        return " · ".join(dict.fromkeys([label, *swaps]))

    async def _swap_gpus(self, name: str) -> list[GpuMemory]:
        """llama-swap ``/api/performance`` (newer builds): GPU memory when the host's own tools say nothing."""
        out: list[GpuMemory] = []
        for bname, b in self._ctx.catalog.backends.items():
            if b.host != name or b.kind is not BackendKind.LLAMA_SWAP or not self.backends.state(bname).ready:
                continue
            if self._http is None:
                self._http = httpx.AsyncClient(timeout=self.http_timeout_s, trust_env=False)
            try:
                r = await self._http.get(b.base_url + "/api/performance")
                data: Any = r.json() if r.status_code == 200 else None
                if data is not None:
                    out += parse_swap_performance(data)
            except (httpx.HTTPError, ValueError):
                continue
        return out
