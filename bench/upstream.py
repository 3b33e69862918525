"""A fast OpenAI-compatible upstream on loopback: answers at once, so every millisecond measured
through a gateway is the gateway's.

Routes: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions`` and ``POST /v1/completions``
(JSON with ``usage``, or with ``"stream": true`` an SSE stream of a few chunks ending in
``data: [DONE]``, one HTTP chunk per event, like llama.cpp's server). The first event leaves at
once; the next ones ``chunk_gap_ms`` apart, so a proxy that batches chunks shows up as
events arriving together at the client.

Run it in its own process: ``python -m bench.upstream [--port 0] [--cpu N]``; it prints
``LISTENING <host> <port>`` and stops on SIGTERM or when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import cast

from .http1 import BodyFramer, Head, MalformedHTTP, parse_head
from .proc import pin_to_cpu, serve_until_stopped

__all__ = ["UpstreamConfig", "UpstreamProtocol", "start_upstream"]

TOKENS = ("Hello", " from", " the", " fast", " upstream", ".")
CREATED = 1_700_000_000


class UpstreamConfig:
    """Shape of the canned answers; response bytes are built once per (path, model, stream)."""

    def __init__(self, chunks: int = 8, chunk_gap_ms: float = 2.0) -> None:
        if chunks < 3:
            raise ValueError("a stream needs at least 3 events (role, content, finish)")
        self.chunks = chunks
        self.chunk_gap_s = chunk_gap_ms / 1000.0
        self._cache: dict[tuple[bytes, str, bool], bytes | list[bytes]] = {}

    def json_answer(self, path: bytes, model: str) -> bytes:
        key = (path, model, False)
        hit = self._cache.get(key)
        if hit is None:
            text = "".join(TOKENS)
            usage = {"prompt_tokens": 12, "completion_tokens": len(TOKENS), "total_tokens": 12 + len(TOKENS)}
            if path == b"/v1/completions":
                body = {
                    "id": "cmpl-bench",
                    "object": "text_completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                    "usage": usage,
                }
            else:
                body = {
                    "id": "chatcmpl-bench",
                    "object": "chat.completion",
                    "created": CREATED,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": usage,
                }
            hit = _response(200, json.dumps(body).encode())
            self._cache[key] = hit
        assert isinstance(hit, bytes)
        return hit

    def stream_events(self, path: bytes, model: str) -> list[bytes]:
        """The HTTP chunks of one SSE answer: head + first event, then one chunk per event, then the end."""
        key = (path, model, True)
        hit = self._cache.get(key)
        if hit is None:
            chat = path != b"/v1/completions"
            n_content = self.chunks - 2  # role event, content events, finish event (+ [DONE])
            words = [TOKENS[i % len(TOKENS)] for i in range(n_content)]
            events: list[dict[str, object]] = []
            base = {
                "id": "chatcmpl-bench" if chat else "cmpl-bench",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "created": CREATED,
                "model": model,
            }
            if chat:
                events.append(
                    {
                        **base,
                        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                    }
                )
                events += [
                    {**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in words
                ]
                events.append(
                    {
                        **base,
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 12, "completion_tokens": n_content, "total_tokens": 12 + n_content},
                    }
                )
            else:
                events.append({**base, "choices": [{"index": 0, "text": "", "finish_reason": None}]})
                events += [{**base, "choices": [{"index": 0, "text": w, "finish_reason": None}]} for w in words]
                events.append({**base, "choices": [{"index": 0, "text": "", "finish_reason": "stop"}]})
            datas = [b"data: " + json.dumps(e, separators=(",", ":")).encode() + b"\n\n" for e in events]
            datas[-1] += b"data: [DONE]\n\n"  # the finish event and [DONE] leave together, as llama.cpp does
            chunks = [b"%x\r\n%s\r\n" % (len(d), d) for d in datas]
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            chunks[0] = head + chunks[0]
            chunks[-1] += b"0\r\n\r\n"
            hit = chunks
            self._cache[key] = hit
        assert isinstance(hit, list)
        return hit


def _response(status: int, body: bytes, ctype: bytes = b"application/json") -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"Error")
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        reason,
        ctype,
        len(body),
        body,
    )


HEALTH = _response(200, b'{"status":"ok"}')
NOT_FOUND = _response(404, b'{"error":{"message":"not found","type":"not_found_error","code":404}}')


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection; requests are answered in order (a stream finishes before the next)."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head: Head | None = None
        self.framer: BodyFramer | None = None
        self.body = bytearray()
        self.streaming = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.streaming:
            self._process()

    def _process(self) -> None:
        try:
            while self.transport is not None and not self.streaming:
                if self.head is None:
                    self.head = parse_head(self.buf)
                    if self.head is None:
                        return
                    del self.buf[: self.head.size]
                    self.framer = BodyFramer(self.head.headers, response=False)
                    self.body.clear()
                assert self.framer is not None
                if not self.framer.done:
                    used, parts = self.framer.feed(self.buf)
                    del self.buf[:used]
                    for p in parts:
                        self.body += p
                    if not self.framer.done:
                        return
                head, body = self.head, bytes(self.body)
                self.head = None
                self._answer(head, body)
        except (MalformedHTTP, ValueError):
            if self.transport is not None:
                self.transport.write(_response(400, b'{"error":{"message":"bad request"}}'))
                self.transport.close()

    def _answer(self, head: Head, body: bytes) -> None:
        assert self.transport is not None
        method, path = head.start[0], head.start[1].split(b"?", 1)[0]
        if method == b"GET" and path == b"/health":
            self._send(HEALTH, head)
        elif method == b"GET" and path == b"/v1/models":
            self._send(_response(200, b'{"object":"list","data":[{"id":"bench","object":"model"}]}'), head)
        elif method == b"POST" and path in (b"/v1/chat/completions", b"/v1/completions"):
            try:
                req = json.loads(body)
                model = str(req.get("model") or "bench")
                stream = bool(req.get("stream"))
            except (ValueError, AttributeError):
                self._send(_response(400, b'{"error":{"message":"body is not a JSON object"}}'), head)
                return
            if stream:
                self.streaming = True
                asyncio.get_running_loop().create_task(self._stream(head, self.config.stream_events(path, model)))
            else:
                self._send(self.config.json_answer(path, model), head)
        else:
            self._send(NOT_FOUND, head)

    def _send(self, data: bytes, head: Head) -> None:
        assert self.transport is not None
        self.transport.write(data)
        if not head.keep_alive:
            self.transport.close()

    async def _stream(self, head: Head, chunks: list[bytes]) -> None:
        try:
            for i, chunk in enumerate(chunks):
                if self.transport is None:
                    return
                if i and self.config.chunk_gap_s > 0:
                    await asyncio.sleep(self.config.chunk_gap_s)
                if self.transport is None:
                    return
                self.transport.write(chunk)
            if not head.keep_alive and self.transport is not None:
                self.transport.close()
        finally:
            self.streaming = False
            if self.transport is not None and self.buf:
                self._process()


async def start_upstream(
    host: str = "127.0.0.1", port: int = 0, config: UpstreamConfig | None = None
) -> asyncio.Server:
    cfg = config or UpstreamConfig()
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: UpstreamProtocol(cfg), host, port, backlog=1024)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--chunks", type=int, default=8, help="SSE events per stream, [DONE] included in the last")
    ap.add_argument("--chunk-gap-ms", type=float, default=2.0, help="delay between SSE events")
    ap.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = ap.parse_args(argv)
    pin_to_cpu(args.cpu)
    cfg = UpstreamConfig(args.chunks, args.chunk_gap_ms)
    return serve_until_stopped(lambda: start_upstream(args.host, args.port, cfg))


if __name__ == "__main__":
    raise SystemExit(main())
