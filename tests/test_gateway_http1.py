"""The gateway's own HTTP/1.1 client (forge_tui/gateway/http1.py) against raw asyncio servers.

Raw servers here, not llama.cpp: these tests need byte-level control a real server does not give
(a chunk size line split across TCP writes, a close-delimited body, a keep-alive connection the
server drops while idle, silence after the head). The gateway tests cover the client end to end
against real llama.cpp servers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from forge_tui.gateway import http1
from forge_tui.launch import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


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

    async def answer_ok(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        """Answer every request on this connection with a keep-alive 200 "ok" until the peer closes."""
        while True:
            await self.read_request(r)
            w.write(OK)
            await w.drain()

    async def read_request(self, r: asyncio.StreamReader) -> bytes:
        head = await r.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await r.readexactly(length)
        self.requests.append(head + body)
        return head + body


async def get_ok(pool: http1.Pool) -> None:
    resp = await pool.request("GET", "/", b"", [])
    assert await resp.read() == b"ok"
    resp.close()


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
        while True:
            req = await srv.read_request(r)
            if b"/close" in req:
                w.write(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
                await w.drain()
                return
            w.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!")
            await w.drain()

    async with RawServer(handler) as srv:
        pool = _pool(srv.port)
        pools.append(pool)
        resp = await pool.request("GET", "/x", b"", [])
        assert (resp.status, resp.reason, await resp.read()) == (404, "Not Found", b"nope!")
        resp.close()
        resp = await pool.request("GET", "/close", b"", [])
        assert await resp.read() == b"until the end" and not resp.keep_alive
        resp.close()


async def test_refused_and_a_request_is_never_sent_twice(pools) -> None:
    pool = _pool(free_port())
    pools.append(pool)
    with pytest.raises(http1.ConnectRefused):
        await pool.request("GET", "/", b"", [])

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        # The next request on this keep-alive connection is read, then dropped unanswered.
        await srv.read_request(r)

    async with RawServer(handler) as srv:
        pool = _pool(srv.port)
        pools.append(pool)
        resp = await pool.request("POST", "/", b"{}", [])
        assert await resp.read() == b"ok"
        resp.close()
        # The backend read the second request: it may be generating, so it is not replayed.
        with pytest.raises(http1.Disconnected) as ei:
            await pool.request("POST", "/", b"{}", [])
        assert ei.value.reused and not ei.value.got_head
        assert srv.connections == 1 and len(srv.requests) == 2


async def test_a_connection_the_backend_closed_while_idle_is_not_reused(pools) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        w.close()  # keep-alive timeout on the backend's side, before the client's next request

    async with RawServer(handler) as srv:
        pool = _pool(srv.port)
        pools.append(pool)
        for _ in range(3):
            resp = await pool.request("POST", "/", b"{}", [])
            assert await resp.read() == b"ok"
            resp.close()
            await asyncio.sleep(0.05)
        assert srv.connections == 3 and len(srv.requests) == 3  # each request sent exactly once
        assert pool.counts["connections_opened"] == 3


async def test_idle_connections_older_than_the_ttl_are_not_reused(pools) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.answer_ok(r, w)

    async with RawServer(handler) as srv:
        pool = http1.Pool("127.0.0.1", srv.port, connect_timeout=2, read_timeout=5, idle_ttl_s=0.1)
        pools.append(pool)
        for pause in (0.0, 0.3):
            await asyncio.sleep(pause)
            resp = await pool.request("GET", "/", b"", [])
            assert await resp.read() == b"ok"
            resp.close()
        # not reused: closed by the idle reaper once past the TTL (or found stale when taken)
        assert srv.connections == 2
        assert pool.counts.get("idle_closed", 0) + pool.counts.get("stale_closed", 0) == 1


async def test_idle_connections_past_the_ttl_are_closed_with_no_request_to_find_them(pools) -> None:
    closed = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal closed
        try:
            await srv.answer_ok(r, w)
        except asyncio.IncompleteReadError:
            closed += 1  # the gateway's side went away (a backend that never times out idle keep-alive)
            raise

    async with RawServer(handler) as srv:
        pool = http1.Pool("127.0.0.1", srv.port, connect_timeout=2, read_timeout=5, idle_ttl_s=0.2)
        pools.append(pool)

        await asyncio.gather(get_ok(pool), get_ok(pool), get_ok(pool))
        assert srv.connections == 3 and len(pool._idle) == 3
        for _ in range(40):  # bounded: 2 s for a 0.2 s TTL
            if closed == 3:
                break
            await asyncio.sleep(0.05)
        assert closed == 3 and pool.counts["idle_closed"] == 3
        assert not pool._idle and pool._reaper is None and pool.open_connections == 0
        await get_ok(pool)  # the pool goes on with a new connection
        assert srv.connections == 4 and pool._reaper is not None


async def test_connections_the_backend_closed_make_room_in_a_full_idle_list(pools) -> None:
    release = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        n = srv.connections
        await srv.read_request(r)
        if n == 3:
            await release.wait()  # the third answer comes once the first two connections are dead
        w.write(OK)
        await w.drain()
        if n > 2:  # the first two: answered, then closed by the backend while idle in the pool
            await srv.answer_ok(r, w)

    async with RawServer(handler) as srv:
        pool = http1.Pool("127.0.0.1", srv.port, connect_timeout=2, read_timeout=5, max_idle=2, idle_ttl_s=30)
        pools.append(pool)

        third = asyncio.ensure_future(asyncio.gather(get_ok(pool), get_ok(pool), get_ok(pool)))
        for _ in range(40):  # bounded: the first two answered, back in the pool, and closed by the backend
            if len(pool._idle) == 2 and all(c.lost for c, _ in pool._idle):
                break
            await asyncio.sleep(0.05)
        assert len(pool._idle) == 2 and all(c.lost for c, _ in pool._idle)
        release.set()
        await third
        # the third connection came back to a full list of dead entries: they made room, it was kept
        assert [c.lost for c, _ in pool._idle] == [False]
        await get_ok(pool)
        assert srv.connections == 3  # and it is reused


async def test_a_close_the_loop_has_not_seen_yet_is_found_by_the_idle_poll(pools) -> None:
    """The backend closed an idle connection while the event loop was busy (its FIN is in the
    kernel, no callback has run): idle past the poll threshold, the pool finds it and dials anew."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await w.drain()
        w.close()  # keep-alive answer, then the backend drops the connection anyway
        await w.wait_closed()

    async with RawServer(handler) as srv:
        pool = _pool(srv.port)
        pools.append(pool)
        resp = await pool.request("POST", "/", b"{}", [])
        assert await resp.read() == b"ok"
        resp.close()
        time.sleep(http1._POLL_AFTER_IDLE_S + 0.2)  # blocks the loop: the close arrives unseen
        resp = await pool.request("POST", "/", b"{}", [])
        assert await resp.read() == b"ok"
        resp.close()
        assert srv.connections == 2 and len(srv.requests) == 2
        assert pool.counts["stale_closed"] == 1


