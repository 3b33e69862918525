"""The GGUF inventory of every host (one ``Inventory`` each, listed under its ``model_dirs``)."""

from __future__ import annotations

from .context import HostContext
from .inventory import GgufFile, Inventory, expand_home

__all__ = ["Inventories"]


class Inventories:
    def __init__(self, ctx: HostContext) -> None:
        self._ctx = ctx
        self._inv = {n: Inventory(t) for n, t in ctx.transports.items()}

    async def refresh(self, host: str) -> list[GgufFile]:
        h = self._ctx.host(host)
        home = await self._ctx.home(host)
        dirs = [expand_home(d, home) for d in h.model_dirs]
        return await self._inv[host].refresh(dirs, timeout=self._ctx.command_timeout(host) * 2)

    def files(self, host: str) -> list[GgufFile]:
        self._ctx.host(host)
        return list(self._inv[host].files)

    def missing_dirs(self, host: str) -> list[str]:
        self._ctx.host(host)
        return list(self._inv[host].missing_dirs)
