"""Smoke requests: one small, role-appropriate request per role, sent through the gateway's real port.

Same route agents use (HTTP to the gateway, never an in-process shortcut), checked for shape:
status, no ``<think>`` leak, no chat-template token (``<|im_end|>``, ``<end_of_turn>``, ...), not
empty, not the prompt echoed back, valid JSON when JSON was asked, a non-empty vector for
embeddings, and (given the names each model answers with) the answer from the routed model.
Used by the console (``t``/``T``), by ``forge-tui smoke`` and by the rebuild job's final step.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import re
import struct
import time
import wave
import zlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from .errortext import error_message
from .health import matches

__all__ = ["SmokeResult", "smoke_kind", "smoke_role", "smoke_roles", "tiny_png", "tiny_wav"]

CHAT_PROMPT = "Reply with one short sentence: is the gateway up?"
# One example exchange first: it shows a small model what an answer looks like (a base model given
# the bare question tends to repeat it). The checks stay as strict: only the answer is judged.
CHAT_EXAMPLE = (
    {"role": "user", "content": "Reply with one short sentence: is the sky blue?"},
    {"role": "assistant", "content": "Yes, the sky is blue."},
)
JSON_PROMPT = 'Extract the city as JSON {"city": ...}: "I flew to Lisbon."'
VISION_PROMPT = "Name the two colours in this image."
AUDIO_PROMPT = "What do you hear? Answer in five words."

# Chat-template control tokens that must never reach an answer's text (ChatML / Qwen, Gemma,
# Llama 3, Mistral, Phi, gpt-oss harmony, plain EOS/BOS). A leak means the server rendered or
# stopped on the wrong template: agents would get these in their answers.
TEMPLATE_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|im_sep|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|endoftext|>",
    "<|end|>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "<|channel|>",
    "<|message|>",
    "<|return|>",
    "[INST]",
    "[/INST]",
    "<eos>",
    "<bos>",
    "</s>",
)
# A token cut by max_tokens still shows its opening: "<|im_", "<end_of_tu".
_TOKEN_START = re.compile(r"<\|(?:im_|eot|eom|start_header|end_header|begin_of|endoftext)\w*|<(?:start|end)_of_t\w*")

JSON_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 24}},
    "required": ["city"],
}


@dataclass(frozen=True, slots=True)
class SmokeResult:
    role: str
    kind: str  # chat, json, embed, vision, audio, transcribe
    ok: bool
    status: int
    latency_ms: float
    route: str  # the x-forge-route header: which model/host/backend answered
    snippet: str
    reason: str  # why it failed ("" when ok)

    def line(self) -> str:
        mark = "PASS" if self.ok else "FAIL"
        why = f"  {self.reason}" if self.reason else ""
        return f"{mark} {self.role:<15} {self.kind:<10} {self.status:>3} {self.latency_ms:8.0f} ms  {self.route}{why}"


def smoke_kind(role: str, requires: Iterable[str]) -> str:
    req = set(requires)
    if "embed" in req:
        return "embed"
    if "audio" in req:
        return "transcribe" if role == "transcribe" else "audio"
    if "vision" in req:
        return "vision"
    if role in ("default-chat", "priority-chat"):
        return "chat"
    return "json"


def tiny_png(width: int = 32, height: int = 32) -> bytes:
    """A small valid PNG (a two-colour split), built with zlib so no imaging library is needed."""
    rows = b"".join(
        b"\x00" + b"".join(b"\xd0\x40\x20" if x < width // 2 else b"\x20\x60\xd0" for x in range(width))
        for _ in range(height)
    )

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def tiny_wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A short mono 16-bit WAV (a 440 Hz tone)."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        n = int(seconds * rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(n)))
    return buf.getvalue()


def _snip(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _error_message(resp: httpx.Response) -> str:
    return _snip(error_message(resp.text) if resp.text else resp.reason_phrase, 200)


async def _request(client: httpx.AsyncClient, role: str, kind: str) -> tuple[httpx.Response, str | None]:
    """Send the request for ``kind``; return the response and the content to check (or None)."""
    if kind == "embed":
        return await client.post("/v1/embeddings", json={"model": role, "input": "forge smoke test"}), None
    if kind in ("audio", "transcribe"):
        files = {"file": ("smoke.wav", tiny_wav(), "audio/wav")}
        if kind == "transcribe":
            return await client.post("/v1/audio/transcriptions", data={"model": role}, files=files), None
        data = {"model": role, "prompt": AUDIO_PROMPT}
        return await client.post("/v1/audio_qa", data=data, files=files), None
    if kind == "vision":
        url = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()
        content: Any = [
            {"type": "text", "text": VISION_PROMPT},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        body: dict[str, Any] = {"model": role, "messages": [{"role": "user", "content": content}], "max_tokens": 24}
    elif kind == "json":
        body = {
            "model": role,
            "messages": [{"role": "user", "content": JSON_PROMPT}],
            "max_tokens": 48,
            "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": JSON_SCHEMA}},
        }
    else:
        body = {
            "model": role,
            "messages": [*CHAT_EXAMPLE, {"role": "user", "content": CHAT_PROMPT}],
            "max_tokens": 16,
            "temperature": 0,
            # The question asks for one line: stopping at its end keeps what a small model writes after
            # it (the demo model runs on into a new turn) out of the answer; runs_on still catches a
            # run-on on one line.
            "stop": ["\n"],
        }
    return await client.post("/v1/chat/completions", json=body), "chat"


def leaked_tokens(text: str) -> list[str]:
    """The chat-template control tokens in ``text`` (a cut one by its opening, e.g. ``<|im_``)."""
    found = [t for t in TEMPLATE_TOKENS if t in text]
    if not found and (m := _TOKEN_START.search(text)):
        found.append(m.group(0) + "…")
    return found


def _words(text: str) -> list[str]:
    for t in TEMPLATE_TOKENS:
        text = text.replace(t, " ")
    return re.findall(r"[a-z0-9]+", _TOKEN_START.sub(" ", text.lower()))


def is_echo(prompt: str, answer: str) -> bool:
    """The answer repeats the prompt: all of it, or a run of at least four of its words and nothing else."""
    p, a = _words(prompt), _words(answer)
    if not a or not p:
        return False
    ps, as_ = " ".join(p), " ".join(a)
    if ps in as_:
        return True
    return len(a) >= 4 and f" {as_} " in f" {ps} "


def runs_on(prompt: str, answer: str, run: int = 4) -> bool:
    """After answering, the text goes on with the prompt again (a run of ``run`` of its words in order):
    the model wrote past its turn's end into a new turn, the sign of a wrong or missing stop token."""
    p, a = _words(prompt), _words(answer)
    grams = {tuple(p[i : i + run]) for i in range(len(p) - run + 1)}
    return any(tuple(a[i : i + run]) in grams for i in range(1, len(a) - run + 1))


