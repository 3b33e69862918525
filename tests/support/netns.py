"""Network namespaces as separate "hosts": ``ip netns add``, a veth pair, a private /30 each.

Namespace ``i`` of a test run gets 10.231.<block>.<4i+1>/30 on the root side and .<4i+2> inside,
where ``block`` is derived from the pid so parallel runs do not collide. Only namespaces and links
created here are touched, and ``teardown`` removes them all.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field

__all__ = ["Netns", "NetnsLab", "netns_available"]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def netns_available() -> str | None:
    """None when namespaces can be created here, else the reason (used to skip)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"ftprobe{os.getpid() % 100000}"
    try:
        r = _ip("netns", "add", name, check=False)
    except FileNotFoundError:
        return "iproute2 (ip) is not installed"
    if r.returncode != 0:
        return f"ip netns add is not permitted here: {r.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


@dataclass
class Netns:
    name: str
    host_if: str  # the root-namespace end of the veth pair
    inner_if: str
    host_ip: str
    inner_ip: str  # the address the "remote host" answers on

    def exec_argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def link_down(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def link_up(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def unplug(self) -> None:
        """The cable pulled at the host's end: the namespace's side goes down, the root side keeps its
        route (NO-CARRIER) and packets to the host are dropped, so connects time out as on a LAN.
        (``link_down`` removes the route instead: traffic then follows this machine's default route,
        where this sandbox's network answers HTTP itself.)"""
        _ip("netns", "exec", self.name, "ip", "link", "set", self.inner_if, "down")

    def plug(self) -> None:
        _ip("netns", "exec", self.name, "ip", "link", "set", self.inner_if, "up")


@dataclass
class NetnsLab:
    prefix: str = field(default_factory=lambda: f"ft{os.getpid() % 10000}")
    block: int = field(default_factory=lambda: 1 + os.getpid() % 250)
    spaces: list[Netns] = field(default_factory=list)

    def add(self) -> Netns:
        i = len(self.spaces)
        if i >= 60:
            raise RuntimeError("at most 60 namespaces per lab")
        ns = Netns(
            name=f"{self.prefix}n{i}",
            host_if=f"{self.prefix}h{i}",
            inner_if=f"{self.prefix}i{i}",
            host_ip=f"10.231.{self.block}.{4 * i + 1}",
            inner_ip=f"10.231.{self.block}.{4 * i + 2}",
        )
        self.spaces.append(ns)  # registered first: a half-built namespace is still torn down
        _ip("netns", "add", ns.name)
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.inner_if)
        _ip("link", "set", ns.inner_if, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_ip}/30", "dev", ns.host_if)
        _ip("link", "set", ns.host_if, "up")
        _ip("netns", "exec", ns.name, "ip", "addr", "add", f"{ns.inner_ip}/30", "dev", ns.inner_if)
        _ip("netns", "exec", ns.name, "ip", "link", "set", ns.inner_if, "up")
        _ip("netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
        return ns

    def teardown(self) -> None:
        for ns in reversed(self.spaces):
            _ip("link", "del", ns.host_if, check=False)  # also removes the peer
            _ip("netns", "del", ns.name, check=False)
        self.spaces.clear()
