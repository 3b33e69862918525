"""Faults that consumer boxes produce, played by the scripted recording upstream.

A stand-in backend here because each case needs a fault a real llama.cpp server will not produce on
demand: frozen after accepting (with /health frozen too), a connection closed right after the request
was read, a request held exactly as long as the test wants, a multi-MiB answer, a chunked terminator
that trails ``[DONE]``. The same faults against real llama.cpp servers (SIGSTOP, kill) and a real
unplugged link (network namespaces) are in test_gateway_faults_real.py.

Every case asserts behaviour: which backend answered, the error class, what each backend received.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from forge_tui.launch import free_port
from forge_tui.telemetry import ErrorClass
from tests.support.gateway_harness import make_catalog, running_gateway, single_model_catalog
from tests.support.recording_upstream import RecordingUpstream

MSG = [{"role": "user", "content": "hi"}]
FAST = {"health_interval_s": 0.2}


@pytest.fixture
async def two() -> AsyncIterator[tuple[RecordingUpstream, RecordingUpstream]]:
    a, b = await RecordingUpstream("a").start(), await RecordingUpstream("b").start()
    yield a, b
    a.behaviour.frozen = False
    await a.stop()
    await b.stop()


def _pair(
    a_url: str,
    b_url: str,
    a: dict[str, Any] | None = None,
    role: dict[str, Any] | None = None,
    b: dict[str, Any] | None = None,
    **gateway: Any,
):
    return make_catalog(
        backends={"a": {"base_url": a_url, **(a or {})}, "b": {"base_url": b_url, **(b or {})}},
        models={"primary": {"placements": [{"backend": "a"}]}, "spare": {"placements": [{"backend": "b"}]}},
        roles={"default-chat": {"model": "primary", "fallbacks": ["spare"], **(role or {})}},
        gateway=gateway,
    )


async def _until(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def _chats(b: RecordingUpstream) -> int:
    return sum(1 for r in b.requests if r.path == "/v1/chat/completions")


# ---------------------------------------------------------------------- 1. frozen backend
async def test_frozen_backend_its_waiting_and_queued_requests_move_to_the_fallback(two) -> None:
    a, b = two
    cat = _pair(a.url, b.url, {"max_concurrency": 1, "queue_limit": 4, "request_timeout_s": 60}, **FAST)
    async with running_gateway(cat) as h:
        assert h.gw.backends["a"].health == "ready"
        a.behaviour.frozen = True  # accepts and reads, answers nothing, /health included
        c = h.client()
        calls = [
            asyncio.create_task(c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG))
            for _ in range(3)
        ]
        raws = await asyncio.wait_for(asyncio.gather(*calls), 30)  # a hang guard, not a timing check
        for raw in raws:
            assert "backend=b" in raw.headers["x-forge-route"]
            rec = await h.record(raw.headers["x-forge-request-id"])
            assert rec.error_class is ErrorClass.OK and rec.status == 200 and rec.backend == "b"
        # One request reached the frozen backend (and was cancelled there); the queued two never did.
        assert _chats(a) == 1 and _chats(b) == 3
        be = h.gw.backends["a"]
        assert be.health == "down" and be.events.get("cancelled_upstream") == 1
        assert be.events.get("redispatched", 0) >= 2
        await _until(lambda: be.limiter.inflight == 0 and be.limiter.queued == 0)


async def test_a_stream_frozen_before_its_first_event_goes_to_the_fallback(two) -> None:
    a, b = two
    a.behaviour.freeze_after_head = True  # answers the head, then nothing (and /health hangs from then on)
    async with running_gateway(_pair(a.url, b.url, {"request_timeout_s": 60}, **FAST)) as h:
        stream = await asyncio.wait_for(
            h.client().chat.completions.create(model="default-chat", messages=MSG, stream=True), 30
        )
        got = [ch.choices[0].delta.content async for ch in stream if ch.choices and ch.choices[0].delta.content]
        assert "".join(got).strip() == b.behaviour.content
        rec = (await h.wait_records(1))[-1]
        assert rec.backend == "b" and rec.error_class is ErrorClass.OK and rec.extra["redispatched_from"] == "a"
        assert _chats(a) == 1 and _chats(b) == 1


async def test_read_timeouts_count_for_the_breaker(two) -> None:
    a, _ = two
    a.behaviour.hold = asyncio.Event()
    cat = make_catalog(
        backends={"a": {"base_url": a.url, "request_timeout_s": 0.3}},
        models={"m": {"placements": [{"backend": "a"}]}},
        roles={"default-chat": {"model": "m"}},
        gateway={"breaker_failures": 2},
    )
    async with running_gateway(cat) as h:
        for _ in range(2):
            with pytest.raises(openai.APIStatusError) as ei:
                await h.client().chat.completions.create(model="default-chat", messages=MSG)
            assert ei.value.status_code == 504
        assert h.gw.backends["a"].breaker.state() == "open"
        assert h.gw.backends["a"].events["read_timeout"] == 2
        with pytest.raises(openai.APIStatusError) as ei:
            await h.client().chat.completions.create(model="default-chat", messages=MSG)
        assert ei.value.status_code == 503 and "circuit open" in ei.value.body["message"]
        assert _chats(a) == 2  # the open circuit kept the third away
        a.behaviour.hold.set()


# ---------------------------------------------------------------------- 3. last resort
async def test_last_resort_takes_whichever_candidate_comes_up_first() -> None:
    pa, pb = free_port(), free_port()
    cat = _pair(
        f"http://127.0.0.1:{pa}", f"http://127.0.0.1:{pb}", {"warmup_timeout_s": 30}, b={"warmup_timeout_s": 30}, **FAST
    )
    async with running_gateway(cat) as h:
        assert h.gw.backends["a"].health == "down" and h.gw.backends["b"].health == "down"
        started: list[RecordingUpstream] = []

        async def fallback_comes_up() -> None:
            await asyncio.sleep(0.5)
            started.append(await RecordingUpstream("b", port=pb).start())

        up = asyncio.create_task(fallback_comes_up())
        try:
            # The primary stays dead for its whole (long) warmup window; the fallback's arrival is what counts.
            raw = await asyncio.wait_for(
                h.client().chat.completions.with_raw_response.create(model="default-chat", messages=MSG), 25
            )
            assert "backend=b" in raw.headers["x-forge-route"]
            rec = await h.record(raw.headers["x-forge-request-id"])
            assert rec.error_class is ErrorClass.OK and rec.cold_start and rec.fallback
            assert _chats(started[0]) == 1
        finally:
            await up
            for s in started:
                await s.stop()


async def test_nothing_can_serve_is_one_503_with_retry_after() -> None:
    w = {"warmup_timeout_s": 0.3}
    cat = _pair(f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}", w, b=w)
    async with running_gateway(cat) as h:
        with pytest.raises(openai.APIStatusError) as ei:
            await h.client().chat.completions.create(model="default-chat", messages=MSG)
        err = ei.value
        assert err.status_code == 503 and err.response.headers["Retry-After"]
        msg = err.body["message"]
        assert "no backend can serve this right now" in msg and "a: " in msg and "b: " in msg


# ---------------------------------------------------------------------- 4. spill-over
async def test_spill_over_takes_the_idle_fallback_and_says_so(two) -> None:
    a, b = two
    a.behaviour.hold = asyncio.Event()
    cat = _pair(a.url, b.url, {"max_concurrency": 1, "queue_limit": 4}, {"spill_after_ms": 50})
    async with running_gateway(cat) as h:
        c = h.client()
        first = asyncio.create_task(c.chat.completions.create(model="default-chat", messages=MSG))
        await _until(lambda: a.active == 1)
        raw = await c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
        assert raw.headers["x-forge-route"].endswith("backend=b; fallback=primary; spill=a")
        rec = await h.record(raw.headers["x-forge-request-id"])
        assert rec.spill and not rec.fallback and rec.error_class is ErrorClass.OK
        assert rec.extra["spill_from"] == "a"
        assert h.gw.backends["a"].events["spilled_from"] == 1 and h.gw.backends["b"].events["spilled_to"] == 1
        async with httpx.AsyncClient(base_url=h.url) as hc:
            metrics = (await hc.get("/metrics")).text
        assert 'forge_backend_events_total{backend="a",event="spilled_from",host="local"} 1.0' in metrics
        a.behaviour.hold.set()
        await first
        assert _chats(a) == 1 and _chats(b) == 1


async def test_without_spill_after_ms_a_full_primary_is_queued_for(two) -> None:
    a, b = two
    a.behaviour.hold = asyncio.Event()
    async with running_gateway(_pair(a.url, b.url, {"max_concurrency": 1, "queue_limit": 4})) as h:
        c = h.client()
        tasks = [asyncio.create_task(c.chat.completions.create(model="default-chat", messages=MSG)) for _ in range(2)]
        await _until(lambda: h.gw.backends["a"].limiter.queued == 1)
        a.behaviour.hold.set()
        await asyncio.gather(*tasks)
        assert _chats(a) == 2 and _chats(b) == 0


# ---------------------------------------------------------------------- 5. limiter
async def test_image_waiters_never_block_text_requests_that_fit(two) -> None:
    a, _ = two
    a.behaviour.hold = asyncio.Event()
    img = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
    cat = make_catalog(
        backends={"a": {"base_url": a.url, "max_concurrency": 3, "max_image_concurrency": 1, "queue_limit": 4}},
        models={"m": {"capabilities": ["chat", "vision"], "placements": [{"backend": "a"}]}},
        roles={"default-chat": {"model": "m"}, "vision": {"model": "m"}},
    )
    async with running_gateway(cat) as h:
        c = h.client()
        lim = h.gw.backends["a"].limiter
        image1 = asyncio.create_task(c.chat.completions.create(model="vision", messages=img))
        await _until(lambda: a.active == 1)
        image2 = asyncio.create_task(c.chat.completions.create(model="vision", messages=img))
        await _until(lambda: lim.queued == 1)  # held by the image cap
        text = asyncio.create_task(c.chat.completions.create(model="default-chat", messages=MSG))
        await _until(lambda: a.active == 2)  # the text request got a slot past the queued image
        assert lim.queued == 1
        a.behaviour.hold.set()
        await asyncio.gather(image1, image2, text)
        assert a.max_active == 2


# ---------------------------------------------------------------------- 6. large answers
async def test_a_multi_mib_non_stream_answer_is_relayed_whole(two) -> None:
    a, _ = two
    a.behaviour.embedding_dim = 60_000  # 8 inputs x 60k floats: about 3.4 MiB of JSON
    async with running_gateway(single_model_catalog(a.url, request_timeout_s=5)) as h:
        async with httpx.AsyncClient(base_url=h.url, timeout=30) as hc:
            r = await hc.post("/v1/embeddings", json={"model": "m", "input": [f"x{i}" for i in range(8)]})
        assert r.status_code == 200 and len(r.content) > 2 * 1024 * 1024
        data = r.json()["data"]
        assert len(data) == 8 and all(len(d["embedding"]) == 60_000 for d in data)


# ---------------------------------------------------------------------- 7. no duplicate generations
async def test_a_request_the_backend_read_is_never_sent_again(two) -> None:
    a, b = two
    a.behaviour.close_after_read = True  # reads the POST, drops the connection, keeps listening
    async with running_gateway(_pair(a.url, b.url)) as h:
        with pytest.raises(openai.APIStatusError) as ei:
            await h.client().chat.completions.create(model="default-chat", messages=MSG)
        assert ei.value.status_code == 502 and "not sent again" in ei.value.body["message"]
        rec = await h.record(ei.value.response.headers["x-forge-request-id"])
        assert rec.error_class is ErrorClass.UPSTREAM_ERROR and rec.backend == "a"
        assert _chats(a) == 1 and _chats(b) == 0  # exactly one POST anywhere
        assert h.gw.backends["a"].events["no_replay"] == 1


async def test_a_backend_that_died_with_the_request_lets_it_go_to_the_fallback(two) -> None:
    a, b = two
    a.behaviour.hold = asyncio.Event()
    async with running_gateway(_pair(a.url, b.url)) as h:
        call = asyncio.create_task(
            h.client().chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
        )
        await _until(lambda: a.active == 1)
        await a.stop()  # the process goes away with the request: connection closed, then refused
        raw = await asyncio.wait_for(call, 20)
        assert "backend=b" in raw.headers["x-forge-route"]
        assert _chats(a) == 1 and _chats(b) == 1


# ---------------------------------------------------------------------- 8. streams keep their connection
async def test_clean_streams_reuse_one_upstream_connection(two) -> None:
    a, _ = two
    a.behaviour.eof_delay_s = 0.02  # the chunked terminator trails [DONE] in its own packet
    async with running_gateway(single_model_catalog(a.url)) as h:
        c = h.client()
        for _ in range(6):
            stream = await c.chat.completions.create(model="default-chat", messages=MSG, stream=True)
            got = [ch async for ch in stream]
            assert got
        assert _chats(a) == 6
        assert a.connections == 1 and h.gw.backends["a"].events["connections_opened"] == 1


# ---------------------------------------------------------------------- 9. shutdown
async def test_a_stream_cut_at_shutdown_ends_with_an_error_event_and_done(two) -> None:
    a, _ = two
    a.behaviour.chunks = [f"t{i} " for i in range(400)]
    a.behaviour.chunk_delay_s = 0.05
    async with running_gateway(single_model_catalog(a.url)) as h:
        async with (
            httpx.AsyncClient(base_url=h.url, timeout=30) as hc,
            hc.stream(
                "POST", "/v1/chat/completions", json={"model": "default-chat", "messages": MSG, "stream": True}
            ) as r,
        ):
            lines = r.aiter_lines()
            first = await anext(lines)
            assert first.startswith("data: ")
            stopping = asyncio.create_task(h.gw.stop(drain_timeout=0.2))
            rest = [ln async for ln in lines]
            await stopping
        events = [ln[6:] for ln in rest if ln.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert '"gateway_shutdown"' in events[-2] and "shutting down" in events[-2]
        rec = (await h.wait_records(1))[-1]
        assert rec.error_class is ErrorClass.GATEWAY_SHUTDOWN and rec.status == 503