def route_model(header: str | None) -> str | None:
    """The model named in ``x-forge-route`` (``role=...; model=ID; host=...; backend=...``)."""
    m = re.search(r"(?:^|[;,\s])model=([^;,\s]+)", header or "")
    return m.group(1) if m else None


# The backend's own answer model, when the gateway renames the answer's ``model`` to the caller's.
UPSTREAM_MODEL_HEADER = "x-forge-upstream-model"


def wrong_model(
    body: Any,
    routed: str | None,
    known_as: Mapping[str, Collection[str]] | None,
    *,
    asked: str | None = None,
    upstream_model: str | None = None,
) -> str | None:
    """Why the answer came from another model than the routed one (None: it did not, or cannot tell).

    A bare llama-server ignores the request's ``model`` and answers with the file it holds; the names
    each catalog model may answer with come from ``health.answers_as``. The gateway puts the caller's
    name in the answer's ``model``: then only ``x-forge-upstream-model`` (when sent) can tell."""
    answered = upstream_model or (body.get("model") if isinstance(body, dict) else None)
    if not isinstance(answered, str) or not answered or routed is None or not known_as or routed not in known_as:
        return None
    if upstream_model is None and answered == asked:
        return None  # renamed to what was asked: says nothing about who answered
    if matches([answered], known_as[routed]):
        return None
    # Only a name that is recognizably another model counts: a file under another path (a symlinked
    # model dir on the host) is not proof of anything.
    others = sorted(mid for mid, names in known_as.items() if mid != routed and matches([answered], names))
    if not others:
        return None
    return f"answered by model {answered!r} ({', '.join(others)}), but the gateway routed to {routed!r}"


