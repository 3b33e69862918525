"""Smoke checks: the request fits the role, the check catches a bad shape."""

from __future__ import annotations

import io
import json
import struct
import wave
import zlib

import httpx
import pytest

from forge_tui.smoke import _check, smoke_kind, smoke_role, tiny_png, tiny_wav


def test_kind_per_role() -> None:
    assert smoke_kind("default-chat", ["chat"]) == "chat"
    assert smoke_kind("prompt-enhance", ["chat"]) == "json"
    assert smoke_kind("vision", ["chat", "vision"]) == "vision"
    assert smoke_kind("embed", ["embed"]) == "embed"
    assert smoke_kind("audio-qa", ["audio"]) == "audio"
    assert smoke_kind("transcribe", ["audio"]) == "transcribe"


def test_tiny_png_is_a_valid_png() -> None:
    data = tiny_png(8, 4)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF
        chunks[tag] = body
        pos += 12 + n
    w, h = struct.unpack(">II", chunks[b"IHDR"][:8])
    assert (w, h) == (8, 4)
    assert len(zlib.decompress(chunks[b"IDAT"])) == h * (1 + 3 * w)


def test_tiny_wav_duration() -> None:
    with wave.open(io.BytesIO(tiny_wav(1.5)), "rb") as w:
        assert w.getnframes() / w.getframerate() == pytest.approx(1.5)


def _resp(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def test_check_catches_bad_shapes() -> None:
    ok, _, _ = _check("chat", _resp(200, {"choices": [{"message": {"content": "yes"}}]}))
    assert ok
    ok, _, why = _check("chat", _resp(200, {"choices": [{"message": {"content": "<think>hm</think>yes"}}]}))
    assert not ok and "leaked" in why
    ok, _, why = _check("json", _resp(200, {"choices": [{"message": {"content": "Lisbon"}}]}))
    assert not ok and "JSON" in why
    ok, _, why = _check("embed", _resp(200, {"data": [{"embedding": []}]}))
    assert not ok and "empty" in why
    ok, _, why = _check("chat", _resp(502, {"error": {"message": "unknown model architecture: 'gemma4'"}}))
    assert not ok and "unknown model architecture: 'gemma4'" in why and "502" in why


async def test_smoke_against_real_llama_server(llama_server) -> None:
    """Straight at a real llama-server (the gateway tests smoke through the gateway)."""
    r = await smoke_role(llama_server.url, "default-chat", ["chat"], timeout=120)
    assert r.ok, r.reason
    j = await smoke_role(llama_server.url, "prompt-enhance", ["chat"], timeout=120)
    assert j.ok, j.reason
    assert isinstance(json.loads(j.snippet.rstrip("…")) if not j.snippet.endswith("…") else {}, dict)


async def test_smoke_reports_unreachable_gateway() -> None:
    r = await smoke_role("http://127.0.0.1:9", "default-chat", ["chat"], timeout=5)
    assert not r.ok and "unreachable" in r.reason
