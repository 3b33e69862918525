"""The request path's JSON: orjson's speed without its differences from the standard library.

What a caller sends must reach the backend unchanged (an integer past 64 bits included), and what
orjson refuses is judged by the strict standard parser with the words callers have always seen."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forge_tui.gateway import jsoncodec
from forge_tui.gateway.errors import CallerError
from forge_tui.gateway.validate import parse_json_object
from tests.support.gateway_harness import Harness, make_catalog, running_gateway
from tests.support.recording_upstream import RecordingUpstream

BIG = 2**70 + 1  # no float holds it: orjson alone would hand it on as 1.1805916207174113e21


def test_integers_past_64_bits_stay_exact_both_ways() -> None:
    for n in (BIG, -BIG, 2**63, -(2**63) - 1, 10**30):
        raw = json.dumps({"seed_like": n, "x": [n]}).encode()
        body = parse_json_object(raw)
        assert body == {"seed_like": n, "x": [n]} and type(body["seed_like"]) is int
        assert json.loads(jsoncodec.dumps(body)) == body
        assert jsoncodec.loads(raw) == body
    # digits inside a string also take the exact path, and come out the same
    assert parse_json_object(b'{"a": "1234567890123456789012"}') == {"a": "1234567890123456789012"}


@pytest.mark.parametrize(
    "raw,words",
    [
        (b'{"a": NaN}', "NaN is not valid JSON"),
        (b'{"a": -Infinity}', "-Infinity is not valid JSON"),
        (b'{"a": 1e999}', "out of range"),
        (b'{"a": "\\ud800"}', "unpaired UTF-16 surrogate"),
        (b'{"a": "x\\udc00"}', "unpaired UTF-16 surrogate"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b'{"a": 1,}', "not valid JSON"),
        (b'{"a": "\xff"}', "not valid JSON"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),
    ],
)
def test_what_orjson_refuses_gets_the_strict_parsers_words(raw: bytes, words: str) -> None:
    with pytest.raises(CallerError) as info:
        parse_json_object(raw)
    assert words in info.value.message


def test_large_bodies_parse_like_small_ones() -> None:
    text = "é" * (jsoncodec.FAST_PARSE_MAX // 2 + 10)
    raw = json.dumps({"messages": [{"role": "user", "content": text}], "n": 3}, ensure_ascii=False).encode()
    assert len(raw) > jsoncodec.FAST_PARSE_MAX
    assert jsoncodec.fast_loads(raw) == (False, None)  # the standard parser's turn
    assert parse_json_object(raw) == json.loads(raw)


def test_dumps_matches_the_standard_library() -> None:
    obj = {"é": 'ü\n"q"', "n": [1, -2, 0.5, True, None], "nested": {"k": {}}}
    assert jsoncodec.dumps(obj) == json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    # what orjson will not write goes to the standard library rather than failing
    assert jsoncodec.dumps({1: "a"}) == b'{"1":"a"}'
    assert jsoncodec.dumps({"n": BIG}) == b'{"n":%d}' % BIG
    assert jsoncodec.dumps({"x": math.nan}) == b'{"x":null}'  # JSON has no NaN


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=5))
def test_any_json_object_parses_and_writes_back_as_the_standard_library_would(obj: dict[str, Any]) -> None:
    for raw in (json.dumps(obj).encode(), json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")):
        try:
            want = json.loads(raw)
        except ValueError:
            continue  # a lone surrogate written raw: not UTF-8, refused either way
        try:
            got = parse_json_object(raw)
        except CallerError:
            assert "surrogate" in raw.decode("utf-8", "replace") or b"\\ud" in raw.lower()
            continue
        assert got == want
        assert json.loads(jsoncodec.dumps(got)) == want


# ---------------------------------------------------------------------- through the route
@pytest.fixture
async def up() -> AsyncIterator[RecordingUpstream]:
    u = await RecordingUpstream("a").start()
    yield u
    await u.stop()


@pytest.fixture
async def gw(up: RecordingUpstream) -> AsyncIterator[Harness]:
    cat = make_catalog(
        backends={"a": {"base_url": up.url}},
        models={"m": {"placements": [{"backend": "a"}]}},
        roles={"default-chat": {"model": "m"}},
    )
    async with running_gateway(cat) as h:
        yield h


async def test_a_callers_big_integer_reaches_the_backend_exactly(gw: Harness, up: RecordingUpstream) -> None:
    body = {"model": "default-chat", "messages": [{"role": "user", "content": "hi"}], "llama_extra": BIG}
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        r = await c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        r = await c.post("/v1/chat/completions", json={**body, "llama_extra": 7, "max_tokens": 5})
        assert r.status_code == 200, r.text
    sent = up.bodies("/v1/chat/completions")
    assert sent[0]["llama_extra"] == BIG and type(sent[0]["llama_extra"]) is int
    assert str(BIG).encode() in up.requests[0].raw
    assert sent[1]["llama_extra"] == 7 and sent[1]["max_tokens"] == 5


# ---------------------------------------------------------------------- token counts from answers
def _answer(pad: int, **extra: Any) -> bytes:
    body = {"object": "list", "data": [{"embedding": [0.125] * pad}], "model": "m", **extra}
    return json.dumps(body).encode()


@pytest.mark.parametrize("pad", [4, jsoncodec.FAST_PARSE_MAX // 5])  # parsed whole / searched for keys
def test_token_counts_are_read_alike_from_small_and_large_answers(pad: int) -> None:
    from forge_tui.gateway.api import _usage_from_bytes
    from forge_tui.telemetry.records import RequestRecord

    def counts(data: bytes) -> tuple[Any, Any, Any]:
        r = RequestRecord(time=0.0, request_id="t", endpoint="e")
        _usage_from_bytes(r, data)
        return r.tokens_in, r.tokens_out, r.tokens_per_s

    usage = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    timings = {"prompt_n": 3, "cache_n": 9, "predicted_n": 5, "predicted_per_second": 41.5}
    assert (len(_answer(pad)) > jsoncodec.FAST_PARSE_MAX) == (pad > 4)
    assert counts(_answer(pad, usage=usage)) == (12, 7, None)
    assert counts(_answer(pad, timings=timings)) == (12, 5, 41.5)  # llama.cpp: prompt_n + cache hits
    assert counts(_answer(pad, usage=usage, timings=timings)) == (12, 7, 41.5)
    assert counts(_answer(pad)) == (None, None, None)
    assert counts(_answer(pad, usage={"prompt_tokens": "x"})) == (None, None, None)
    assert counts(_answer(pad)[:-5]) == (None, None, None)  # cut short: nothing guessed
