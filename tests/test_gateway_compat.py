"""aiohttp version guards: the one private aiohttp attribute the gateway touches
(``StreamResponse._send_headers_immediately``, aiohttp >= 3.12) is set only where it exists,
and a relayed stream is correct either way (with the flag, and with the plain public
``StreamResponse`` an aiohttp without it gives).

The upstream is the recording upstream: the test must choose the exact chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from forge_tui.gateway import api
from tests.support.gateway_harness import Harness, running_gateway, single_model_catalog
from tests.support.recording_upstream import RecordingUpstream

MSG = [{"role": "user", "content": "hi"}]


def test_the_flag_is_set_only_where_aiohttp_has_it() -> None:
    class OldStreamResponse:  # what an aiohttp before 3.12 offers: no such attribute
        pass

    assert api._sse_response_class(OldStreamResponse) is OldStreamResponse  # type: ignore[arg-type]

    class RenamedFlag:  # a future aiohttp that changed its meaning or type: leave it alone
        _send_headers_immediately = "sometimes"

    assert api._sse_response_class(RenamedFlag) is RenamedFlag  # type: ignore[arg-type]

    if getattr(web.StreamResponse, "_send_headers_immediately", None) is True:
        cls = api._sse_response_class()
        assert issubclass(cls, web.StreamResponse) and cls is not web.StreamResponse
        assert cls._send_headers_immediately is False
        assert web.StreamResponse._send_headers_immediately is True  # aiohttp's own class is untouched
    else:
        assert api._sse_response_class() is web.StreamResponse


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


@pytest.mark.parametrize("public_api", [False, True], ids=["headers-with-first-chunk", "public-streamresponse"])
async def test_stream_is_relayed_whichever_response_class(
    gw: Harness, up: RecordingUpstream, monkeypatch: pytest.MonkeyPatch, public_api: bool
) -> None:
    if public_api:
        monkeypatch.setattr(api, "_SseResponse", web.StreamResponse)
    up.behaviour.chunks = ["one ", "two ", "three"]
    raw = await gw.client().chat.completions.with_raw_response.create(model="default-chat", messages=MSG, stream=True)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-forge-route"].startswith("role=default-chat; model=m;")
    pieces = [c.choices[0].delta.content async for c in raw.parse() if c.choices and c.choices[0].delta.content]
    assert pieces == ["one ", "two ", "three"]
    rec = await gw.record(raw.headers["x-forge-request-id"])
    assert rec.status == 200 and rec.stream and rec.tokens_out == 3
