"""The serving binary of each host: where it is, which build it is, which architectures it knows.

Where, first match wins: the backend's ``serving_binary``, the host's ``serving_binary``, the
binary its ``build`` settings produce; on a ``local`` host whose backends this console launches,
xllamacpp in a child Python. Verdicts are cached per binary identity (path + size + mtime), so a
rebuilt binary is asked afresh.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from .archcheck import ArchVerdict, ServingBinary, check_architectures
from .buildplan import make_plan
from .context import HostContext
from .gguf import GgufError
from .inventory import expand_home
from .probes.serving import parse_llama_version
from .transport import TransportError

__all__ = ["BinaryLookup", "ServingBinaries"]

VERSION_EVERY = 10  # re-read `llama-server --version` every N probes (it can init GPUs: not free)


@dataclass(frozen=True, slots=True)
class BinaryLookup:
    binary: ServingBinary | None
    source: str  # the catalog field it came from, for evidence ("hosts.box.serving_binary")


class ServingBinaries:
    def __init__(self, ctx: HostContext) -> None:
        self._ctx = ctx
        self._arch_cache: dict[tuple[str, str, str], ArchVerdict] = {}
        self._versions: dict[str, tuple[int, str | None]] = {}  # host -> (probe count when read, label)

    def local(self, host: str) -> ServingBinary | None:
        """xllamacpp itself, on a ``local`` host whose backends this console launches."""
        cat = self._ctx.catalog
        h = cat.hosts[host]
        launched = any(b.host == host and b.launch is not None for b in cat.backends.values())
        return ServingBinary.xllamacpp(sys.executable) if h.transport == "local" and launched else None

    async def lookup(self, host: str, backend: str | None = None) -> BinaryLookup:
        cat = self._ctx.catalog
        h = self._ctx.host(host)
        b = cat.backends.get(backend) if backend else None
        if b is not None and b.serving_binary:
            return BinaryLookup(
                ServingBinary.llama_server(expand_home(b.serving_binary, await self._ctx.home(host))),
                f"backends.{backend}.serving_binary",
            )
        if h.serving_binary:
            return BinaryLookup(
                ServingBinary.llama_server(expand_home(h.serving_binary, await self._ctx.home(host))),
                f"hosts.{host}.serving_binary",
            )
        if h.build is not None:
            path = make_plan(h.build, await self._ctx.home(host), 1).binary
            return BinaryLookup(ServingBinary.llama_server(path), f"hosts.{host}.build")
        local = self.local(host)
        return BinaryLookup(local, "the launched xllamacpp" if local else "")

    async def binary(self, host: str, backend: str | None = None) -> ServingBinary | None:
        return (await self.lookup(host, backend)).binary

    async def build_path(self, host: str) -> str | None:
        """The llama-server path on ``host`` the jobs and the version probe use (None: none configured)."""
        found = await self.lookup(host)
        return found.binary.argv_prefix[0] if found.binary and found.binary.kind == "llama-server" else None

    async def verdicts(
        self, host: str, architectures: list[str], backend: str | None = None
    ) -> tuple[ServingBinary | None, dict[str, ArchVerdict]]:
        binary = await self.binary(host, backend)
        if binary is None:
            return None, {}
        t = self._ctx.transports[host]
        if binary.kind == "llama-server":
            path = binary.argv_prefix[0]
            ident = await t.run(["ls", "-lLn", path], self._ctx.command_timeout(host))
            if not ident.ok:
                why = ident.reason(1) or "not found"
                return binary, {
                    a: ArchVerdict(a, "inconclusive", f"no llama-server at {path} on {host}: {why}")
                    for a in architectures
                }
            identity = ident.out.strip()
        else:
            identity = binary.label
        out: dict[str, ArchVerdict] = {}
        todo = []
        for a in dict.fromkeys(architectures):
            hit = self._arch_cache.get((host, identity, a))
            if hit is not None:
                out[a] = hit
            else:
                todo.append(a)
        if todo:
            fresh = await check_architectures(t, binary, todo, timeout=max(60.0, self._ctx.command_timeout(host)))
            for a, v in fresh.items():
                out[a] = v
                if v.outcome != "inconclusive":
                    self._arch_cache[(host, identity, a)] = v
        return binary, out

    async def version(self, host: str, count: int) -> str | None:
        """``--version`` of the host's llama-server, read again every ``VERSION_EVERY`` probes."""
        seen = self._versions.get(host)
        if seen is None or count - seen[0] >= VERSION_EVERY:
            label: str | None = None
            try:
                path = await self.build_path(host)
                if path is not None:
                    res = await self._ctx.transports[host].run([path, "--version"], self._ctx.command_timeout(host))
                    label = parse_llama_version(res.err + "\n" + res.out).label
            except (TransportError, ValueError, GgufError):
                label = None
            seen = (count, label)
            self._versions[host] = seen
        return seen[1]

    def forget(self, host: str) -> None:
        """The binary may have changed (a job ran): read its version and architectures afresh."""
        self._versions.pop(host, None)
        for key in [k for k in self._arch_cache if k[0] == host]:
            del self._arch_cache[key]
