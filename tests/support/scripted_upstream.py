"""An OpenAI-ish upstream whose answers are chosen per test case (eval harness tests).

Stand-in for what cannot run here: a vision / audio model (no VLM or audio GGUF is installed)
and a backend with a startup window on a schedule. Each request's user text is matched against
``script`` (substring -> Answer): the answer says what to send (content, a malformed body, a
delay, an HTTP error). ``start_loading()`` opens a startup window: /health answers llama.cpp's
503 "Loading model" and /v1/* answers 502 (what llama-swap's proxy says while its process is not
up) until ``finish_loading()``: the "misleading 502s during startup" of the operator's VLM runs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["Answer", "ScriptedUpstream"]


@dataclass
class Answer:
    content: str = "ok"
    malformed: bool = False  # 200 with a body that is not a chat completion
    delay_s: float = 0.0  # wait before answering (a slow model)
    status: int = 200  # an HTTP error instead of an answer
    completion_tokens: int | None = None


class ScriptedUpstream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.script: dict[str, Answer] = {}
        self.default = Answer()
        self.loading = False
        self.finish_after_502s: int | None = None  # leave the startup window after answering this many 502s
        self.on_ready: Callable[[], Awaitable[None]] | None = None  # awaited then, before that 502 leaves
        self.active = 0
        self.max_active = 0
        self.requests: list[dict[str, Any]] = []  # {"path", "headers", "text", "fields"}
        self.answered_during_loading = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start_loading(self) -> None:
        self.loading = True

    def finish_loading(self) -> None:
        self.loading = False

    async def start(self) -> ScriptedUpstream:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(
            [
                web.get("/health", self._health),
                web.post("/v1/chat/completions", self._chat),
                web.post("/v1/audio_qa", self._audio),
                web.post("/v1/audio/transcriptions", self._audio),
            ]
        )
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, request: web.Request) -> web.Response:
        if self.loading:
            return web.json_response({"error": {"code": 503, "message": "Loading model"}}, status=503)
        return web.json_response({"status": "ok"})

    def _pick(self, text: str) -> Answer:
        for key, ans in self.script.items():
            if key in text:
                return ans
        return self.default

    async def _answer(self, request: web.Request, text: str, fields: dict[str, Any], *, chat: bool) -> web.Response:
        self.requests.append({"path": request.path, "headers": dict(request.headers), "text": text, "fields": fields})
        if self.loading:
            self.answered_during_loading += 1
            if self.finish_after_502s is not None and self.answered_during_loading >= self.finish_after_502s:
                self.loading = False  # it came up right after this answer: the race a blind retry would lose
                if self.on_ready is not None:
                    await self.on_ready()
            return web.Response(status=502, text="upstream process is not up yet", content_type="text/plain")
        ans = self._pick(text)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if ans.delay_s:
                await asyncio.sleep(ans.delay_s)
            if ans.status != 200:
                return web.json_response({"error": {"message": f"scripted {ans.status}"}}, status=ans.status)
            if ans.malformed:
                return web.json_response({"object": "chat.completion", "choices": "not a list"})
            n = ans.completion_tokens if ans.completion_tokens is not None else len(ans.content.split())
            usage = {"prompt_tokens": 5, "completion_tokens": n, "total_tokens": 5 + n}
            if not chat:
                return web.json_response({"text": ans.content, "usage": usage})
            return web.json_response(
                {
                    "id": "chatcmpl-scripted",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": fields.get("model"),
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": ans.content}}
                    ],
                    "usage": usage,
                    "timings": {"predicted_n": n, "predicted_per_second": 50.0},
                }
            )
        finally:
            self.active -= 1

    async def _chat(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        texts: list[str] = []
        for m in body.get("messages", []):
            c = m.get("content")
            if isinstance(c, str):
                texts.append(c)
            elif isinstance(c, list):
                texts += [p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text"]
        return await self._answer(request, "\n".join(texts), body, chat=True)

    async def _audio(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {k: (v.filename if isinstance(v, web.FileField) else str(v)) for k, v in form.items()}
        return await self._answer(request, str(form.get("prompt", "")), fields, chat=False)
