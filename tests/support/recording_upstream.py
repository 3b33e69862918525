"""A small OpenAI-ish upstream that records what the gateway forwards and plays faults on demand.

A stand-in, not a backend: used only where a test must see the exact forwarded body, or needs a
fault a real llama.cpp server will not produce on demand (a slow start on a schedule, a stream that
dies after N chunks, a ``<think>`` block split across chunk boundaries, a scripted error body, a held
request, a freeze after accepting connections with /health frozen too, a connection closed right
after the request was read, a multi-MiB answer, a chunked terminator that trails ``[DONE]``). Its
answers follow llama.cpp's shapes (``usage`` + ``timings``, ``data: [DONE]``). Everything else in
the tests runs against the real llama.cpp server (a real frozen server is a SIGSTOPped one).

``python -m tests.support.recording_upstream --host ADDR --port N`` runs one in its own process
(e.g. inside a network namespace, for link-down tests).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

__all__ = ["Behaviour", "Recorded", "RecordingUpstream"]


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or {field: value/bytes} for multipart
    raw: bytes


@dataclass
class Behaviour:
    content: str = "hello from the recording upstream"
    chunks: list[str] | None = None  # stream deltas (default: content split in words)
    loading_until: float = 0.0  # monotonic time before which /health and /v1/* answer 503 Loading model
    die_after_chunks: int | None = None  # stream: drop the connection after this many chunks
    error: tuple[int, str, str] | None = None  # (status, body, content type) answered to /v1/*
    hold: asyncio.Event | None = None  # /v1/* requests wait for this before answering
    chunk_delay_s: float = 0.0
    embedding_dim: int = 8
    frozen: bool = False  # accept, read, never answer (/health included): a wedged backend
    close_after_read: bool = False  # /v1/*: read the request, then drop the connection unanswered
    eof_delay_s: float = 0.0  # stream: wait this long after [DONE] before the chunked terminator
    freeze_after_head: bool = False  # stream: send the head, then freeze (sets ``frozen``: /health hangs too)


class RecordingUpstream:
    def __init__(self, name: str = "rec", *, port: int = 0, host: str = "127.0.0.1") -> None:
        self.name = name
        self.port = port
        self.host = host
        self.peers: set[tuple[str, int]] = set()  # client addresses seen on /v1/*: one per connection used
        self.behaviour = Behaviour()
        self.requests: list[Recorded] = []
        self.health_checks = 0
        self.active = 0  # requests being answered right now
        self.max_active = 0
        self.stream_disconnects = 0  # streams whose reader went away before the end
        self.cancelled = 0  # requests dropped by the gateway before they were answered
        self.disconnected = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def bodies(self, path: str | None = None) -> list[Any]:
        return [r.body for r in self.requests if path is None or r.path == path]

    async def start(self) -> RecordingUpstream:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.add_routes(
            [
                web.get("/health", self._health),
                web.get("/v1/models", self._models),
                web.post("/v1/chat/completions", self._chat),
                web.post("/v1/completions", self._completions),
                web.post("/v1/embeddings", self._embeddings),
                web.post("/v1/audio/transcriptions", self._audio),
                web.post("/v1/audio_qa", self._audio),
            ]
        )
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------ helpers
    def _loading(self) -> web.Response | None:
        if time.monotonic() < self.behaviour.loading_until:
            return web.json_response(
                {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}, status=503
            )
        return None

    @property
    def connections(self) -> int:
        """Connections that carried a /v1/* request (keep-alive reuse shows as fewer)."""
        return len(self.peers)

    async def _frozen(self) -> None:
        """Never answers (the connection stays open until the client or the test ends it)."""
        await asyncio.Event().wait()

    async def _record(self, request: web.Request) -> Recorded:
        if request.transport is not None:
            peer = request.transport.get_extra_info("peername")
            if peer:
                self.peers.add((peer[0], peer[1]))
        body: Any
        raw = b""
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            body = {k: (v.file.read() if isinstance(v, web.FileField) else v) for k, v in form.items()}
            body["_filenames"] = {k: v.filename for k, v in form.items() if isinstance(v, web.FileField)}
        else:
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        rec = Recorded(request.path, dict(request.headers), body, raw)
        self.requests.append(rec)
        if self.behaviour.close_after_read and request.transport is not None:
            request.transport.abort()  # read it, never answer: what a backend dying at that moment looks like
            await self._frozen()
        if self.behaviour.frozen:
            await self._frozen()
        return rec

    async def _gate(self) -> web.Response | None:
        b = self.behaviour
        if b.hold is not None:
            await b.hold.wait()
        if b.error is not None:
            status, text, ctype = b.error
            return web.Response(status=status, text=text, content_type=ctype)
        return None

    def _usage(self, n_out: int) -> dict[str, Any]:
        return {
            "usage": {"prompt_tokens": 7, "completion_tokens": n_out, "total_tokens": 7 + n_out},
            "timings": {"prompt_n": 7, "predicted_n": n_out, "predicted_per_second": 123.0},
        }

    # ------------------------------------------------------------------ endpoints
    async def _health(self, request: web.Request) -> web.Response:
        self.health_checks += 1
        if self.behaviour.frozen:
            await self._frozen()
        loading = self._loading()  # not `or`: a response is an empty mapping (falsy) in aiohttp < 3.12
        return loading if loading is not None else web.json_response({"status": "ok"})

    async def _admit(self, request: web.Request) -> tuple[Any, web.Response | None]:
        """Loading check, record, gate: the preamble of every non-streaming endpoint.

        Returns (record, None) to go on, or (record-or-None, response) to answer at once.
        """
        loading = self._loading()
        if loading is not None:
            return None, loading
        rec = await self._record(request)
        gate = await self._gate()
        return rec, gate

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.name, "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        loading = self._loading()
        if loading is not None:
            return loading
        rec = await self._record(request)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            gate = await self._gate()
            if gate is not None:
                return gate
            body = rec.body if isinstance(rec.body, dict) else {}
            if body.get("stream"):
                return await self._stream(request, body)
            b = self.behaviour
            return web.json_response(
                {
                    "id": "chatcmpl-rec",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model"),
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": b.content}}
                    ],
                    **self._usage(len(b.content.split())),
                }
            )
        except asyncio.CancelledError:
            self.cancelled += 1  # the gateway dropped the connection: the caller went away
            self.disconnected.set()
            raise
        finally:
            self.active -= 1

    async def _stream(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        b = self.behaviour
        chunks = b.chunks if b.chunks is not None else [w + " " for w in b.content.split()]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        if b.freeze_after_head:
            b.frozen = True
            await resp.write(b"")  # the head is on the wire; no event will follow
            await self._frozen()
        base = {
            "id": "chatcmpl-rec",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model"),
        }
        sent = 0
        try:
            first = {
                **base,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}],
            }
            await resp.write(b"data: " + json.dumps(first).encode() + b"\n\n")
            for piece in chunks:
                if b.die_after_chunks is not None and sent >= b.die_after_chunks:
                    # What a crashed backend looks like on the wire: the connection just goes away.
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                ev = {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                await resp.write(b"data: " + json.dumps(ev).encode() + b"\n\n")
                sent += 1
                if b.chunk_delay_s:
                    await asyncio.sleep(b.chunk_delay_s)
            last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], **self._usage(sent)}
            await resp.write(b"data: " + json.dumps(last).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            if b.eof_delay_s:
                await asyncio.sleep(b.eof_delay_s)  # the chunked terminator arrives on its own, later
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.stream_disconnects += 1
            self.disconnected.set()
            raise
        return resp

    async def _completions(self, request: web.Request) -> web.Response:
        rec, early = await self._admit(request)
        if early is not None:
            return early
        body = rec.body if isinstance(rec.body, dict) else {}
        return web.json_response(
            {
                "id": "cmpl-rec",
                "object": "text_completion",
                "model": body.get("model"),
                "choices": [{"index": 0, "text": self.behaviour.content, "finish_reason": "stop"}],
                **self._usage(len(self.behaviour.content.split())),
            }
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        rec, early = await self._admit(request)
        if early is not None:
            return early
        body = rec.body if isinstance(rec.body, dict) else {}
        inputs = body.get("input")
        n = len(inputs) if isinstance(inputs, list) else 1
        dim = self.behaviour.embedding_dim
        return web.json_response(
            {
                "object": "list",
                "model": body.get("model"),
                "data": [{"object": "embedding", "index": i, "embedding": [0.1 * (i + 1)] * dim} for i in range(n)],
                "usage": {"prompt_tokens": 3 * n, "total_tokens": 3 * n},
            }
        )

    async def _audio(self, request: web.Request) -> web.Response:
        rec, early = await self._admit(request)
        if early is not None:
            return early
        model = rec.body.get("model") if isinstance(rec.body, dict) else None
        if isinstance(model, bytes):
            model = model.decode()
        return web.json_response({"text": self.behaviour.content, "model": model})


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.support.recording_upstream")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="rec")
    args = ap.parse_args(argv)

    async def run() -> None:
        up = await RecordingUpstream(args.name, port=args.port, host=args.host).start()
        print(f"listening on {up.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await up.stop()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
