"""Several hosts as network namespaces, each running a real sshd on its own address; taking one
link down makes that host unreachable within a bounded time while the other keeps updating."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from forge_tui.config.models import Catalog
from forge_tui.hosts.service import HostsService
from tests.support.gateway_harness import running_gateway
from tests.support.netns import Netns, NetnsLab, netns_available
from tests.support.sshd import Sshd, sshd_available, start_sshd

pytestmark = [pytest.mark.netns, pytest.mark.sshd]


@pytest.fixture
def two_hosts(tmp_path: Path) -> Iterator[list[tuple[Netns, Sshd]]]:
    reason = netns_available() or sshd_available()
    if reason:
        pytest.skip(reason)
    lab = NetnsLab()
    servers: list[Sshd] = []
    try:
        out = []
        for i in range(2):
            ns = lab.add()
            s = start_sshd(tmp_path / f"sshd{i}", address=ns.inner_ip, port=22, netns=ns.name)
            servers.append(s)
            out.append((ns, s))
        yield out
    finally:
        for s in servers:
            s.stop()
        lab.teardown()


def _catalog(hosts: list[tuple[Netns, Sshd]]) -> Catalog:
    def host(ns: Netns, s: Sshd) -> dict[str, object]:
        return {
            "address": ns.inner_ip,
            "platform": "cpu",
            "memory_budget_gb": 8,
            "ssh": {
                "user": s.user,
                "port": 22,
                "key_file": str(s.client_key),
                "known_hosts": str(s.known_hosts),
                "connect_timeout_s": 1.5,
                "command_timeout_s": 1.5,
                "keepalive_s": 1,
            },
        }

    return Catalog.model_validate(
        {
            "hosts": {"alpha": host(*hosts[0]), "beta": host(*hosts[1])},
            "backends": {
                "b": {"host": "alpha", "kind": "llama-server", "base_url": f"http://{hosts[0][0].inner_ip}:8080"}
            },
            "families": {"f": {}},
            "models": {"m": {"family": "f", "architecture": "gemma3", "placements": [{"backend": "b"}]}},
            "roles": {"default-chat": {"model": "m"}},
        }
    )


async def _until(cond, timeout: float) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


async def test_link_down_makes_one_host_unreachable_while_the_other_keeps_updating(
    two_hosts: list[tuple[Netns, Sshd]],
) -> None:
    (ns_a, _), _ = two_hosts
    svc = HostsService(_catalog(two_hosts), state_dir=None, probe_interval_s=0.3, http_timeout_s=0.5)
    await svc.start()
    try:
        await _until(lambda: all(p.reachable for p in svc.probes().values()), 20)
        assert svc.probes()["alpha"].memory_source == "/proc/meminfo"

        ns_a.unplug()
        beta_before = svc.probes()["beta"].probed_at
        # Bounded by one probe's timeout, one interval and slack; the wait itself is the check.
        bound = svc.probe_timeout("alpha") + svc.probe_interval_s + 2
        await _until(lambda: svc.probes()["alpha"].reachable is False, bound + 5)
        alpha = svc.probes()["alpha"]
        assert alpha.error and ("no answer" in alpha.error or "cannot reach" in alpha.error), alpha.error

        # Meanwhile beta went on: count its fresh, successful probes while alpha stays down.
        stamps: set[float] = set()

        def beta_fresh() -> bool:
            a, b = svc.probes()["alpha"], svc.probes()["beta"]
            assert a.reachable is False, "alpha came back while its link was down"
            assert b.reachable, b.error
            if b.probed_at is not None and (beta_before is None or b.probed_at > beta_before):
                stamps.add(b.probed_at)
            return len(stamps) >= 2

        await _until(beta_fresh, 15)
        assert svc.probes()["alpha"].reachable is False

        ns_a.plug()
        await _until(lambda: svc.probes()["alpha"].reachable is True, 20)
    finally:
        await svc.close()


async def test_a_dropped_link_shows_within_10s_in_the_hosts_view_and_the_gateways_metrics(
    two_hosts: list[tuple[Netns, Sshd]],
) -> None:
    """The SSH probe runs every 30 s here: what notices the dropped link is the one backend probe
    loop (the running gateway's), whose fresh connections time out after the connect timeout."""
    (ns_a, _), _ = two_hosts
    cat = _catalog(two_hosts)
    data = cat.model_dump(mode="json", exclude_none=True)
    data["gateway"] = {**data.get("gateway", {}), "health_interval_s": 1.0}
    data["backends"]["b"]["connect_timeout_s"] = 1.0
    cat = Catalog.model_validate(data)
    async with running_gateway(cat) as h:
        svc = HostsService(cat, state_dir=None, probe_interval_s=30, health=h.gw.health)
        await svc.start()
        try:
            async with httpx.AsyncClient(base_url=h.url, timeout=5) as c:

                async def host_up() -> str:
                    text = (await c.get("/metrics")).text
                    line = next((ln for ln in text.splitlines() if ln.startswith('forge_host_up{host="alpha"}')), "")
                    return line.rsplit(" ", 1)[-1] if line else ""

                await _until(lambda: svc.probes()["alpha"].reachable is True, 20)
                assert float(await host_up()) == 1.0
                ns_a.unplug()
                # The bound: shown unreachable within 10 s of the link dropping.
                await _until(lambda: svc.probes()["alpha"].reachable is False, 10)
                alpha = svc.probes()["alpha"]
                assert (
                    alpha.error and "no answer from its backends" in alpha.error and "connect timed out" in alpha.error
                )
                assert float(await host_up()) == 0.0
                assert h.gw.backends["b"].health == "down"
                assert svc.probes()["beta"].reachable is True  # the other host is untouched
                ns_a.plug()
                # Back by the network's word, and SSH asked at once (not after 30 s).
                await _until(lambda: svc.probes()["alpha"].reachable is True, 15)
                assert float(await host_up()) == 1.0
        finally:
            await svc.close()