def _check(
    kind: str,
    resp: httpx.Response,
    *,
    prompt: str | None = None,
    known_as: Mapping[str, Collection[str]] | None = None,
    asked: str | None = None,
) -> tuple[bool, str, str]:
    """Return (ok, snippet, reason)."""
    if resp.status_code != 200:
        return False, "", f"HTTP {resp.status_code}: {_error_message(resp)}"
    try:
        body = resp.json()
    except ValueError:
        return False, _snip(resp.text), "response is not JSON"
    if kind not in ("audio", "transcribe"):
        other = wrong_model(
            body,
            route_model(resp.headers.get("x-forge-route")),
            known_as,
            asked=asked,
            upstream_model=resp.headers.get(UPSTREAM_MODEL_HEADER),
        )
        if other:
            return False, "", other
    if kind == "embed":
        try:
            vec = body["data"][0]["embedding"]
        except (KeyError, IndexError, TypeError):
            return False, _snip(json.dumps(body)), "no data[0].embedding in the response"
        if not isinstance(vec, list) or not vec:
            return False, "", "empty embedding vector"
        if not all(isinstance(v, (int, float)) for v in vec[:16]):
            return False, "", "embedding holds non-numbers"
        return True, f"{len(vec)}-dim vector", ""
    if kind in ("audio", "transcribe"):
        text = body.get("text") if isinstance(body, dict) else None
        if text is None and isinstance(body, dict):
            try:
                text = body["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                text = None
        if not isinstance(text, str):
            return False, _snip(json.dumps(body)), "no text in the response"
        return _text_shape(text, prompt if kind == "audio" else None)
    try:
        msg = body["choices"][0]["message"]
        content = msg.get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return False, _snip(json.dumps(body)), "no choices[0].message in the response"
    if "<think>" in content or "</think>" in content:
        return False, _snip(content), "reasoning block leaked into content"
    if kind == "json":
        if leaked := leaked_tokens(content):
            return False, _snip(content), f"chat-template token(s) leaked into the answer: {', '.join(leaked)}"
        try:
            parsed = json.loads(content)
        except ValueError:
            return False, _snip(content), "asked for JSON, got something else"
        if not isinstance(parsed, dict):
            return False, _snip(content), "asked for a JSON object"
        return True, _snip(content), ""
    return _text_shape(content, prompt)


def _text_shape(text: str, prompt: str | None) -> tuple[bool, str, str]:
    if leaked := leaked_tokens(text):
        return False, _snip(text), f"chat-template token(s) leaked into the answer: {', '.join(leaked)}"
    if not text.strip():
        return False, "", "empty answer"
    if prompt is not None and is_echo(prompt, text):
        return False, _snip(text), "the answer repeats the prompt"
    if prompt is not None and runs_on(prompt, text):
        return False, _snip(text), "the answer runs on into a new turn (it repeats the prompt after answering)"
    return True, _snip(text), ""


_PROMPTS = {"chat": CHAT_PROMPT, "json": JSON_PROMPT, "vision": VISION_PROMPT, "audio": AUDIO_PROMPT}


async def smoke_role(
    base_url: str,
    role: str,
    requires: Iterable[str],
    *,
    api_key: str | None = None,
    timeout: float = 120.0,
    client: httpx.AsyncClient | None = None,
    known_as: Mapping[str, Collection[str]] | None = None,
) -> SmokeResult:
    """``known_as``: model id -> the names its backends answer with (``health.answers_as(catalog)``,
    or the snapshot's ``ModelInfo.answers_as``); with it, an answer from another model fails."""
    kind = smoke_kind(role, requires)
    headers = {"x-forge-source": "smoke", **({"authorization": f"Bearer {api_key}"} if api_key else {})}
    own = client is None
    client = client or httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers)
    t0 = time.perf_counter()
    try:
        resp, _ = await _request(client, role, kind)
    except httpx.TimeoutException:
        return SmokeResult(
            role, kind, False, 0, (time.perf_counter() - t0) * 1000, "", "", f"timed out after {timeout:.0f}s"
        )
    except httpx.HTTPError as exc:
        return SmokeResult(
            role,
            kind,
            False,
            0,
            (time.perf_counter() - t0) * 1000,
            "",
            "",
            f"gateway unreachable: {exc.__class__.__name__}: {exc}",
        )
    finally:
        if own:
            await client.aclose()
    latency = (time.perf_counter() - t0) * 1000
    ok, snippet, reason = _check(kind, resp, prompt=_PROMPTS.get(kind), known_as=known_as, asked=role)
    return SmokeResult(
        role, kind, ok, resp.status_code, latency, resp.headers.get("x-forge-route", ""), snippet, reason
    )


async def smoke_roles(
    base_url: str,
    roles: Iterable[Any],
    *,
    api_key: str | None = None,
    timeout: float = 120.0,
    concurrency: int = 2,
    known_as: Mapping[str, Collection[str]] | None = None,
) -> list[SmokeResult]:
    """Smoke several roles (objects with ``name`` and ``requires``), a few at a time, in order."""
    sem = asyncio.Semaphore(max(1, concurrency))
    headers = {"x-forge-source": "smoke", **({"authorization": f"Bearer {api_key}"} if api_key else {})}
    async with httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout, headers=headers) as client:

        async def one(r: Any) -> SmokeResult:
            async with sem:
                return await smoke_role(
                    base_url,
                    r.name,
                    [str(getattr(c, "value", c)) for c in r.requires],
                    timeout=timeout,
                    client=client,
                    known_as=known_as,
                )

        return list(await asyncio.gather(*(one(r) for r in roles)))
