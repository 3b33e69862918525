"""Faults on real parts: real llama.cpp servers frozen (SIGSTOP: the kernel still accepts connections,
nothing answers), killed mid-request; and a real unplugged link (a llama.cpp server inside a network
namespace whose veth goes down). Stream connection reuse is tested with the scripted upstream only:
this llama.cpp build closes the connection itself after every stream (seen: EOF right after the
chunked terminator), so there is nothing to reuse on a bare llama-server.

Asserts behaviour only: which backend answered, the error class, what the backend saw."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from forge_tui.launch import resolve_gguf
from forge_tui.telemetry import ErrorClass
from tests.support.gateway_harness import make_catalog, running_gateway
from tests.support.netns import Netns, NetnsLab, netns_available

MSG = [{"role": "user", "content": "Count from one to twenty."}]


def _pair(primary_url: str, spare_url: str, a: dict[str, Any] | None = None, **gateway: Any):
    return make_catalog(
        backends={"a": {"base_url": primary_url, **(a or {})}, "b": {"base_url": spare_url}},
        models={"primary": {"placements": [{"backend": "a"}]}, "spare": {"placements": [{"backend": "b"}]}},
        roles={"default-chat": {"model": "primary", "fallbacks": ["spare"]}},
        gateway=gateway,
    )


async def _until(cond, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_frozen_real_server_requests_go_to_the_fallback(llama_server, llama_server_factory) -> None:
    frozen = llama_server_factory(ctx_size=512, parallel=1)
    cat = _pair(frozen.url, llama_server.url, {"request_timeout_s": 120}, health_interval_s=0.2)
    async with running_gateway(cat) as h:
        assert h.gw.backends["a"].health == "ready"
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            c = h.client(timeout=60)
            raw = await c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG, max_tokens=8)
            assert "backend=b" in raw.headers["x-forge-route"]
            rec = await h.record(raw.headers["x-forge-request-id"])
            assert rec.error_class is ErrorClass.OK and rec.backend == "b"
            be = h.gw.backends["a"]
            assert be.health == "down"
            # Either the request found it already down, or it was waiting there and was cancelled.
            assert be.events.get("cancelled_upstream", 0) + be.events.get("went_bad", 0) >= 1
        finally:
            os.kill(frozen.pid, signal.SIGCONT)


async def test_killed_mid_request_real_server_lets_the_request_go_to_the_fallback(
    llama_server, llama_server_factory
) -> None:
    doomed = llama_server_factory(ctx_size=512, parallel=1)
    async with running_gateway(_pair(doomed.url, llama_server.url)) as h:
        c = h.client(timeout=120)
        call = asyncio.create_task(
            c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG, max_tokens=200)
        )
        await _until(lambda: h.gw.backends["a"].limiter.inflight == 1)
        await asyncio.sleep(0.3)  # it is generating now
        doomed.kill()
        raw = await asyncio.wait_for(call, 120)
        assert "backend=b" in raw.headers["x-forge-route"]
        rec = await h.record(raw.headers["x-forge-request-id"])
        assert rec.error_class is ErrorClass.OK and rec.backend == "b"
        assert h.gw.backends["a"].events["no_replay"] == 1  # noticed it may have been read; it died, so it moved


# ---------------------------------------------------------------------- link down
_SERVE_IN_NETNS = """
import sys, time, xllamacpp
p = xllamacpp.CommonParams()
p.model.path, p.n_ctx, p.n_parallel, p.port = sys.argv[1], 512, 1, int(sys.argv[3])
p.hostnames = [sys.argv[2]]
p.cpuparams.n_threads = p.cpuparams_batch.n_threads = 1
server = xllamacpp.Server(p)
while True:
    time.sleep(1)
"""


def _unplug(ns: Netns, down: bool = True) -> None:
    """Drop the carrier on the namespace's side of the link: the root side keeps its route, so packets
    to the host vanish like on a pulled cable (downing the root side would remove that route and send
    them to the default gateway instead)."""
    subprocess.run(ns.exec_argv("ip", "link", "set", ns.inner_if, "down" if down else "up"), check=True)


@pytest.fixture
def remote_llama(tmp_path) -> Iterator[tuple[Netns, str]]:  # type: ignore[no-untyped-def]
    """A real llama.cpp server on its own "host": a network namespace with a veth link."""
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    lab = NetnsLab()
    proc: subprocess.Popen[bytes] | None = None
    try:
        ns = lab.add()
        gguf = str(resolve_gguf("@gemma3-270m"))
        with open(tmp_path / "netns-llama.log", "wb") as log:  # the child keeps its own copy of the fd
            proc = subprocess.Popen(
                ns.exec_argv(sys.executable, "-c", _SERVE_IN_NETNS, gguf, ns.inner_ip, "8080"),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://{ns.inner_ip}:8080"
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "netns-llama.log").read_text()[-2000:]
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "llama.cpp in the namespace did not come up"
            time.sleep(0.2)
        yield ns, url
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(10)
        lab.teardown()


@pytest.mark.netns
async def test_unplugged_host_reused_connection_and_new_ones_go_to_the_fallback(remote_llama, llama_server) -> None:
    ns, url = remote_llama
    cat = _pair(url, llama_server.url, {"connect_timeout_s": 0.3, "request_timeout_s": 120}, health_interval_s=0.2)
    async with running_gateway(cat) as h:
        c = h.client(timeout=60)
        raw = await c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG, max_tokens=2)
        assert "backend=a" in raw.headers["x-forge-route"]  # and its connection is now idle in the pool
        _unplug(ns)
        try:
            # The next request goes out on the reused connection into the void: once the probe finds the
            # host gone it is cancelled there and re-dispatched.
            raw = await c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG, max_tokens=2)
            assert "backend=b" in raw.headers["x-forge-route"]
            rec = await h.record(raw.headers["x-forge-request-id"])
            assert rec.error_class is ErrorClass.OK
            be = h.gw.backends["a"]
            assert not be.usable() and be.events["cancelled_upstream"] == 1  # it had been sent on the old connection
            raw = await c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG, max_tokens=2)
            assert "backend=b" in raw.headers["x-forge-route"]
        finally:
            _unplug(ns, down=False)


@pytest.mark.netns
async def test_one_connect_timeout_marks_the_backend_suspect(remote_llama, llama_server) -> None:
    ns, url = remote_llama
    # No probe during the test (60 s interval): only the request path can notice the unplugged host.
    # One slot: the requests queued behind the one that times out must not wait their own turns.
    cat = _pair(url, llama_server.url, {"connect_timeout_s": 0.3, "max_concurrency": 1}, health_interval_s=60)
    async with running_gateway(cat) as h:
        assert h.gw.backends["a"].health == "ready"
        _unplug(ns)
        try:
            c = h.client(timeout=60)
            calls = [
                c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG, max_tokens=2)
                for _ in range(3)
            ]
            for raw in await asyncio.gather(*calls):
                assert "backend=b" in raw.headers["x-forge-route"]
                rec = await h.record(raw.headers["x-forge-request-id"])
                assert rec.error_class is ErrorClass.OK and rec.fallback
            raw = await c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG, max_tokens=2)
            assert "backend=b" in raw.headers["x-forge-route"]
            be = h.gw.backends["a"]
            assert be.events["connect_timeout"] == 1  # the others left the queue or skipped the suspect backend
            assert be.suspect is not None and be.status_label() == "suspect"
        finally:
            _unplug(ns, down=False)
