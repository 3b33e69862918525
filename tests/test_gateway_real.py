"""The gateway in front of real llama.cpp servers (xllamacpp, the real Gemma 3 270M GGUF, each in
its own process), driven by the official openai SDK: chat, streaming, embeddings, a real backend
killed (before a request and mid-stream), a real slow start waited out, and llama-swap's on-demand
start through the stand-in (tests/support/llama_swap_standin.py stands in for the Go binary only;
the model process behind it is a real llama.cpp server).

The model is a 270M base model: answers are poor, so nothing asserts on wording."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from forge_tui.launch import free_port, resolve_gguf
from forge_tui.schema import Snapshot
from forge_tui.telemetry import ErrorClass
from tests.support.gateway_harness import Harness, make_catalog, running_gateway
from tests.support.llama_swap_standin import LlamaSwapStandin, SwapModel
from tests.test_telemetry import parse_prometheus, value

pytestmark = pytest.mark.llama

MSG = [{"role": "user", "content": "Say hello."}]


def _cat(backends: dict[str, dict[str, Any]], models: dict[str, dict[str, Any]], roles: dict[str, dict[str, Any]]):
    return make_catalog(backends=backends, models=models, roles=roles)


@pytest.fixture
async def gw(llama_server, llama_embed_server) -> AsyncIterator[Harness]:
    cat = _cat(
        backends={
            "chat": {"base_url": llama_server.url, "max_concurrency": 4},
            "emb": {"base_url": llama_embed_server.url},
        },
        models={
            # The GGUF it is made from: how the snapshot matches what the llama-server reports holding (/props).
            "gemma3-270m": {
                "family": "thinker",
                "gguf": "@gemma3-270m",
                "placements": [{"backend": "chat", "name": "gemma-3-270m"}],
            },
            "gemma3-270m-embed": {"capabilities": ["embed"], "placements": [{"backend": "emb"}]},
        },
        roles={"default-chat": {"model": "gemma3-270m"}, "embed": {"model": "gemma3-270m-embed"}},
    )
    async with running_gateway(cat) as h:
        yield h


async def test_chat_non_stream_and_stream(gw: Harness) -> None:
    c = gw.client()
    raw = await c.chat.completions.with_raw_response.create(
        model="default-chat", messages=MSG, max_tokens=8, temperature=0
    )
    r = raw.parse()
    assert r.choices[0].message.content is not None and r.usage.completion_tokens > 0
    assert raw.headers["x-forge-route"] == "role=default-chat; model=gemma3-270m; host=local; backend=chat"
    rec = await gw.record(raw.headers["x-forge-request-id"])
    assert rec.error_class is ErrorClass.OK and rec.tokens_out and rec.tokens_per_s and rec.thinking_injected

    stream = await c.chat.completions.create(model="gemma3-270m", messages=MSG, max_tokens=8, stream=True)
    pieces = [ch.choices[0].delta.content async for ch in stream if ch.choices and ch.choices[0].delta.content]
    assert pieces
    rec = (await gw.wait_records(2))[-1]
    assert rec.stream and rec.ttft_ms is not None and rec.ttft_ms <= rec.latency_ms and rec.tokens_out


async def test_real_server_accepts_the_injected_thinking_switch(gw: Harness, llama_server) -> None:
    """What the gateway forwards is something llama.cpp takes: the template renders with it."""
    async with httpx.AsyncClient(base_url=llama_server.url) as c:
        r = await c.post("/apply-template", json={"messages": MSG, "chat_template_kwargs": {"enable_thinking": False}})
    assert r.status_code == 200 and "Say hello." in r.json()["prompt"]


async def test_completions_and_embeddings(gw: Harness) -> None:
    c = gw.client()
    comp = await c.completions.create(model="default-chat", prompt="Once upon a time", max_tokens=4)
    assert comp.choices[0].text is not None
    emb = await c.embeddings.with_raw_response.create(model="auto", input=["forge", "anvil"])
    data = emb.parse().data
    assert len(data) == 2 and len(data[0].embedding) > 16
    assert "role=embed" in emb.headers["x-forge-route"]


async def test_metrics_and_snapshot(gw: Harness) -> None:
    await gw.client().chat.completions.create(model="default-chat", messages=MSG, max_tokens=2)
    async with httpx.AsyncClient(base_url=gw.url) as c:
        r = await c.get("/metrics")
        health = (await c.get("/health")).json()
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'forge_backend_up{backend="chat",host="local"} 1' in text
    assert "forge_inflight 0" in text and 'forge_backend_queued{backend="chat"} 0' in text
    _, samples = parse_prometheus(text)  # label order and number format are prometheus_client's
    route = {"role": "default-chat", "model": "gemma3-270m", "host": "local", "backend": "chat"}
    assert value(samples, "forge_requests_total", **route, error_class="ok") == 1
    assert health["status"] == "ok" and health["backends"]["chat"] == "ready"
    snap = Snapshot.model_validate(gw.operator.snapshot().model_dump(mode="json"))
    assert snap.gateway_url == gw.url
    m = {mi.id: mi for mi in snap.models}
    assert m["gemma3-270m"].loaded is True and m["gemma3-270m"].roles == ["default-chat"]
    assert m["gemma3-270m"].thinking == "off-by-default"
    host = snap.hosts[0]
    assert host.reachable is True and {b.name for b in host.backends} == {"chat", "emb"}
    assert snap.telemetry.total >= 1


async def test_killed_backend_falls_back(llama_server, llama_server_factory) -> None:
    doomed = llama_server_factory()
    cat = _cat(
        backends={"doomed": {"base_url": doomed.url}, "steady": {"base_url": llama_server.url}},
        models={"primary": {"placements": [{"backend": "doomed"}]}, "spare": {"placements": [{"backend": "steady"}]}},
        roles={"default-chat": {"model": "primary", "fallbacks": ["spare"]}},
    )
    async with running_gateway(cat) as h:
        c = h.client()
        first = await c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG, max_tokens=2)
        assert "backend=doomed" in first.headers["x-forge-route"]
        doomed.kill()
        raw = await c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG, max_tokens=2)
        assert (
            raw.headers["x-forge-route"]
            == "role=default-chat; model=spare; host=local; backend=steady; fallback=primary"
        )
        rec = await h.record(raw.headers["x-forge-request-id"])
        assert rec.fallback and rec.error_class is ErrorClass.OK


async def test_backend_killed_mid_stream(llama_server_factory) -> None:
    victim = llama_server_factory()
    cat = _cat(
        backends={"v": {"base_url": victim.url}},
        models={"m": {"placements": [{"backend": "v"}]}},
        roles={"default-chat": {"model": "m"}},
    )
    async with running_gateway(cat) as h:
        stream = await h.client().chat.completions.create(
            model="default-chat",
            messages=[{"role": "user", "content": "Tell a very long story."}],
            max_tokens=400,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        got = 0
        with pytest.raises(openai.APIError) as ei:
            async for ch in stream:
                if ch.choices and ch.choices[0].delta.content:
                    got += 1
                    if got == 3:
                        victim.kill()
        assert got >= 3
        assert "mid-stream" in str(ei.value) or "without [DONE]" in str(ei.value)
        rec = (await h.wait_records(1))[-1]
        assert rec.stream and rec.error_class is ErrorClass.UPSTREAM_ERROR and rec.status == 502


async def test_real_slow_start_is_waited_out(llama_server_factory) -> None:
    port = free_port()
    cat = _cat(
        backends={"late": {"base_url": f"http://127.0.0.1:{port}", "warmup_timeout_s": 90}},
        models={"m": {"placements": [{"backend": "late"}]}},
        roles={"default-chat": {"model": "m"}},
    )
    async with running_gateway(cat) as h:
        assert h.gw.backends["late"].health == "down"
        # The real server is started now and not waited for: connection refused, then 503 Loading model.
        llama_server_factory(wait=False, port=port)
        r = await h.client(timeout=120).chat.completions.create(model="default-chat", messages=MSG, max_tokens=2)
        assert r.choices[0].message is not None
        rec = (await h.wait_records(1))[-1]
        assert rec.error_class is ErrorClass.OK


async def test_llama_swap_starts_the_model_on_demand() -> None:
    gguf = str(resolve_gguf("@gemma3-270m"))
    cmd = [
        sys.executable,
        "-m",
        "forge_tui.launch",
        "serve",
        "--gguf",
        gguf,
        "--port",
        "${PORT}",
        "--ctx",
        "512",
        "--parallel",
        "2",
    ]
    swap = await LlamaSwapStandin({"gemma-small": SwapModel(cmd=cmd, aliases=("gs",))}).start()
    try:
        cat = make_catalog(
            backends={"swap": {"kind": "llama-swap", "base_url": swap.url, "warmup_timeout_s": 90}},
            models={"gemma3-swap": {"placements": [{"backend": "swap", "name": "gemma-small"}]}},
            roles={"default-chat": {"model": "gemma3-swap"}},
        )
        async with running_gateway(cat) as h:
            assert h.gw.backends["swap"].health == "ready"
            assert h.operator.snapshot().models[0].loaded is False  # llama-swap is up, the model is not
            c = h.client(timeout=120)
            # Two callers at once while the model is starting: both queue in llama-swap and are served.
            results = await asyncio.gather(
                *(
                    c.chat.completions.with_raw_response.create(model="default-chat", messages=MSG, max_tokens=2)
                    for _ in range(2)
                )
            )
            assert all(r.headers["x-forge-route"].endswith("backend=swap") for r in results)
            await h.gw.prober.probe_all()
            assert h.gw.backends["swap"].loaded == frozenset({"gemma-small"})
            snap = h.operator.snapshot()
            assert snap.models[0].loaded is True
            assert snap.hosts[0].backends[0].loaded_models == ["gemma3-swap"]
            async with httpx.AsyncClient(base_url=swap.url) as hc:
                running = (await hc.get("/running")).json()["running"]
                assert [(r["model"], r["state"]) for r in running] == [("gemma-small", "ready")]
                assert (await hc.post("/api/models/unload")).text == "OK"
            await h.gw.prober.probe_all()
            assert h.operator.snapshot().models[0].loaded is False
        # The stand-in's own surface, as the hosts service and operators use it.
        async with httpx.AsyncClient(base_url=swap.url, timeout=120) as hc:
            assert set((await hc.get("/api/version")).json()) == {"version", "commit", "build_date"}
            r = await hc.get("/upstream/gs/health")  # by alias, loading the model on the way
            assert r.status_code == 200 and r.json()["status"] == "ok"
            assert (await hc.post("/api/models/unload/nope")).status_code == 404
            r = await hc.post("/v1/chat/completions", json={"model": "nope", "messages": MSG})
            assert r.status_code == 400 and r.text == "could not find real modelID for nope\n"
            assert "Health check passed" in (await hc.get("/logs")).text
    finally:
        await swap.stop()
