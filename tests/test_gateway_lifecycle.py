"""Gateway lifecycle: embedded start in a running loop (no signal handlers), a clear bind error,
graceful stop that drains in-flight requests (bounded), and the backend-timeout error class.

A recording upstream holds requests open on demand, which a real llama.cpp server cannot."""

from __future__ import annotations

import asyncio
import errno
import signal
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from forge_tui.gateway import Gateway, GatewayBindError
from forge_tui.state import RoutingState
from forge_tui.telemetry import ErrorClass, Telemetry
from tests.support.gateway_harness import running_gateway, single_model_catalog
from tests.support.recording_upstream import RecordingUpstream

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def up() -> AsyncIterator[RecordingUpstream]:
    u = await RecordingUpstream("a").start()
    yield u
    await u.stop()


async def _until_active(up: RecordingUpstream) -> None:
    """Wait, boundedly, until the upstream is answering a request."""
    for _ in range(1000):  # at most ~10 s
        if up.active > 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the request never reached the upstream")


async def test_port_in_use_is_a_clear_error_not_an_exit(up: RecordingUpstream) -> None:
    sigint = signal.getsignal(signal.SIGINT)
    async with running_gateway(single_model_catalog(up.url)) as h:
        assert signal.getsignal(signal.SIGINT) is sigint  # embedding installs no signal handlers
        cat = single_model_catalog(up.url)
        other = Gateway(cat, RoutingState(cat, None), telemetry=Telemetry(None))
        with pytest.raises(GatewayBindError) as ei:
            await other.start("127.0.0.1", h.gw.port)
        assert str(ei.value).startswith(f"port {h.gw.port} on 127.0.0.1 is already in use")
        assert isinstance(ei.value, OSError) and ei.value.errno == errno.EADDRINUSE
        with pytest.raises(RuntimeError):
            await h.gw.start("127.0.0.1", 0)
        async with httpx.AsyncClient(base_url=h.url) as c:
            assert (await c.get("/health")).json()["status"] == "ok"  # the first one is unharmed


async def test_stop_drains_in_flight_requests(up: RecordingUpstream) -> None:
    cat = single_model_catalog(up.url)
    tel = Telemetry(None)
    gw = Gateway(cat, RoutingState(cat, None), telemetry=tel)
    await gw.start("127.0.0.1", 0)
    url = gw.url
    up.behaviour.hold = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=10) as c:
        pending = asyncio.create_task(c.post("/v1/chat/completions", json={"model": "default-chat", "messages": MSG}))
        await _until_active(up)
        assert gw.inflight == 1
        stopping = asyncio.create_task(gw.stop(drain_timeout=10))
        await asyncio.sleep(0.2)
        assert not stopping.done()  # waiting for the in-flight request
        async with httpx.AsyncClient(base_url=url, timeout=2) as fresh:
            with pytest.raises(httpx.ConnectError):  # no longer accepting
                await fresh.get("/health")
        up.behaviour.hold.set()
        r = await pending
        assert r.status_code == 200
        await asyncio.wait_for(stopping, 5)
    await gw.stop()  # idempotent


async def test_stop_gives_up_after_the_drain_timeout(up: RecordingUpstream) -> None:
    cat = single_model_catalog(up.url)
    gw = Gateway(cat, RoutingState(cat, None), telemetry=Telemetry(None))
    await gw.start("127.0.0.1", 0)
    up.behaviour.hold = asyncio.Event()
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as c:
        pending = asyncio.create_task(c.post("/v1/chat/completions", json={"model": "default-chat", "messages": MSG}))
        await _until_active(up)
        # The held request never finishes on its own: stop() returns only because it gives up on it.
        await asyncio.wait_for(gw.stop(drain_timeout=0.3), 60)  # a hang guard, not a timing check
        assert not up.behaviour.hold.is_set() and gw.inflight == 0
        # The caller is told why (503 gateway_shutdown), not left with a cut connection.
        answer = await pending
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "gateway_shutdown"
    await asyncio.wait_for(up.disconnected.wait(), 5)  # the backend saw its request abandoned
    assert up.cancelled == 1


async def test_silent_backend_is_an_upstream_timeout(up: RecordingUpstream) -> None:
    up.behaviour.hold = asyncio.Event()
    async with running_gateway(single_model_catalog(up.url, request_timeout_s=0.4)) as h:
        with pytest.raises(openai.APIStatusError) as ei:
            await h.client().chat.completions.create(model="default-chat", messages=MSG)
        assert ei.value.status_code == 504 and ei.value.body["type"] == "upstream_timeout"
        assert "no answer within 0.4s" in ei.value.body["message"]
        rec = await h.record(ei.value.response.headers["x-forge-request-id"])
        assert rec.error_class is ErrorClass.UPSTREAM_TIMEOUT
        up.behaviour.hold.set()
