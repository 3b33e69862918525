"""What real clients hit, through the real gateway to the real llama.cpp server (openai SDK as the client):
``models.retrieve``, the caller's model name in answers and stream chunks (never the GGUF path),
catalog aliases, real ``created`` times, exact prompt token counts for streams (prompt-cache hits
included), the usage chunk only when asked, and ``tools`` accepted by the demo's chat servers."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from tests.support.gateway_harness import Harness, make_catalog, running_gateway

pytestmark = pytest.mark.llama

MSG = [{"role": "user", "content": "Say hello to the operator of this small homelab, in one short sentence."}]


@pytest.fixture
async def gw(llama_server) -> AsyncIterator[Harness]:  # type: ignore[no-untyped-def]
    cat = make_catalog(
        backends={"chat": {"base_url": llama_server.url, "max_concurrency": 4}},
        models={"gemma3-270m": {"placements": [{"backend": "chat"}], "max_output_tokens": 256}},
        roles={"default-chat": {"model": "gemma3-270m"}},
    )
    cat = cat.model_copy(update={"aliases": {"gpt-4o-mini": "default-chat", "tiny": "gemma3-270m"}})
    async with running_gateway(cat) as h:
        yield h


async def test_models_retrieve_list_aliases_and_created(gw: Harness) -> None:
    c = gw.client()
    m = await c.models.retrieve("default-chat")
    assert m.id == "default-chat" and m.object == "model"
    assert abs(m.created - time.time()) < 10 * 365 * 86400 and m.created > 1_600_000_000  # a real time, not 0
    a = await c.models.retrieve("gpt-4o-mini")
    assert a.id == "gpt-4o-mini" and a.model_extra["forge"] == {"kind": "alias", "target": "default-chat"}
    ids = {x.id for x in (await c.models.list()).data}
    assert {"default-chat", "gemma3-270m", "gpt-4o-mini", "tiny"} <= ids
    with pytest.raises(openai.NotFoundError) as ei:
        await c.models.retrieve("no-such-model")
    assert ei.value.body["param"] == "model" and ei.value.response.headers["x-forge-request-id"]


async def test_answers_carry_the_callers_name_streams_included(gw: Harness) -> None:
    c = gw.client()
    for name in ("default-chat", "gpt-4o-mini", "tiny", "gemma3-270m"):
        raw = await c.chat.completions.with_raw_response.create(model=name, messages=MSG, max_tokens=8)
        r = raw.parse()
        assert r.model == name, r.model
        assert "gguf" not in raw.http_response.text
        assert "model=gemma3-270m" in raw.headers["x-forge-route"]  # the served model stays visible
        assert raw.headers["x-forge-upstream-model"].endswith(".gguf")  # and what the backend called itself
    r = await c.chat.completions.create(messages=MSG, max_tokens=8, model="auto")
    assert r.model == "default-chat"
    chunks = [ch async for ch in await c.chat.completions.create(model="tiny", messages=MSG, max_tokens=8, stream=True)]
    assert chunks and all(ch.model == "tiny" for ch in chunks)
    # No usage chunk unless the caller asked (forge asks upstream for it, then drops it).
    assert all(ch.choices for ch in chunks) and all(ch.usage is None for ch in chunks)
    asked = [
        ch
        async for ch in await c.chat.completions.create(
            model="tiny", messages=MSG, max_tokens=8, stream=True, stream_options={"include_usage": True}
        )
    ]
    assert asked[-1].usage is not None and asked[-1].usage.prompt_tokens > 0 and asked[-1].model == "tiny"


async def test_stream_prompt_tokens_count_cache_hits(gw: Harness) -> None:
    c = gw.client()
    r = await c.chat.completions.create(model="default-chat", messages=MSG, max_tokens=4)
    want = r.usage.prompt_tokens
    ids = []
    for _ in range(2):  # the second one hits llama.cpp's prompt cache
        raw = await c.chat.completions.with_raw_response.create(
            model="default-chat", messages=MSG, max_tokens=4, stream=True
        )
        async for _ch in raw.parse():
            pass
        ids.append(raw.headers["x-forge-request-id"])
    for rid in ids:
        rec = await gw.record(rid)
        assert rec.tokens_in == want, (rec.tokens_in, want)


async def test_per_model_output_cap_and_tools_reach_the_real_server(gw: Harness, llama_server) -> None:  # type: ignore[no-untyped-def]
    c = gw.client()
    with pytest.raises(openai.BadRequestError) as ei:
        await c.chat.completions.create(model="default-chat", messages=MSG, max_tokens=257)
    assert ei.value.body["param"] == "max_tokens" and "at most 256" in ei.value.body["message"]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    # A 270M model calls the tool only some of the time (llama.cpp constrains the call once the model
    # opens <tool_call>): a few seeds, bounded, and at least one answer must carry a parsed tool call.
    calls = None
    for seed in range(1, 9):
        r = await c.chat.completions.create(
            model="default-chat",
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=tools,
            tool_choice="required",
            max_tokens=64,
            temperature=1.0,
            seed=seed,
        )
        assert r.model == "default-chat"
        calls = r.choices[0].message.tool_calls
        if calls:
            break
    assert calls and calls[0].function.name == "get_weather" and calls[0].id
    # The demo chat server runs the shipped tool-capable template: the tools reach the prompt.
    async with httpx.AsyncClient(base_url=llama_server.url, timeout=60) as h:
        props = (await h.get("/props")).json()
        assert props["chat_template_caps"]["supports_tools"] is True
        prompt = (
            await h.post("/apply-template", json={"messages": [{"role": "user", "content": "hi"}], "tools": tools})
        ).json()["prompt"]
    assert "get_weather" in prompt and "<tool_call>" in prompt
