"""The gateway's own HTTP/1.1 client (forge_tui/gateway/http1.py) against raw asyncio servers.

Raw servers here, not llama.cpp: these tests need byte-level control a real server does not give
(a chunk size line split across TCP writes, a close-delimited body, a keep-alive connection the
server drops while idle, silence after the head). The gateway tests cover the client end to end
against real llama.cpp servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from forge_tui.gateway import http1
from forge_tui.launch import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _on(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(r, w)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            w.close()

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._on, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def read_request(self, r: asyncio.StreamReader) -> bytes:
        head = await r.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await r.readexactly(length)
        self.requests.append(head + body)
        return head + body


def _pool(port: int, read_timeout: float = 5.0) -> http1.Pool:
    return http1.Pool("127.0.0.1", port, connect_timeout=2, read_timeout=read_timeout)


@pytest.fixture
async def pools() -> AsyncIterator[list[http1.Pool]]:
    made: list[http1.Pool] = []
    yield made
    for p in made:
        p.close()


async def test_chunked_body_split_everywhere_and_keep_alive(pools) -> None:
    payload = b"data: one\n\ndata: two\n\n"
    wire = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (10, payload[:10], len(payload) - 10, payload[10:])

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await srv.read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(len(wire)):  # one byte per write: every split point of the framing
                w.write(wire[i : i + 1])
                await w.drain()
                await asyncio.sleep(0)

    async with RawServer(handler) as srv:
        pool = _pool(srv.port)
        pools.append(pool)
        for _ in range(3):
            resp = await pool.request(
                "POST", "/v1/chat/completions", b'{"x":1}', [("Content-Type", "application/json")]
            )
            assert resp.status == 200 and resp.headers["content-type"] == "text/event-stream"
            got = b""
            while True:
                piece = await resp.readany()
                if not piece:
                    break
                got += piece
            assert got == payload
            resp.close()
        assert srv.connections == 1  # one keep-alive connection served all three
        assert srv.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
        assert srv.requests[0].endswith(b'Content-Length: 7\r\n\r\n{"x":1}')


async def test_content_length_and_close_delimited_bodies(pools) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        req = await srv.read_request(r)
        if b"/close" in req:
            w.write(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
            await w.drain()
            return
        w.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!")
        await w.drain()
        await srv.read_request(r)

    async with RawServer(handler) as srv:
        pool = _pool(srv.port)
        pools.append(pool)
        resp = await pool.request("GET", "/x", b"", [])
        assert (resp.status, resp.reason, await resp.read()) == (404, "Not Found", b"nope!")
        resp.close()
        resp = await pool.request("GET", "/close", b"", [])
        assert await resp.read() == b"until the end" and not resp.keep_alive
        resp.close()


async def test_refused_and_stale_connection(pools) -> None:
    pool = _pool(free_port())
    pools.append(pool)
    with pytest.raises(http1.ConnectRefused):
        await pool.request("GET", "/", b"", [])

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        # The next request on this keep-alive connection is dropped unanswered (a server that timed it out).
        await srv.read_request(r)

    async with RawServer(handler) as srv:
        pool = _pool(srv.port)
        pools.append(pool)
        for _ in range(2):
            resp = await pool.request("GET", "/", b"", [])
            assert await resp.read() == b"ok"
            resp.close()
        assert srv.connections == 2  # the reused connection died unanswered: retried once on a fresh one
        assert len(srv.requests) == 3


async def test_silence_is_a_read_timeout_and_death_is_disconnected(pools) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        req = await srv.read_request(r)
        if b"/silent" in req:
            await asyncio.sleep(5)
            return
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await w.drain()
        w.transport.abort()

    async with RawServer(handler) as srv:
        pool = _pool(srv.port, read_timeout=0.3)
        pools.append(pool)
        with pytest.raises(http1.ReadTimeout):
            await pool.request("GET", "/silent", b"", [])
        resp = await pool.request("GET", "/dies", b"", [])
        with pytest.raises(http1.Disconnected):
            await resp.read()
        resp.close()


async def test_malformed_answers(pools) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(r)
        w.write(b"SMTP ready\r\n\r\n")
        await w.drain()
        await asyncio.sleep(1)

    async with RawServer(handler) as srv:
        pool = _pool(srv.port)
        pools.append(pool)
        with pytest.raises(http1.MalformedResponse):
            await pool.request("GET", "/", b"", [])


async def test_slow_reader_pauses_the_backend(pools) -> None:
    big = b"x" * (4 * 1024 * 1024)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big))
        w.write(big)
        await w.drain()

    async with RawServer(handler) as srv:
        pool = _pool(srv.port)
        pools.append(pool)
        resp = await pool.request("GET", "/", b"", [])
        await asyncio.sleep(0.3)  # do not read: the client must stop buffering around its limit
        assert resp._buffered < 3 * 1024 * 1024
        total = 0
        while True:
            piece = await resp.readany()
            if not piece:
                break
            total += len(piece)
        assert total == len(big)
        resp.close()