async def test_interim_1xx_answers_are_skipped(pools) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await srv.read_request(r)
            w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await w.drain()
            await asyncio.sleep(0.02)
            w.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 4\r\n")
            w.write(b"X-Final: yes\r\n\r\ndone")
            await w.drain()

    async with RawServer(handler) as srv:
        pool = _pool(srv.port)
        pools.append(pool)
        for _ in range(2):
            resp = await pool.request("POST", "/", b"{}", [])
            assert (resp.status, resp.reason, resp.headers.get("x-final")) == (201, "Created", "yes")
            assert "link" not in resp.headers
            assert await resp.read() == b"done"
            resp.close()
        assert srv.connections == 1


async def test_head_has_no_body_and_keeps_the_connection(pools) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            req = await srv.read_request(r)
            if req.startswith(b"HEAD"):
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
            else:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nget")
            await w.drain()

    async with RawServer(handler) as srv:
        pool = _pool(srv.port)
        pools.append(pool)
        resp = await pool.request("HEAD", "/", b"", [])
        assert resp.status == 200 and resp.headers["content-length"] == "1234"
        assert await resp.read() == b""
        resp.close()
        resp = await pool.get("/")
        assert await resp.read() == b"get"
        resp.close()
        assert srv.connections == 1


async def test_stray_bytes_on_an_idle_connection_close_it(pools) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await srv.read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()
            await asyncio.sleep(0.05)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")  # an answer nobody asked for
            await w.drain()

    async with RawServer(handler) as srv:
        pool = _pool(srv.port)
        pools.append(pool)
        for _ in range(2):
            resp = await pool.request("POST", "/", b"{}", [])
            assert await resp.read() == b"ok"
            resp.close()
            await asyncio.sleep(0.15)
        assert srv.connections == 2 and pool.counts["stray_closed"] >= 1


async def test_bytes_after_a_complete_answer_close_the_connection(pools) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await srv.read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA")
            await w.drain()

    async with RawServer(handler) as srv:
        pool = _pool(srv.port)
        pools.append(pool)
        for _ in range(2):
            resp = await pool.request("GET", "/", b"", [])
            assert await resp.read() == b"ok"
            resp.close()
        assert srv.connections == 2


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


async def test_a_multi_mib_body_read_whole_never_stalls(pools) -> None:
    big = b"[" + b"0.125," * (3 * 1024 * 1024) + b"0]"

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            await srv.read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(big), 300_000):
                piece = big[i : i + 300_000]
                w.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await w.drain()
            w.write(b"0\r\n\r\n")
            await w.drain()

    async with RawServer(handler) as srv:
        pool = _pool(srv.port, read_timeout=3)
        pools.append(pool)
        for _ in range(2):
            resp = await pool.request("POST", "/v1/embeddings", b"{}", [])
            await asyncio.sleep(0.2)  # arrives faster than anyone reads: more than the pause threshold buffers
            assert await resp.read() == big
            resp.close()
        assert srv.connections == 1


async def test_a_kept_head_goes_out_as_built_and_varying_headers_are_never_kept(pools) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await srv.answer_ok(r, w)

    json_h = (("Content-Type", "application/json"),)
    async with RawServer(handler) as srv:
        pool = _pool(srv.port)
        pools.append(pool)
        sent = [
            ("POST", "/v1/chat/completions", b'{"a":1}', json_h, True),
            ("POST", "/v1/chat/completions", b'{"bb":22}', json_h, True),  # the kept head, a new length
            ("POST", "/v1/embeddings", b"{}", json_h, True),
            (
                "POST",
                "/v1/audio/transcriptions",
                b"--x1",
                (("Content-Type", "multipart/form-data; boundary=x1"),),
                False,
            ),
            (
                "POST",
                "/v1/audio/transcriptions",
                b"--y2",
                (("Content-Type", "multipart/form-data; boundary=y2"),),
                False,
            ),
        ]
        for method, path, body, headers, same in sent:
            resp = await pool.request(method, path, body, headers, same_headers=same)
            assert await resp.read() == b"ok"
            resp.close()
    port = srv.port
    for (method, path, body, headers, _), got in zip(sent, srv.requests, strict=True):
        want = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
        assert got == want.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body
    assert set(pool._heads) == {("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings")}
