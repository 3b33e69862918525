"""Thinking policy: what the gateway forwards (injection and caller opt-in), and the ``<think>``
safety net on whole responses and on streams whose tags split across chunk boundaries.

A recording upstream stands in for a thinking model (Qwen3 / Gemma 4 do not run here): the tests
must see the forwarded body and need a model that leaks a reasoning block on demand. That the real
llama.cpp server accepts the injected field is checked in test_gateway_real.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from forge_tui.gateway.thinking import ThinkStripper, strip_message
from forge_tui.telemetry import ErrorClass
from tests.support.gateway_harness import Harness, make_catalog, running_gateway
from tests.support.recording_upstream import RecordingUpstream

MSG = [{"role": "user", "content": "what is 2+2?"}]
LEAK = "<think>\nThe user asks a basic arithmetic question.\n</think>\n\n2 + 2 = 4"


@pytest.fixture
async def up() -> AsyncIterator[RecordingUpstream]:
    u = await RecordingUpstream("thinker").start()
    yield u
    await u.stop()


@pytest.fixture
async def gw(up: RecordingUpstream) -> AsyncIterator[Harness]:
    cat = make_catalog(
        backends={"a": {"base_url": up.url}},
        models={
            "gemma-4-31b": {"family": "thinker", "placements": [{"backend": "a"}]},
            "gemma-3": {"family": "plain", "placements": [{"backend": "a"}]},
            "qwen-on": {"family": "always", "placements": [{"backend": "a"}]},
        },
        families={
            "thinker": {"thinking": "off-by-default"},
            "plain": {"thinking": "none"},
            "always": {"thinking": "on"},
        },
        roles={"default-chat": {"model": "gemma-4-31b"}, "small": {"model": "gemma-3"}},
    )
    async with running_gateway(cat) as h:
        yield h


async def test_policy_injects_enable_thinking_false(gw: Harness, up: RecordingUpstream) -> None:
    raw = await gw.client().chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
    assert up.bodies()[-1]["chat_template_kwargs"] == {"enable_thinking": False}
    rec = await gw.record(raw.headers["x-forge-request-id"])
    assert rec.thinking_injected is True and rec.thinking_leaked is False


async def test_caller_opt_in_by_body_is_respected(gw: Harness, up: RecordingUpstream) -> None:
    raw = await gw.client().chat.completions.with_raw_response.create(
        model="default-chat", messages=MSG, extra_body={"chat_template_kwargs": {"enable_thinking": True, "custom": 1}}
    )
    assert up.bodies()[-1]["chat_template_kwargs"] == {"enable_thinking": True, "custom": 1}
    assert (await gw.record(raw.headers["x-forge-request-id"])).thinking_injected is False


async def test_caller_opt_in_by_header_injects_true(gw: Harness, up: RecordingUpstream) -> None:
    await gw.client().chat.completions.create(
        model="default-chat", messages=MSG, extra_headers={"x-forge-thinking": "on"}
    )
    assert up.bodies()[-1]["chat_template_kwargs"] == {"enable_thinking": True}
    # Other keys the caller set survive the injection.
    await gw.client().chat.completions.create(
        model="default-chat", messages=MSG, extra_body={"chat_template_kwargs": {"custom": "x"}}
    )
    assert up.bodies()[-1]["chat_template_kwargs"] == {"custom": "x", "enable_thinking": False}


async def test_families_without_the_policy_are_left_alone(gw: Harness, up: RecordingUpstream) -> None:
    await gw.client().chat.completions.create(model="small", messages=MSG)
    assert "chat_template_kwargs" not in up.bodies()[-1]
    await gw.client().chat.completions.create(model="qwen-on", messages=MSG)
    assert "chat_template_kwargs" not in up.bodies()[-1]
    # An explicit "off" header still reaches a family that thinks by default.
    await gw.client().chat.completions.create(model="qwen-on", messages=MSG, extra_headers={"x-forge-thinking": "off"})
    assert up.bodies()[-1]["chat_template_kwargs"] == {"enable_thinking": False}


async def test_bad_chat_template_kwargs_is_a_caller_error(gw: Harness, up: RecordingUpstream) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as c:
        r = await c.post(
            "/v1/chat/completions",
            json={"model": "default-chat", "messages": MSG, "chat_template_kwargs": {"enable_thinking": "no"}},
        )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "chat_template_kwargs.enable_thinking"
    assert up.requests == []


async def test_leaked_think_block_is_moved_out_of_content(gw: Harness, up: RecordingUpstream) -> None:
    up.behaviour.content = LEAK
    raw = await gw.client().chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
    msg = raw.parse().choices[0].message
    assert msg.content == "2 + 2 = 4"
    assert msg.model_dump()["reasoning_content"] == "The user asks a basic arithmetic question."
    rec = await gw.record(raw.headers["x-forge-request-id"])
    assert rec.thinking_leaked is True and rec.error_class is ErrorClass.MODEL_OUTPUT and rec.status == 200
    assert gw.telemetry.info().thinking_leaks == 1


async def test_caller_who_opted_in_gets_the_block_untouched(gw: Harness, up: RecordingUpstream) -> None:
    up.behaviour.content = LEAK
    r = await gw.client().chat.completions.create(
        model="default-chat", messages=MSG, extra_headers={"x-forge-thinking": "on"}
    )
    assert r.choices[0].message.content == LEAK


async def test_stream_strip_with_tags_split_across_chunks(gw: Harness, up: RecordingUpstream) -> None:
    up.behaviour.chunks = ["\n<th", "ink>The user", " asks.</th", "ink", ">\n\n2 + 2", " = 4"]
    stream = await gw.client().chat.completions.create(model="default-chat", messages=MSG, stream=True)
    content, reasoning = [], []
    async for ch in stream:
        for c in ch.choices:
            d = c.delta.model_dump()
            content.append(d.get("content") or "")
            reasoning.append(d.get("reasoning_content") or "")
    assert "".join(content) == "2 + 2 = 4"
    assert "".join(reasoning) == "The user asks."
    rec = (await gw.wait_records(1))[-1]
    assert rec.stream is True and rec.thinking_leaked is True and rec.ttft_ms is not None


async def test_stream_without_leak_is_forwarded_verbatim(gw: Harness, up: RecordingUpstream) -> None:
    up.behaviour.chunks = ["<b>", "not thinking", "</b>"]
    async with (
        httpx.AsyncClient(base_url=gw.url) as c,
        c.stream("POST", "/v1/chat/completions", json={"model": "default-chat", "messages": MSG, "stream": True}) as r,
    ):
        text = (await r.aread()).decode()
    assert text.count("data: ") == 6 and text.rstrip().endswith("data: [DONE]")
    assert '"content":"<b>"' in text.replace(" ", "")
    assert "reasoning_content" not in text


async def test_unterminated_think_at_end_of_stream_stays_reasoning(gw: Harness, up: RecordingUpstream) -> None:
    up.behaviour.chunks = ["<think>", "still going"]
    stream = await gw.client().chat.completions.create(model="default-chat", messages=MSG, stream=True)
    content, reasoning = "", ""
    async for ch in stream:
        for c in ch.choices:
            d = c.delta.model_dump()
            content += d.get("content") or ""
            reasoning += d.get("reasoning_content") or ""
    assert content == "" and reasoning == "still going"


# ---------------------------------------------------------------------- the state machine itself
@pytest.mark.parametrize(
    "text,content,reasoning",
    [
        (LEAK, "2 + 2 = 4", "\nThe user asks a basic arithmetic question.\n"),
        ("  <think>a</think>b", "b", "a"),
        ("no think here", "no think here", ""),
        ("<thinking>x", "<thinking>x", ""),
        ("<th", "<th", ""),
        ("answer <think>mid</think>", "answer <think>mid</think>", ""),
        ("<think>open only", "", "open only"),
    ],
)
def test_stripper_every_split_point(text: str, content: str, reasoning: str) -> None:
    for cuts in ([i] for i in range(len(text) + 1)):
        for j in range(cuts[0], len(text) + 1):
            pieces = [text[: cuts[0]], text[cuts[0] : j], text[j:]]
            st = ThinkStripper()
            c = r = ""
            for p in pieces:
                dc, dr = st.feed(p)
                c, r = c + dc, r + dr
            fc, fr = st.finish()
            assert (c + fc, r + fr) == (content, reasoning), pieces


def test_stripper_one_char_at_a_time() -> None:
    st = ThinkStripper()
    c = r = ""
    for ch in LEAK:
        dc, dr = st.feed(ch)
        c, r = c + dc, r + dr
    fc, fr = st.finish()
    assert c + fc == "2 + 2 = 4" and (r + fr).strip() == "The user asks a basic arithmetic question."
    assert st.leaked


def test_strip_message_appends_to_existing_reasoning() -> None:
    m = {"content": "<think>b</think>c", "reasoning_content": "a"}
    assert strip_message(m) is True
    assert m == {"content": "c", "reasoning_content": "a\nb"}
    assert strip_message({"content": "plain"}) is False
