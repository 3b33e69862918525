"""Faults on a schedule: fallback past a dead backend, the circuit breaker, the startup window,
the concurrency cap (429 + Retry-After), mid-stream death and client disconnects.

These need faults a real llama.cpp server will not produce on demand (a held request, a stream cut
after N chunks, 503 ``Loading model`` for exactly as long as a test wants), so a recording upstream
plays the backend. The same cases against the real llama.cpp server are in test_gateway_real.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import httpx
import openai
import pytest

from forge_tui.launch import free_port
from forge_tui.telemetry import ErrorClass
from tests.support.gateway_harness import make_catalog, running_gateway, single_model_catalog
from tests.support.recording_upstream import RecordingUpstream

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def two() -> AsyncIterator[tuple[RecordingUpstream, RecordingUpstream]]:
    a, b = await RecordingUpstream("a").start(), await RecordingUpstream("b").start()
    yield a, b
    await a.stop()
    await b.stop()


def _fallback_catalog(a_url: str, b_url: str, backend: dict | None = None, **gateway):
    return make_catalog(
        backends={"a": {"base_url": a_url, **(backend or {})}, "b": {"base_url": b_url, **(backend or {})}},
        models={"primary": {"placements": [{"backend": "a"}]}, "spare": {"placements": [{"backend": "b"}]}},
        roles={"default-chat": {"model": "primary", "fallbacks": ["spare"]}},
        gateway=gateway,
    )


async def _until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


class _CountingListener:
    """Listens where a stopped backend used to: counts connection attempts, answers nothing."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def start(self, port: int) -> _CountingListener:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        return self

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_dead_backend_falls_back_visibly(two) -> None:
    a, b = two
    port = a.port
    async with running_gateway(_fallback_catalog(a.url, b.url)) as h:
        assert h.gw.backends["a"].health == "ready"
        await a.stop()  # dies after the probe saw it ready: the request finds out
        raw = await h.client().chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
        assert raw.headers["x-forge-route"] == "role=default-chat; model=spare; host=local; backend=b; fallback=primary"
        rec = await h.record(raw.headers["x-forge-request-id"])
        assert rec.fallback is True and rec.error_class is ErrorClass.OK and rec.model == "spare"
        assert b.bodies()[-1]["model"] == "spare"
        # Once the probe has seen it down, it is skipped without a connection attempt.
        await h.gw.prober.probe_all()
        assert h.gw.backends["a"].health == "down" and "refused" in (h.gw.backends["a"].detail or "")
        raw = await h.client().chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
        assert "fallback=primary" in raw.headers["x-forge-route"]
        snap = h.operator.snapshot()
        back = {bi.name: bi for hi in snap.hosts for bi in hi.backends}
        assert back["a"].health == "down" and back["b"].health == "ready"
        assert port  # the port is free again for the breaker test below


async def test_circuit_breaker_opens_and_half_opens(two) -> None:
    a, b = two
    port = a.port
    cat = _fallback_catalog(a.url, b.url, breaker_failures=2, breaker_reset_s=0.4)
    async with running_gateway(cat) as h:
        await a.stop()
        c = h.client()
        for _ in range(2):  # two connect failures open the circuit
            r = await c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
            assert "fallback=primary" in r.headers["x-forge-route"]
        be = h.gw.backends["a"]
        assert be.breaker.state() == "open" and be.status_label() == "circuit-open"
        async with httpx.AsyncClient(base_url=h.url) as hc:
            metrics = (await hc.get("/metrics")).text
        assert 'forge_backend_up{backend="a",host="local"} 0' in metrics
        assert 'forge_backend_up{backend="b",host="local"} 1' in metrics
        assert any("circuit open" in w for w in h.operator.snapshot().warnings)
        # The backend comes back; after reset_s one trial request goes through and closes the circuit.
        a2 = await RecordingUpstream("a", port=port).start()
        try:
            await asyncio.sleep(0.45)
            assert be.breaker.state() == "half-open"
            r = await c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
            assert r.headers["x-forge-route"] == "role=default-chat; model=primary; host=local; backend=a"
            assert be.breaker.state() == "closed"
            assert len(a2.requests) == 1
        finally:
            await a2.stop()


