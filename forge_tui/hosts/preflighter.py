"""Gathering a preflight's evidence: the backend's own word on what it serves, the weights on the
host (over SSH), the architecture asked of the host's serving binary, the memory budget.

Fails closed: a host that does not answer, a header that cannot be read, a binary that is not
there make the check ``unproven`` (blocks unless forced), each with what would let it run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..health import BackendProber, BackendState
from ..schema import PreflightCheck, PreflightResult
from ..state import RoutingState
from .binaries import ServingBinaries
from .context import HostContext
from .gguf import GgufError, read_remote_header
from .inventory import expand_home
from .preflight import (
    FAIL,
    PASS,
    WARN,
    arch_check,
    capability_check,
    memory_check,
    primary_host,
    serves_check,
    unproven,
)
from .smoke import LLAMA_KINDS
from .transport import TransportError

__all__ = ["Preflighter"]


def _size(n: int) -> str:
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= f:
            return f"{n / f:.2f} {unit}"
    return f"{n} bytes"


def _resolve_local_gguf(spec: str) -> str | None:
    from ..launch import LaunchError, resolve_gguf

    try:
        return str(resolve_gguf(spec))
    except LaunchError:
        return None


class Preflighter:
    def __init__(
        self,
        ctx: HostContext,
        binaries: ServingBinaries,
        backends: Callable[[], BackendProber],
        measured_total_gb: Callable[[str], float | None],
    ) -> None:
        self._ctx = ctx
        self._binaries = binaries
        self._backends = backends
        self._measured = measured_total_gb

    resolve_local_gguf = staticmethod(_resolve_local_gguf)

    async def _backend_state(self, backend: str) -> BackendState:
        """The prober's latest word when it is fresh (a running gateway), else a probe now."""
        prober = self._backends()
        st = prober.state(backend)
        fresh = st.checked_at is not None and time.time() - st.checked_at <= 2 * prober.interval_s + 1
        if prober.running and fresh:
            return st
        return await prober.probe(backend)

    async def preflight(self, role: str, model: str, state: RoutingState) -> PreflightResult:
        cat = self._ctx.catalog
        rv, mv = state.role(role), state.model(model)
        if rv is None or mv is None:
            what = f"unknown role {role!r}" if rv is None else f"unknown model {model!r}"
            return PreflightResult(
                role=role, model=model, checks=[PreflightCheck(name="catalog", outcome=FAIL, evidence=what)]
            )
        host, backend = primary_host(cat, model)
        b = cat.backends[backend]
        m = cat.models[model]
        st = await self._backend_state(backend)
        also = await self._real_path(host, m.gguf) if b.kind in LLAMA_KINDS and st.ready else frozenset()
        checks = [capability_check(rv, mv), serves_check(cat, model, backend, st, also)]
        if b.kind not in LLAMA_KINDS:
            checks.append(
                PreflightCheck(
                    name="weights",
                    outcome=WARN,
                    evidence=f"not applicable: {model} is served by {backend} ({b.kind.value}), no llama.cpp GGUF",
                )
            )
            checks.append(
                PreflightCheck(
                    name="architecture",
                    outcome=WARN,
                    evidence=f"not applicable: {backend} is not a llama.cpp backend; its server decides what it loads",
                )
            )
        else:
            bound = self._ctx.probe_timeout(host) * 2
            try:
                weights, declared = await asyncio.wait_for(self._weights_check(host, model), bound)
                checks.append(weights)
                checks.append(
                    await asyncio.wait_for(
                        self._arch_check(host, backend, declared or m.architecture),
                        self._ctx.probe_timeout(host) + 120,
                    )
                )
            except (TimeoutError, TransportError, GgufError) as exc:
                why = str(exc) or f"no answer within {bound:g}s"
                names = {c.name for c in checks}
                for name in ("weights", "architecture"):
                    if name not in names:
                        checks.append(
                            unproven(
                                name,
                                f"{host} did not answer over SSH: {why}",
                                f"check the host and its SSH settings (forge-tui hosts probe {host})",
                            )
                        )
        checks.append(memory_check(cat, state, role, model, host, measured_total_gb=self._measured(host)))
        return PreflightResult(role=role, model=model, host=host, checks=checks)

    async def _real_path(self, host: str, gguf: str | None) -> frozenset[str]:
        """The file a catalog path points at on the host (model dirs are often symlink farms)."""
        if not gguf or gguf.startswith("@"):
            return frozenset()
        try:
            path = expand_home(gguf, await self._ctx.home(host))
            res = await asyncio.wait_for(
                self._ctx.transports[host].run(["readlink", "-f", path], self._ctx.command_timeout(host)),
                self._ctx.probe_timeout(host),
            )
        except (TimeoutError, TransportError, GgufError):
            return frozenset()  # the weights check says why the host did not answer
        real = res.out.strip()
        return frozenset({real}) if res.ok and real else frozenset()

    async def _weights_check(self, host: str, model: str) -> tuple[PreflightCheck, str | None]:
        m = self._ctx.catalog.models[model]
        h = self._ctx.catalog.hosts[host]
        if not m.gguf:
            return unproven(
                "weights",
                f"the catalog has no gguf path for {model}: cannot check its weights or read its architecture",
                f"set models.{model}.gguf to the file's path on {host}",
            ), None
        if m.gguf.startswith("@"):
            # The first call assembles the bundled GGUF (~250 MB written once): off the event loop.
            path = await asyncio.to_thread(_resolve_local_gguf, m.gguf) if h.transport == "local" else None
            if path is None:
                return PreflightCheck(
                    name="weights",
                    outcome=FAIL,
                    evidence=f"{m.gguf} (a bundled demo model) is not available on {host}",
                    fix="pip install 'forge-tui[demo]' on this machine",
                ), None
        else:
            path = expand_home(m.gguf, await self._ctx.home(host))
        t = self._ctx.transports[host]
        timeout = self._ctx.command_timeout(host)
        size = await t.run(["sh", "-c", 'wc -c < "$1"', "forge-size", path], timeout)
        if not size.ok:
            return PreflightCheck(
                name="weights",
                outcome=FAIL,
                evidence=f"{path} is not on {host}: {size.reason(1) or 'not found'}",
                fix=f"copy the GGUF there, or fix models.{model}.gguf (forge-tui hosts inventory {host} lists them)",
            ), None
        try:
            hdr = await read_remote_header(t, path, timeout=timeout)
        except GgufError as exc:
            return unproven(
                "weights",
                f"{path} on {host}: the GGUF header is unreadable ({exc}): its architecture cannot be read",
                f"check the file (a partial download?): forge-tui hosts inventory {host}",
            ), None
        where = (
            f"{path} on {host}: {_size(int(size.out.strip() or 0))}, GGUF v{hdr.version}, "
            f"declares general.architecture={hdr.architecture!r}"
        )
        if hdr.architecture != m.architecture:
            return PreflightCheck(
                name="weights",
                outcome=FAIL,
                evidence=f"{where}, but the catalog says {m.architecture!r}",
                fix=f"set models.{model}.architecture to {hdr.architecture!r}, or point gguf at the right file",
            ), hdr.architecture
        home = await self._ctx.home(host)
        dirs = [expand_home(d, home) for d in h.model_dirs]
        if dirs and not any(path.startswith(d.rstrip("/") + "/") for d in dirs):
            return PreflightCheck(
                name="weights", outcome=WARN, evidence=f"{where}; outside the host's model_dirs ({', '.join(dirs)})"
            ), hdr.architecture
        return PreflightCheck(name="weights", outcome=PASS, evidence=where), hdr.architecture

    async def _arch_check(self, host: str, backend: str, architecture: str) -> PreflightCheck:
        found = await self._binaries.lookup(host, backend)
        if found.binary is None:
            return unproven(
                "architecture",
                f"no serving binary is known for {host}: nothing to ask whether its llama.cpp knows {architecture!r}",
                f"set hosts.{host}.serving_binary (or backends.{backend}.serving_binary) to the llama-server "
                f"path on {host}, or give the host build settings (hosts.{host}.build)",
            )
        binary, verdicts = await self._binaries.verdicts(host, [architecture], backend)
        assert binary is not None
        return arch_check(architecture, verdicts[architecture], binary.label, host, found.source)
