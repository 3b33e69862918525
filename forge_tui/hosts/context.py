"""What every hosts service shares: the catalog, one SSH (or local) transport per host, the
remote home directories, and the timeouts that bound a command on each host."""

from __future__ import annotations

from ..config.models import Catalog, Host
from .inventory import remote_home
from .transport import SshTransport, Transport, transport_for

__all__ = ["HostContext"]


class HostContext:
    def __init__(self, catalog: Catalog, *, backoff_max_s: float) -> None:
        self.catalog = catalog
        self.transports: dict[str, Transport] = {
            n: transport_for(n, h, backoff_max_s=backoff_max_s) for n, h in catalog.hosts.items()
        }
        self._homes: dict[str, str] = {}

    def host(self, name: str) -> Host:
        h = self.catalog.hosts.get(name)
        if h is None:
            raise ValueError(f"unknown host {name!r} (hosts: {', '.join(sorted(self.catalog.hosts)) or 'none'})")
        return h

    def command_timeout(self, name: str) -> float:
        h = self.catalog.hosts[name]
        return h.ssh.command_timeout_s if h.transport == "ssh" else 30.0

    def probe_timeout(self, name: str) -> float:
        """How long a host may take to answer a trivial command before it counts as unreachable."""
        h = self.catalog.hosts[name]
        if h.transport == "ssh":
            return h.ssh.connect_timeout_s + h.ssh.command_timeout_s
        return 30.0

    async def home(self, name: str) -> str:
        if name not in self._homes:
            self._homes[name] = await remote_home(self.transports[name], self.command_timeout(name))
        return self._homes[name]

    def drop_connection(self, name: str) -> None:
        """Forget the host's SSH connection: the next command connects afresh instead of waiting on a dead one."""
        t = self.transports[name]
        if isinstance(t, SshTransport):
            t.forget_connection()

    async def close(self) -> None:
        for t in self.transports.values():
            await t.close()
