"""Model failures are told apart from the gateway's and the backend's: when the caller asked for
JSON (``response_format`` json_object / json_schema) and the model answered something else or
nothing, the caller still gets the answer (200, as the model gave it) and the request is recorded
and counted as ``model_output``.

The upstream is the recording upstream: a real small model cannot be made to answer non-JSON or
nothing on demand, and the test must choose the exact content."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from forge_tui.telemetry import ErrorClass
from tests.support.gateway_harness import Harness, running_gateway, single_model_catalog
from tests.support.recording_upstream import RecordingUpstream

MSG = [{"role": "user", "content": "give me JSON"}]
FORMATS: dict[str, dict[str, Any]] = {
    "json_object": {"type": "json_object"},
    "json_schema": {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}},
    },
}


@pytest.fixture
async def up() -> AsyncIterator[RecordingUpstream]:
    u = await RecordingUpstream("a").start()
    yield u
    await u.stop()


@pytest.fixture
async def gw(up: RecordingUpstream) -> AsyncIterator[Harness]:
    cat = single_model_catalog(up.url)
    async with running_gateway(cat) as h:
        yield h


async def _chat(gw: Harness, *, stream: bool, response_format: dict[str, Any] | None) -> tuple[str, str]:
    """(content the caller received, request id); asserts the caller got a 200."""
    extra = {"response_format": response_format} if response_format is not None else {}
    client = gw.client()
    if not stream:
        raw = await client.chat.completions.with_raw_response.create(model="default-chat", messages=MSG, **extra)
        assert raw.http_response.status_code == 200
        return raw.parse().choices[0].message.content or "", raw.headers["x-forge-request-id"]
    raw_s = await client.chat.completions.with_raw_response.create(
        model="default-chat", messages=MSG, stream=True, **extra
    )
    assert raw_s.http_response.status_code == 200
    parts = []
    async for chunk in raw_s.parse():
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts), raw_s.headers["x-forge-request-id"]


async def _model_output_count(gw: Harness) -> int:
    async with httpx.AsyncClient(base_url=gw.url) as c:
        text = (await c.get("/metrics")).text
    return sum(
        int(float(n))
        for n in re.findall(r'^forge_requests_total\{[^}]*error_class="model_output"[^}]*\} (\S+)$', text, flags=re.M)
    )


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("content", ["Sure! Here is your answer: a = 1", ""], ids=["non-json", "empty"])
async def test_non_json_or_empty_answer_to_a_json_request_is_model_output(
    gw: Harness, up: RecordingUpstream, stream: bool, fmt: str, content: str
) -> None:
    up.behaviour.content = content
    got, rid = await _chat(gw, stream=stream, response_format=FORMATS[fmt])
    assert got.strip() == content  # the answer is delivered as the model gave it
    assert up.bodies()[-1]["response_format"] == FORMATS[fmt]  # and the format was forwarded
    rec = await gw.record(rid)
    assert rec.status == 200 and rec.stream is stream
    assert rec.error_class is ErrorClass.MODEL_OUTPUT
    assert rec.error is not None and "asked for JSON" in rec.error
    assert await _model_output_count(gw) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_valid_json_or_no_format_asked_is_ok(gw: Harness, up: RecordingUpstream, stream: bool) -> None:
    up.behaviour.content = '{"a": 1}'
    _, rid = await _chat(gw, stream=stream, response_format=FORMATS["json_schema"])
    assert (await gw.record(rid)).error_class is ErrorClass.OK
    up.behaviour.content = "plain prose is fine when no format was asked"
    _, rid = await _chat(gw, stream=stream, response_format=None)
    assert (await gw.record(rid)).error_class is ErrorClass.OK
    up.behaviour.content = "not json"
    _, rid = await _chat(gw, stream=stream, response_format={"type": "text"})
    assert (await gw.record(rid)).error_class is ErrorClass.OK
    assert await _model_output_count(gw) == 0


async def test_model_output_is_counted_per_request(gw: Harness, up: RecordingUpstream) -> None:
    up.behaviour.content = "nope"
    for stream in (False, True, False):
        await _chat(gw, stream=stream, response_format=FORMATS["json_object"])
    up.behaviour.content = '{"a": 2}'
    await _chat(gw, stream=True, response_format=FORMATS["json_object"])
    await gw.wait_records(4)
    assert [r.error_class for r in gw.records] == [ErrorClass.MODEL_OUTPUT] * 3 + [ErrorClass.OK]
    assert await _model_output_count(gw) == 3
