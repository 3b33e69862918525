"""Bad input never crashes, confuses or slips past the gateway.

Three parts, all against a real gateway whose backend is the recording upstream (tests/support), so
"nothing forwarded" is asserted on what that upstream really received:

1. a named corpus of malformed, out-of-range and hostile JSON / multipart requests: each answered with
   the expected status and ``param`` in the OpenAI error shape, nothing forwarded, the gateway alive;
2. a corpus of HTTP framing attacks over raw sockets: each answered in the OpenAI shape with a
   request id and the connection closed, HTTP/0.9 refused;
3. hypothesis: valid bodies with one field replaced by arbitrary JSON, judged by the gateway's own
   ``/openapi.json``: never a 5xx, errors always in the OpenAI shape, a body the description calls
   invalid is never forwarded, and a 4xx is never forwarded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_spec_validator import validate as validate_openapi

from forge_tui.smoke import tiny_wav
from tests.support.gateway_harness import Harness, make_catalog, running_gateway
from tests.support.recording_upstream import RecordingUpstream

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


def _catalog(url: str):  # type: ignore[no-untyped-def]
    return make_catalog(
        backends={"a": {"base_url": url}},
        models={
            "m": {"placements": [{"backend": "a"}], "max_output_tokens": 512},
            "e": {"placements": [{"backend": "a"}], "capabilities": ["embed"]},
            "w": {"placements": [{"backend": "a"}], "capabilities": ["audio"]},
        },
        roles={"default-chat": {"model": "m"}, "embed": {"model": "e"}, "transcribe": {"model": "w"}},
    )


def _shape(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in err["message"]
    assert r.headers.get("x-forge-request-id")
    return err


@pytest.fixture
async def up() -> AsyncIterator[RecordingUpstream]:
    u = await RecordingUpstream("a").start()
    yield u
    await u.stop()


@pytest.fixture
async def gw(up: RecordingUpstream) -> AsyncIterator[Harness]:
    async with running_gateway(_catalog(up.url)) as h:
        yield h


def _chat(**kw: Any) -> dict[str, Any]:
    return {"model": "default-chat", "messages": MSG, **kw}


def _img(data: str) -> dict[str, Any]:
    return _chat(
        messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + data}}]}
        ]
    )


def _lying_wav() -> bytes:
    """A WAV whose header declares 60 s of audio while the file holds 0.1 s."""
    w = bytearray(tiny_wav(0.1))
    pos = w.find(b"data")
    struct.pack_into("<I", w, pos + 4, 16000 * 2 * 60)
    return bytes(w)


# (name, path, raw body, expected status, expected param)
CORPUS: list[tuple[str, str, bytes, int, str | None]] = [
    ("nan", CHAT, b'{"model":"default-chat","messages":[{"role":"user","content":"x"}],"temperature":NaN}', 400, None),
    ("infinity", CHAT, b'{"messages":[{"role":"user","content":"x"}],"top_p":Infinity}', 400, None),
    ("neg-infinity", CHAT, b'{"messages":[{"role":"user","content":"x"}],"seed":-Infinity}', 400, None),
    ("1e999", CHAT, b'{"messages":[{"role":"user","content":"x"}],"temperature":1e999}', 400, None),
    ("lone-surrogate", CHAT, b'{"messages":[{"role":"user","content":"\\ud800"}]}', 400, None),
    ("lone-low-surrogate", CHAT, b'{"messages":[{"role":"user","content":"a\\udc00b"}]}', 400, None),
    ("deep-nesting", CHAT, b'{"messages":' + b"[" * 10000 + b"]" * 10000 + b"}", 400, None),
    ("deep-objects", CHAT, b'{"x":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}", 400, None),
    ("not-utf8", CHAT, b'{"messages":[{"role":"user","content":"\xff\xfe"}]}', 400, None),
    ("temperature-3.5", CHAT, json.dumps(_chat(temperature=3.5)).encode(), 400, "temperature"),
    ("temperature-negative", CHAT, json.dumps(_chat(temperature=-0.1)).encode(), 400, "temperature"),
    ("top_p-over-1", CHAT, json.dumps(_chat(top_p=1.5)).encode(), 400, "top_p"),
    ("n-100000", CHAT, json.dumps(_chat(n=100000)).encode(), 400, "n"),
    ("n-0", CHAT, json.dumps(_chat(n=0)).encode(), 400, "n"),
    ("max_tokens-1e12", CHAT, json.dumps(_chat(max_tokens=10**12)).encode(), 400, "max_tokens"),
    ("max_tokens-negative", CHAT, json.dumps(_chat(max_tokens=-5)).encode(), 400, "max_tokens"),
    ("max_tokens-over-model", CHAT, json.dumps(_chat(max_tokens=4096)).encode(), 400, "max_tokens"),
    (
        "max_completion_tokens-over-model",
        CHAT,
        json.dumps(_chat(max_completion_tokens=513)).encode(),
        400,
        "max_completion_tokens",
    ),
    ("presence_penalty-9", CHAT, json.dumps(_chat(presence_penalty=9)).encode(), 400, "presence_penalty"),
    ("top_logprobs-99", CHAT, json.dumps(_chat(logprobs=True, top_logprobs=99)).encode(), 400, "top_logprobs"),
    (
        "role-wizard",
        CHAT,
        json.dumps(_chat(messages=[{"role": "wizard", "content": "x"}])).encode(),
        400,
        "messages[0].role",
    ),
    ("role-missing", CHAT, json.dumps(_chat(messages=[{"content": "x"}])).encode(), 400, "messages[0].role"),
    ("content-missing", CHAT, json.dumps(_chat(messages=[{"role": "user"}])).encode(), 400, "messages[0].content"),
    (
        "content-number",
        CHAT,
        json.dumps(_chat(messages=[{"role": "user", "content": 5}])).encode(),
        400,
        "messages[0].content",
    ),
    (
        "part-unknown",
        CHAT,
        json.dumps(_chat(messages=[{"role": "user", "content": [{"type": "hologram"}]}])).encode(),
        400,
        "messages[0].content[0].type",
    ),
    (
        "part-image-in-system",
        CHAT,
        json.dumps(
            _chat(
                messages=[
                    {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
                ]
            )
        ).encode(),
        400,
        "messages[0].content[0].type",
    ),
    (
        "part-text-missing",
        CHAT,
        json.dumps(_chat(messages=[{"role": "user", "content": [{"type": "text"}]}])).encode(),
        400,
        "messages[0].content[0].text",
    ),
    (
        "image-bad-base64",
        CHAT,
        json.dumps(_img("not base64 at all!!")).encode(),
        400,
        "messages[0].content[0].image_url.url",
    ),
    (
        "image-truncated-base64",
        CHAT,
        json.dumps(_img("iVBORw0KGgo")).encode(),
        400,
        "messages[0].content[0].image_url.url",
    ),
    (
        "image-ftp-url",
        CHAT,
        json.dumps(
            _chat(
                messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]
            )
        ).encode(),
        400,
        "messages[0].content[0].image_url.url",
    ),
    (
        "tool-message-without-id",
        CHAT,
        json.dumps(_chat(messages=[{"role": "tool", "content": "42"}])).encode(),
        400,
        "messages[0].tool_call_id",
    ),
    (
        "tool-bad-name",
        CHAT,
        json.dumps(_chat(tools=[{"type": "function", "function": {"name": "no spaces"}}])).encode(),
        400,
        "tools[0].function.name",
    ),
    ("tool_choice-without-tools", CHAT, json.dumps(_chat(tool_choice="required")).encode(), 400, "tool_choice"),
    (
        "tool_choice-bad",
        CHAT,
        json.dumps(_chat(tools=[{"type": "function", "function": {"name": "f"}}], tool_choice="sometimes")).encode(),
        400,
        "tool_choice",
    ),
    (
        "response_format-bad",
        CHAT,
        json.dumps(_chat(response_format={"type": "yaml"})).encode(),
        400,
        "response_format.type",
    ),
    (
        "stream_options-without-stream",
        CHAT,
        json.dumps(_chat(stream_options={"include_usage": True})).encode(),
        400,
        "stream_options",
    ),
    ("stop-17", CHAT, json.dumps(_chat(stop=["x"] * 17)).encode(), 400, "stop"),
    ("logit_bias-200", CHAT, json.dumps(_chat(logit_bias={"50256": 200})).encode(), 400, "logit_bias.50256"),
    ("reasoning_effort-bad", CHAT, json.dumps(_chat(reasoning_effort="extreme")).encode(), 400, "reasoning_effort"),
    ("unknown-model-10kb", CHAT, json.dumps(_chat(model="x" * 10000)).encode(), 404, "model"),
    ("body-array", CHAT, b"[1,2]", 400, None),
    ("body-empty", CHAT, b"", 400, None),
    ("completions-prompt-mixed", "/v1/completions", json.dumps({"prompt": ["a", 1]}).encode(), 400, "prompt"),
    ("completions-best_of-99", "/v1/completions", json.dumps({"prompt": "a", "best_of": 99}).encode(), 400, "best_of"),
    ("embeddings-100k", "/v1/embeddings", json.dumps({"input": ["a"] * 100_000}).encode(), 400, "input"),
    ("embeddings-2049", "/v1/embeddings", json.dumps({"input": ["a"] * 2049}).encode(), 400, "input"),
    ("embeddings-empty-string", "/v1/embeddings", json.dumps({"input": ["a", ""]}).encode(), 400, "input[1]"),
    (
        "embeddings-format",
        "/v1/embeddings",
        json.dumps({"input": "a", "encoding_format": "hex"}).encode(),
        400,
        "encoding_format",
    ),
    (
        "embeddings-alias-unknown",
        "/v1/embeddings",
        json.dumps({"input": "a", "model": "text-embedding-3-small"}).encode(),
        404,
        "model",
    ),
]


@pytest.mark.parametrize("name,path,raw,status,param", CORPUS, ids=[c[0] for c in CORPUS])
async def test_corpus_is_refused_before_forwarding(
    gw: Harness, up: RecordingUpstream, name: str, path: str, raw: bytes, status: int, param: str | None
) -> None:
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        r = await c.post(path, content=raw, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        err = _shape(r)
        assert err["param"] == param, err
        assert up.requests == [], "an invalid request was forwarded"
        assert (await c.get("/v1/models")).status_code == 200  # still alive


async def test_audio_corpus(gw: Harness, up: RecordingUpstream) -> None:
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        r = await c.post("/v1/audio/transcriptions", files={"file": ("lie.wav", _lying_wav(), "audio/wav")})
        assert r.status_code == 400 and "declares" in _shape(r)["message"]
        r = await c.post("/v1/audio/transcriptions", files={"file": ("long.wav", tiny_wav(31.0), "audio/wav")})
        assert r.status_code == 413 and _shape(r)["code"] == "payload_too_large"
        r = await c.post(
            "/v1/audio/transcriptions",
            data={"response_format": "mp4"},
            files={"file": ("ok.wav", tiny_wav(0.5), "audio/wav")},
        )
        assert r.status_code == 400 and _shape(r)["param"] == "response_format"
        lying = base64.b64encode(_lying_wav()).decode()
        body = _chat(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": lying}}]}])
        r = await c.post(CHAT, json=body)
        assert r.status_code == 400 and _shape(r)["param"] == "input_audio"
        assert up.requests == []
        r = await c.post("/v1/audio/transcriptions", files={"file": ("ok.wav", tiny_wav(0.5), "audio/wav")})
        assert r.status_code == 200 and len(up.requests) == 1  # a good clip still goes through


async def test_valid_edge_values_are_forwarded(gw: Harness, up: RecordingUpstream) -> None:
    """The limits are inclusive and no valid request is refused (the other side of 'nothing invalid')."""
    ok = [
        _chat(temperature=2, top_p=0, n=1, max_tokens=512, presence_penalty=-2, seed=-1),
        _chat(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}, *MSG]),
        _chat(messages=[{"role": "tool", "tool_call_id": "c", "content": "42"}, *MSG]),
        _img(base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()),
        _chat(stream=True, stream_options={"include_usage": True}),
        _chat(
            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            tool_choice="auto",
        ),
        {"messages": MSG},  # no model: auto-routes to default-chat on purpose
    ]
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        for i, body in enumerate(ok):
            r = await c.post(CHAT, json=body)
            assert r.status_code == 200, (i, r.text)
        r = await c.post("/v1/embeddings", json={"input": ["a"] * 2048, "model": "embed"})
        assert r.status_code == 200
    assert len(up.requests) == len(ok) + 1


# ---------------------------------------------------------------------- framing over raw sockets
FRAMING: list[tuple[str, bytes, int]] = [
    (
        "cl-and-te",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "duplicate-cl",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    ),
    ("bare-lf", b"GET /v1/models HTTP/1.1\nHost: x\n\n", 400),
    ("bare-cr", b"GET /v1/models HTTP/1.1\rHost: x\r\n\r\n", 400),
    ("nul-in-header", b"GET /v1/models HTTP/1.1\r\nHost: x\x00y\r\n\r\n", 400),
    ("obs-fold", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
    ("oversized-header", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (
        "too-many-headers",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: a\r\n" % i for i in range(200)) + b"\r\n",
        431,
    ),
    ("bad-cl", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    ("negative-cl", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    ("http09-injection", b"GET /v1/models\r\nX-Injected: yes HTTP/1.1\r\n\r\n", 400),
    ("http09", b"GET /v1/models\r\n\r\n", 400),
    ("space-before-colon", b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n", 400),
    ("tls-on-http", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 400),
    ("long-request-line", b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
    ("h2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
]


def _exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    """Send ``data``; return (everything answered, whether the gateway closed the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                c = s.recv(65536)
            except TimeoutError:
                return out, False
            except ConnectionResetError:
                return out, True
            if not c:
                return out, True
            out += c


@pytest.mark.parametrize("name,raw,status", FRAMING, ids=[c[0] for c in FRAMING])
async def test_framing_is_answered_in_the_openai_shape_and_closed(
    gw: Harness, up: RecordingUpstream, caplog: pytest.LogCaptureFixture, name: str, raw: bytes, status: int
) -> None:
    with caplog.at_level("INFO", logger="forge_tui.gateway"):
        out, closed = await asyncio.to_thread(_exchange, gw.gw.port, raw)
    assert closed, "the connection must be closed after a framing error"
    head, _, body = out.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n")[0]
    assert status_line.split()[1] == str(status).encode(), status_line
    assert not status_line.startswith(b"HTTP/0.9")
    assert b"x-forge-request-id:" in head.lower()
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == "bad_request"
    bad = [r for r in caplog.records if "bad HTTP request" in r.getMessage()]
    assert len(bad) == 1 and bad[0].exc_info is None  # one line, no traceback
    assert up.requests == []
    async with httpx.AsyncClient(base_url=gw.url) as c:
        assert (await c.get("/v1/models")).status_code == 200


async def test_unknown_paths_and_methods_are_openai_errors(gw: Harness) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as c:
        r = await c.get("/v2/whatever")
        assert r.status_code == 404 and _shape(r)["code"] == "not_found"
        r = await c.delete("/v1/models")
        assert r.status_code == 405 and _shape(r)["code"] == "method_not_allowed" and "GET" in r.headers["Allow"]
        r = await c.get(CHAT)
        assert r.status_code == 405 and _shape(r)
        r = await c.get("/v1/models/nope")
        assert r.status_code == 404 and _shape(r)["param"] == "model"


# ---------------------------------------------------------------------- hypothesis against /openapi.json
class _Background:
    """The gateway and recording upstream on their own loop in a thread, so hypothesis can drive it
    with a plain synchronous client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.up: RecordingUpstream = self._run(RecordingUpstream("a").start())
        self._cm = running_gateway(_catalog(self.up.url))
        self.h: Harness = self._run(self._cm.__aenter__())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self._run(self._cm.__aexit__(None, None, None))
        self._run(self.up.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def bg() -> Iterator[_Background]:
    b = _Background()
    yield b
    b.close()


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

_BASES = {
    "ChatCompletionRequest": (CHAT, _chat()),
    "CompletionRequest": ("/v1/completions", {"model": "default-chat", "prompt": "hi"}),
    "EmbeddingRequest": ("/v1/embeddings", {"model": "embed", "input": "hi"}),
}


def test_openapi_json_is_a_valid_description(bg: _Background) -> None:
    r = httpx.get(bg.h.url + "/openapi.json")
    assert r.status_code == 200
    validate_openapi(r.json())


@pytest.mark.parametrize("schema_name", sorted(_BASES))
def test_hypothesis_mutations_never_5xx_and_invalid_is_never_forwarded(bg: _Background, schema_name: str) -> None:
    doc = httpx.get(bg.h.url + "/openapi.json").json()
    schema = doc["components"]["schemas"][schema_name]
    validator = jsonschema.Draft202012Validator(schema)
    path, base = _BASES[schema_name]
    fields = sorted(schema["properties"]) + ["messages"] * (schema_name == "ChatCompletionRequest")
    client = httpx.Client(base_url=bg.h.url, timeout=30)

    @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
    @given(field=st.sampled_from(fields), value=_JSON, drop=st.booleans())
    def check(field: str, value: Any, drop: bool) -> None:
        body = dict(base)
        if drop:
            body.pop(field, None)
        else:
            body[field] = value
        body["stream"] = False  # one answer per request keeps the bookkeeping exact
        before = len(bg.up.requests)
        r = client.post(path, json=body)
        assert r.status_code < 500, (body, r.text)
        forwarded = len(bg.up.requests) - before
        if r.status_code >= 400:
            _shape(r)
            assert forwarded == 0, (body, r.text)
        if not validator.is_valid(body):
            assert r.status_code >= 400 and forwarded == 0, ("forwarded an invalid body", body)

    try:
        check()
    finally:
        client.close()
    assert client.is_closed