async def test_everything_down_is_a_clear_unreachable_error(two) -> None:
    a, b = two
    cat = _fallback_catalog(a.url, b.url, {"warmup_timeout_s": 0.5}, breaker_failures=1, breaker_reset_s=60)
    async with running_gateway(cat) as h:
        await a.stop()
        await b.stop()
        # Refused everywhere: past the primary, the last candidate gets its startup window, then gives up.
        with pytest.raises(openai.APIStatusError) as ei:
            await h.client().chat.completions.create(model="default-chat", messages=MSG)
        assert ei.value.status_code == 503 and "startup timeout" in ei.value.body["message"]
        assert "a: " in ei.value.body["message"] and "connection refused" in ei.value.body["message"]
        # Both circuits are open now: the next request fails fast, naming each backend and why,
        # without touching either backend (a listener on each port sees no connection attempt).
        assert h.gw.backends["a"].breaker.state() == "open" and h.gw.backends["b"].breaker.state() == "open"
        listeners = [await _CountingListener().start(a.port), await _CountingListener().start(b.port)]
        try:
            with pytest.raises(openai.APIStatusError) as ei:
                await h.client().chat.completions.create(model="default-chat", messages=MSG)
            assert [lst.connections for lst in listeners] == [0, 0]
        finally:
            for lst in listeners:
                await lst.stop()
        msg = ei.value.body["message"]
        # One answer for "nothing can serve this role": 503, every backend's reason, Retry-After.
        assert ei.value.status_code == 503 and "a: circuit open" in msg and "b: circuit open" in msg
        assert "no backend can serve this right now" in msg and ei.value.response.headers["Retry-After"]
        assert h.gw.backends["a"].breaker.state() == "open" and h.gw.backends["b"].breaker.state() == "open"
        rec = await h.record(ei.value.response.headers["x-forge-request-id"])
        assert rec.error_class is ErrorClass.UPSTREAM_UNREACHABLE


async def test_loading_backend_is_waited_out(two) -> None:
    a, _ = two
    cat = single_model_catalog(a.url, warmup_timeout_s=20)
    a.behaviour.loading_until = time.monotonic() + 1.2
    async with running_gateway(cat) as h:
        assert h.gw.backends["a"].health == "starting"  # the probe read llama-server's 503 Loading model
        raw = await h.client().chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
        assert raw.parse().choices[0].message.content
        assert time.monotonic() >= a.behaviour.loading_until
        rec = await h.record(raw.headers["x-forge-request-id"])
        assert rec.status == 200 and rec.latency_ms >= 100


async def test_refused_then_loading_then_ready_is_waited_out() -> None:
    port = free_port()
    cat = make_catalog(
        backends={"a": {"base_url": f"http://127.0.0.1:{port}", "warmup_timeout_s": 20}},
        models={"m": {"placements": [{"backend": "a"}]}},
        roles={"default-chat": {"model": "m"}},
    )
    async with running_gateway(cat) as h:
        assert h.gw.backends["a"].health == "down"

        async def come_up() -> RecordingUpstream:
            await asyncio.sleep(0.8)
            u = RecordingUpstream("a", port=port)
            u.behaviour.loading_until = time.monotonic() + 0.8
            return await u.start()

        starter = asyncio.create_task(come_up())
        try:
            r = await h.client().chat.completions.create(model="default-chat", messages=MSG)
            assert r.choices[0].message.content
        finally:
            await (await starter).stop()


async def test_startup_timeout_says_so(two) -> None:
    a, _ = two
    a.behaviour.loading_until = time.monotonic() + 60
    cat = single_model_catalog(a.url, warmup_timeout_s=0.8)
    async with running_gateway(cat) as h:
        with pytest.raises(openai.APIStatusError) as ei:
            await h.client().chat.completions.create(model="default-chat", messages=MSG)
        err = ei.value
        assert err.status_code == 503 and err.body["type"] == "upstream_startup"
        assert "startup timeout" in err.body["message"] and "Loading model" in err.body["message"]
        assert err.response.headers["Retry-After"]
        rec = await h.record(err.response.headers["x-forge-request-id"])
        assert rec.error_class is ErrorClass.UPSTREAM_STARTUP


async def test_loading_primary_with_a_ready_fallback_is_not_waited_for(two) -> None:
    a, b = two
    a.behaviour.loading_until = time.monotonic() + 60
    async with running_gateway(_fallback_catalog(a.url, b.url)) as h:
        r = await h.client().chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
        assert "fallback=primary" in r.headers["x-forge-route"]


# ---------------------------------------------------------------------- concurrency
def _capped(url: str, **backend):
    return make_catalog(
        backends={"a": {"base_url": url, **backend}},
        models={"m": {"capabilities": ["chat", "vision"], "placements": [{"backend": "a"}]}},
        roles={"default-chat": {"model": "m"}, "vision": {"model": "m"}},
    )


async def test_cap_with_no_queue_answers_429(two) -> None:
    a, _ = two
    a.behaviour.hold = asyncio.Event()
    async with running_gateway(_capped(a.url, max_concurrency=1, queue_limit=0)) as h:
        c = h.client()
        first = asyncio.create_task(c.chat.completions.create(model="default-chat", messages=MSG))
        await _until(lambda: a.active == 1)
        with pytest.raises(openai.RateLimitError) as ei:
            await c.chat.completions.create(model="default-chat", messages=MSG)
        assert ei.value.response.headers["Retry-After"] == "1"
        assert ei.value.body["code"] == "saturated" and "concurrency cap (1)" in ei.value.body["message"]
        rec = await h.record(ei.value.response.headers["x-forge-request-id"])
        assert rec.error_class is ErrorClass.SATURATED and rec.status == 429
        a.behaviour.hold.set()
        assert (await first).choices[0].message.content
        assert len(a.requests) == 1


async def test_queue_waits_then_times_out_or_is_served(two) -> None:
    a, _ = two
    a.behaviour.hold = asyncio.Event()
    async with running_gateway(_capped(a.url, max_concurrency=1, queue_limit=1, queue_timeout_s=0.5)) as h:
        c = h.client()
        first = asyncio.create_task(c.chat.completions.create(model="default-chat", messages=MSG))
        await _until(lambda: a.active == 1)
        queued = asyncio.create_task(c.chat.completions.create(model="default-chat", messages=MSG))
        await _until(lambda: h.gw.backends["a"].limiter.queued == 1)
        assert h.operator.snapshot().hosts[0].backends[0].queued == 1
        with pytest.raises(openai.RateLimitError) as ei:  # queue full
            await c.chat.completions.create(model="default-chat", messages=MSG)
        assert "wait queue is full" in ei.value.body["message"]
        with pytest.raises(openai.RateLimitError) as ei:  # waited its 0.5 s, no slot
            await queued
        assert "no free slot within 0.5s" in ei.value.body["message"]
        # With a slot freed in time, the waiter is served, never more than the cap at once.
        waiting = asyncio.create_task(c.chat.completions.create(model="default-chat", messages=MSG))
        await _until(lambda: h.gw.backends["a"].limiter.queued == 1)
        a.behaviour.hold.set()
        await first
        await waiting
        assert a.max_active == 1 and len(a.requests) == 2


async def test_image_requests_have_their_own_lower_cap(two) -> None:
    a, _ = two
    a.behaviour.hold = asyncio.Event()
    img = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
    async with running_gateway(_capped(a.url, max_concurrency=3, max_image_concurrency=1, queue_limit=0)) as h:
        c = h.client()
        first = asyncio.create_task(c.chat.completions.create(model="vision", messages=img))
        await _until(lambda: a.active == 1)
        with pytest.raises(openai.RateLimitError) as ei:
            await c.chat.completions.create(model="vision", messages=img)
        assert "1 for images" in ei.value.body["message"]
        text = asyncio.create_task(c.chat.completions.create(model="default-chat", messages=MSG))
        await _until(lambda: a.active == 2)  # text still gets a slot
        a.behaviour.hold.set()
        await first
        await text


# ---------------------------------------------------------------------- streams
async def test_upstream_death_mid_stream_ends_with_an_error_event(two) -> None:
    a, _ = two
    a.behaviour.chunks = [f"w{i} " for i in range(10)]
    a.behaviour.die_after_chunks = 3
    cat = single_model_catalog(a.url)
    async with running_gateway(cat) as h:
        async with (
            httpx.AsyncClient(base_url=h.url) as c,
            c.stream(
                "POST", "/v1/chat/completions", json={"model": "default-chat", "messages": MSG, "stream": True}
            ) as r,
        ):
            assert r.status_code == 200
            text = (await r.aread()).decode()
        events = [ln[6:] for ln in text.splitlines() if ln.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert '"error"' in events[-2] and "died mid-stream" in events[-2]
        assert sum('"w' in e for e in events) == 3
        # The SDK surfaces the error event as an exception after the chunks that did arrive.
        got = []
        with pytest.raises(openai.APIError) as ei:
            stream = await h.client().chat.completions.create(model="default-chat", messages=MSG, stream=True)
            async for ch in stream:
                if ch.choices and ch.choices[0].delta.content:
                    got.append(ch.choices[0].delta.content)
        assert got == ["w0 ", "w1 ", "w2 "]
        assert "died mid-stream" in str(ei.value)
        recs = await h.wait_records(2)
        assert all(r.error_class is ErrorClass.UPSTREAM_ERROR and r.stream and r.status == 502 for r in recs)


async def test_client_disconnect_cancels_the_upstream_stream(two) -> None:
    a, _ = two
    a.behaviour.chunks = [f"t{i} " for i in range(100)]
    a.behaviour.chunk_delay_s = 0.05
    cat = single_model_catalog(a.url)
    async with running_gateway(cat) as h:
        async with aiohttp.ClientSession() as s:
            resp = await s.post(
                h.url + "/v1/chat/completions", json={"model": "default-chat", "messages": MSG, "stream": True}
            )
            first = await resp.content.readline()
            assert first.startswith(b"data: ")
            resp.close()  # the caller goes away mid-stream
        await asyncio.wait_for(a.disconnected.wait(), 5)
        assert a.stream_disconnects == 1
        rec = (await h.wait_records(1))[-1]
        assert rec.status == 499 and rec.error_class is ErrorClass.CLIENT_GONE  # not counted with real 400s
        await _until(lambda: h.gw.backends["a"].limiter.inflight == 0)
        assert h.gw.inflight == 0


async def test_client_disconnect_cancels_a_waiting_upstream_request(two) -> None:
    a, _ = two
    a.behaviour.hold = asyncio.Event()
    cat = single_model_catalog(a.url)
    async with running_gateway(cat) as h:
        with pytest.raises(openai.APITimeoutError):
            await h.client(timeout=0.5).chat.completions.create(model="default-chat", messages=MSG)
        await asyncio.wait_for(a.disconnected.wait(), 5)
        assert a.cancelled == 1
        await _until(lambda: h.gw.backends["a"].limiter.inflight == 0)
