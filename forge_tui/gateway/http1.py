"""A lean HTTP/1.1 client for the request path: keep-alive pools on bare asyncio protocols.

Why not aiohttp's client here: per request it spends more CPU than the rest of the gateway
together (cookie jar, URL objects, tracing, timers, tasks), and the gateway's budget is a
fraction of a millisecond. This client does what a proxy needs and nothing else: one
``transport.write`` per request, body bytes handed over the moment they arrive (SSE is never
batched), back-pressure that pauses reading when a slow caller lets data pile up. Response heads
and bodies (Content-Length, chunked, until close) are parsed by ``httptools`` (llhttp, the parser
uvicorn uses); interim 1xx answers are skipped, HEAD answers carry no body, and bytes arriving on
an idle connection mean it can no longer be trusted: it is closed.

A request is never sent twice: once its bytes are written the backend may have read it (a chat
POST is not idempotent), so a connection that dies before the answer's head is an error, not a
retry. Staleness is checked before sending instead: an idle connection past ``idle_ttl_s`` (kept
below the backend's own keep-alive timeout) or one the backend already closed is not reused.

Errors are typed so the router can tell "nothing listens there" from "host unreachable" from
"it accepted and went silent" from "it died mid-answer".
"""

from __future__ import annotations

import asyncio
import select
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httptools

__all__ = [
    "ConnectFailed",
    "ConnectRefused",
    "ConnectTimeout",
    "Disconnected",
    "MalformedResponse",
    "Pool",
    "ReadTimeout",
    "Response",
]

_monotonic = time.monotonic
_get_loop = asyncio.get_running_loop
_PAUSE_AT = 1024 * 1024  # buffered body bytes before reading pauses (piecewise readers only)
_HttpParserError = httptools.HttpParserError


class ConnectRefused(ConnectionRefusedError):
    """Nothing listens on the backend's port (it is starting, restarting or dead)."""


class ConnectFailed(OSError):
    """The backend's host could not be reached (no route, DNS, connect timeout)."""


class ConnectTimeout(ConnectFailed):
    """No answer to the connection attempt within the connect timeout (host down, link down)."""


class Disconnected(ConnectionError):
    """The backend closed the connection before the answer was complete (the request had been sent)."""

    def __init__(self, message: str, *, got_head: bool = False, reused: bool = False) -> None:
        super().__init__(message)
        self.got_head = got_head
        self.reused = reused


class ReadTimeout(TimeoutError):
    """The backend sent nothing for longer than the read timeout."""


class MalformedResponse(ConnectionError):
    """The backend's bytes are not HTTP/1.1 this client can follow."""


class _Stray(Exception):
    """Bytes that belong to no request in flight (raised inside a parser callback to stop it)."""


class Response:
    """One answer on a pooled connection. Read it fully (``read``) or piecewise (``readany``), then ``close``.

    ``relayed`` is set by whoever forwards the body once something reached the caller: until then a
    backend that turns bad may cancel the response (``Pool.fail_unanswered``) so it can go elsewhere.
    """

    __slots__ = (
        "_buffered",
        "_conn",
        "_error",
        "_paused",
        "_pieces",
        "_released",
        "_waiter",
        "done",
        "headers",
        "keep_alive",
        "no_pause",
        "reason",
        "relayed",
        "status",
        "until_close",
    )

    def __init__(self, conn: _Conn, status: int, reason: str, headers: dict[str, str], keep_alive: bool) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case names
        self.keep_alive = keep_alive
        self._conn = conn
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self.done = False
        self._error: BaseException | None = None
        self._released = False
        self._paused = False
        self.no_pause = False  # a full-body read: buffering everything is the point, never pause
        self.relayed = False
        self.until_close = False  # the body ends when the connection does (no length, not chunked)

    # ---------------------------------------------------------------- fed by the protocol
    def _push(self, data: bytes) -> None:
        self._pieces.append(data)
        self._buffered += len(data)
        if self._buffered > _PAUSE_AT and not self._paused and not self.no_pause:
            self._paused = True
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        self._wake()
        self._conn.response_done(self)

    def _fail(self, exc: BaseException) -> None:
        if self.done:
            return
        if self.until_close and isinstance(exc, Disconnected):
            self.done = True  # a close-delimited body ends with the connection
        else:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # ---------------------------------------------------------------- consumer side
    async def _wait(self) -> None:
        # The pool's watchdog fails this waiter when the backend stays silent past the read timeout.
        conn = self._conn
        w = self._waiter = _get_loop().create_future()
        conn.waiting = w
        try:
            await w
        finally:
            self._waiter = None
            conn.waiting = None

    async def readany(self) -> bytes:
        """The body bytes that have arrived (waiting for some if none); b"" at the end of the body."""
        while not self._pieces:
            if self._error is not None:
                raise self._error
            if self.done:
                return b""
            # _wait() inlined: once per relayed SSE event, one coroutine level less to resume
            conn = self._conn
            w = self._waiter = _get_loop().create_future()
            conn.waiting = w
            try:
                await w
            finally:
                self._waiter = None
                conn.waiting = None
        if len(self._pieces) == 1:
            data = self._pieces.popleft()
        else:
            data = b"".join(self._pieces)
            self._pieces.clear()
        self._buffered = 0
        if self._paused:
            self._paused = False
            self._conn.resume()
        return data

    async def read(self) -> bytes:
        """The whole body. Reading never pauses here: a multi-MiB answer must not wait for a reader."""
        self.no_pause = True
        if self._paused:
            self._paused = False
            self._conn.resume()
        while not self.done:
            if self._error is not None:
                raise self._error
            await self._wait()
        if self._error is not None and not self._pieces:
            raise self._error
        data = b"".join(self._pieces)
        self._pieces.clear()
        self._buffered = 0
        return data

    async def drain(self, timeout: float) -> bool:
        """Read what is left of the body (e.g. a chunked stream's terminator after ``[DONE]``), at most
        ``timeout`` seconds, so the connection can be reused; True when the body ended cleanly."""
        try:
            async with asyncio.timeout(timeout):
                while await self.readany():
                    pass
        except (TimeoutError, ConnectionError):
            return False
        return self.done and self._error is None

    def close(self, *, abort: bool = False) -> None:
        """Give the connection back (a fully read keep-alive answer) or drop it (anything else)."""
        if self._released:
            return
        self._released = True
        self._conn.release(self, abort=abort or not self.done or not self.keep_alive)


def _expire(fut: asyncio.Future[Any], timeout: float) -> None:
    if not fut.done():
        fut.set_exception(ReadTimeout(f"no data from the backend for {timeout:g}s"))


class _Conn(asyncio.Protocol):
    """One connection; also the ``httptools`` parser's callback object (one parser per request)."""

    __slots__ = (
        "_headers",
        "_interim",
        "_reason",
        "fd",
        "head_waiter",
        "last_data",
        "lost",
        "no_body",
        "parser",
        "pool",
        "read_timeout",
        "resp",
        "reused",
        "transport",
        "waiting",
    )

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.fd = -1  # the socket's descriptor, once connected
        self.parser: httptools.HttpResponseParser | None = None  # None: idle, no request in flight
        self.resp: Response | None = None
        self.head_waiter: asyncio.Future[Response] | None = None
        self.lost = False
        self.read_timeout = pool.read_timeout
        self.no_body = False
        self.reused = False
        self.waiting: asyncio.Future[Any] | None = None  # what the watchdog may time out
        self.last_data = 0.0  # monotonic time of the last bytes from the backend (or of the send)
        self._headers: dict[str, str] = {}
        self._reason = ""
        self._interim = False

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Kept for the idle check: uvloop builds a socket object on every get_extra_info("socket").
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1

    def data_received(self, data: bytes) -> None:
        self.last_data = _monotonic()
        parser = self.parser
        if parser is None:
            self._drop_stray()  # bytes nobody asked for: this connection's framing can't be trusted
            return
        try:
            parser.feed_data(data)
        except _HttpParserError as exc:
            if isinstance(exc.__context__, _Stray) or (self.resp is not None and self.resp.done):
                self._drop_stray()  # the answer is complete; what followed it is not ours
            else:
                self._broken(MalformedResponse(f"unparseable answer from the backend: {exc}"))

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool.forget(self)
        err = Disconnected(
            f"the backend closed the connection{f' ({exc})' if exc else ''}",
            got_head=self.resp is not None,
            reused=self.reused,
        )
        w = self.head_waiter
        if w is not None and not w.done():
            w.set_exception(err)
        if self.resp is not None:
            self.resp._fail(err)

    # ---------------------------------------------------------------- httptools callbacks
    def on_message_begin(self) -> None:
        if self.resp is not None:
            raise _Stray  # a second message after the answer: nobody sent a request for it
        self._headers = {}
        self._reason = ""

    def on_status(self, status: bytes) -> None:
        self._reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        parser = self.parser
        assert parser is not None
        status = parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._interim = True  # 100 Continue, 103 Early Hints: the final answer follows
            return
        headers = self._headers
        resp = Response(self, status, self._reason, headers, parser.should_keep_alive())
        self.resp = resp
        w, self.head_waiter = self.head_waiter, None
        if w is not None and not w.done():
            w.set_result(resp)
        if self.no_body or status in (204, 304):
            resp._finish()  # HEAD: the length header describes a body that is not sent
        elif "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "").lower():
            resp.until_close = True
            resp.keep_alive = False

    def on_body(self, body: bytes) -> None:
        resp = self.resp
        if resp is None or resp.done:
            raise _Stray
        resp._push(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.resp is not None:
            self.resp._finish()

    # ---------------------------------------------------------------- helpers
    def _drop_stray(self) -> None:
        self.pool.counts["stray_closed"] = self.pool.counts.get("stray_closed", 0) + 1
        if self.resp is not None and not self.resp.done:
            self._broken(MalformedResponse("the backend sent bytes nobody asked for"))
            return
        # An answer already complete keeps its body; the connection just is not reused.
        self.lost = True
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.abort()

    def _broken(self, exc: BaseException) -> None:
        w = self.head_waiter
        if w is not None and not w.done():
            w.set_exception(exc)
        if self.resp is not None:
            self.resp._fail(exc)
        self.lost = True
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.abort()

    def fail(self, exc: BaseException) -> None:
        """Give up on this request (the backend turned bad): the waiter sees ``exc``, the backend a closed socket."""
        self._broken(exc)

    def pause(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()

    def response_done(self, resp: Response) -> None:
        if resp._released:
            self._recycle(resp)

    def release(self, resp: Response, *, abort: bool) -> None:
        if abort:
            self.resp = None
            self.lost = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.abort()
            return
        self._recycle(resp)

    def _recycle(self, resp: Response) -> None:
        if self.resp is not resp or self.lost:
            return
        self.resp = None
        self.parser = None
        if resp.keep_alive and resp.done and resp._error is None:
            if resp._paused:
                self.resume()
            self.pool.put(self)
        else:
            self.lost = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()

    async def send(self, data: bytes, no_body: bool) -> Response:
        w: asyncio.Future[Response] = _get_loop().create_future()
        self.no_body = no_body
        self._interim = False
        self.parser = httptools.HttpResponseParser(self)
        self.head_waiter = w
        self.waiting = w
        self.last_data = _monotonic()
        assert self.transport is not None
        self.transport.write(data)
        self.pool.watch(self)
        try:
            return await w
        except BaseException:
            # Timed out, the backend turned bad, or the caller left: the backend must see the
            # connection go, and stop working.
            self.lost = True
            self.pool.forget(self)
            self.transport.abort()
            raise
        finally:
            self.waiting = None
            if self.head_waiter is w:
                self.head_waiter = None


# An idle connection is polled for a close by the backend (or stray bytes) only when it sat idle at
# least this long: backends close idle connections after their keep-alive timeout (llama.cpp: 5 s,
# past the TTL) or when they stop, and the event loop sees most closes by itself. One that lands
# within this instant is a backend stopping under traffic, which the walk handles (an unanswered
# request is never replayed; refused next time, it falls back). The poll is a syscall per reuse.
_POLL_AFTER_IDLE_S = 0.25


def _still_open(conn: _Conn) -> bool:
    """An idle connection with something to read has been closed by the backend (or carries stray
    bytes): either way it must not carry a request. One poll of the socket, no waiting."""
    t = conn.transport
    if t is None or t.is_closing():
        return False
    if conn.fd < 0:
        return True
    try:
        readable, _, _ = select.select([conn.fd], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


class Pool:
    """Keep-alive connections to one backend (host:port, optional TLS and path prefix).

    ``counts`` (shared with the backend's runtime when given) counts what happened to connections:
    ``connections_opened``, ``stale_closed`` (not reused: past the idle TTL or closed by the backend),
    ``stray_closed`` (bytes arrived that no request asked for).
    """

    @classmethod
    def for_url(
        cls,
        base_url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_idle: int = 64,
        idle_ttl_s: float = 4.0,
        counts: dict[str, int] | None = None,
    ) -> Pool:
        u = urlsplit(base_url)
        tls = u.scheme == "https"
        return cls(
            u.hostname or "127.0.0.1",
            u.port or (443 if tls else 80),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_idle=max_idle,
            idle_ttl_s=idle_ttl_s,
            ssl=tls,
            prefix=u.path,
            counts=counts,
        )

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_idle: int = 64,
        idle_ttl_s: float = 4.0,
        ssl: bool = False,
        prefix: str = "",
        counts: dict[str, int] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl
        self.prefix = prefix.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        # Below the backend's keep-alive timeout (llama.cpp's HTTP server: 5 s), so the backend
        # never closes a connection just as a request goes out on it.
        self.idle_ttl_s = idle_ttl_s
        self.counts: dict[str, int] = counts if counts is not None else {}
        self._idle: deque[tuple[_Conn, float]] = deque()
        self._all: set[_Conn] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        self._reaper: asyncio.TimerHandle | None = None  # closes idle connections past the TTL
        # One timer per pool instead of one per request: sweep busy connections for silence.
        self._tick = max(0.05, min(0.5, read_timeout / 4))
        shown = f"[{host}]" if ":" in host else host
        self._host_header = f"Host: {shown}:{port}\r\n".encode("latin-1")
        self._heads: dict[tuple[str, str], bytes] = {}  # (method, path): the head up to Content-Length

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def put(self, conn: _Conn) -> None:
        idle = self._idle
        now = _monotonic()
        if len(idle) >= self.max_idle:
            self._reap_idle(now)  # dead or expired entries make room first
            if len(idle) >= self.max_idle:
                conn.lost = True
                self.forget(conn)
                if conn.transport is not None:
                    conn.transport.close()
                return
        idle.append((conn, now))
        if self._reaper is None:
            self._reaper = _get_loop().call_later(self.idle_ttl_s, self._reap)

    def _reap(self) -> None:
        # Idle connections past the TTL are closed even when no request comes to find them stale: a
        # backend that never times out its keep-alive (Go's default) would otherwise hold them.
        self._reaper = None
        now = _monotonic()
        self._reap_idle(now)
        if self._idle:
            due = self._idle[0][1] + self.idle_ttl_s - now
            self._reaper = _get_loop().call_later(max(0.05, due), self._reap)

    def _reap_idle(self, now: float) -> None:
        """Close idle connections past the TTL and drop ones the backend closed, oldest first (the
        deque is in the order connections came back; requests take from the newest end)."""
        idle = self._idle
        ttl = self.idle_ttl_s
        while idle and (idle[0][0].lost or now - idle[0][1] > ttl):
            conn, _ = idle.popleft()
            if conn.lost:
                continue
            self._count("idle_closed")
            conn.lost = True
            self.forget(conn)
            if conn.transport is not None:
                conn.transport.close()

    def forget(self, conn: _Conn) -> None:
        self._all.discard(conn)

    def watch(self, conn: _Conn) -> None:
        if self._watchdog is None:
            self._watchdog = _get_loop().call_later(self._tick, self._sweep)

    def _sweep(self) -> None:
        self._watchdog = None
        now = _monotonic()
        busy = False
        for conn in list(self._all):
            w = conn.waiting
            if w is None or w.done():
                if conn.resp is not None:
                    busy = True
                continue
            busy = True
            if now - conn.last_data > conn.read_timeout:
                _expire(w, conn.read_timeout)
        if busy:
            self._watchdog = _get_loop().call_later(self._tick, self._sweep)

    def fail_unanswered(self, exc: BaseException) -> int:
        """The backend turned bad: fail every request still waiting for its answer's head, and every
        answer nothing of which has reached a caller yet (``relayed``); their connections are closed
        so the backend stops working on them. Returns how many were failed."""
        n = 0
        for conn in list(self._all):
            w = conn.head_waiter
            resp = conn.resp
            if (w is not None and not w.done()) or (resp is not None and not resp.done and not resp.relayed):
                conn.fail(exc)
                n += 1
        return n

    def fail_all(self, exc: BaseException) -> int:
        """Fail every request in flight on this pool (the gateway is stopping). Returns how many."""
        n = 0
        for conn in list(self._all):
            w = conn.head_waiter
            resp = conn.resp
            if (w is not None and not w.done()) or (resp is not None and not resp.done):
                conn.fail(exc)
                n += 1
        return n

    async def connect_once(self) -> _Conn:
        """A new connection (not yet used): e.g. to learn whether the backend still listens."""
        return await self._connect()

    async def _connect(self) -> _Conn:
        loop = _get_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Conn(self),
                    self.host,
                    self.port,
                    ssl=True if self.ssl else None,
                    server_hostname=self.host if self.ssl else None,
                )
        except ConnectionRefusedError as exc:
            raise ConnectRefused(exc.errno, "connection refused") from None
        except TimeoutError:
            raise ConnectTimeout(f"connect timed out after {self.connect_timeout:g}s") from None
        except OSError as exc:
            raise ConnectFailed(exc.errno, exc.strerror or str(exc)) from None
        self._count("connections_opened")
        self._all.add(conn)
        return conn

    def _take_idle(self) -> _Conn | None:
        now = _monotonic()
        while self._idle:
            conn, since = self._idle.pop()  # most recently used first: likeliest to be alive
            if conn.lost:
                continue
            idle = now - since
            if idle > self.idle_ttl_s or (idle > _POLL_AFTER_IDLE_S and not _still_open(conn)):
                self._count("stale_closed")
                conn.lost = True
                self.forget(conn)
                if conn.transport is not None:
                    conn.transport.close()
                continue
            conn.reused = True
            return conn
        return None

    async def request(
        self,
        method: str,
        path: str,
        body: bytes,
        headers: Sequence[tuple[str, str]],
        read_timeout: float | None = None,
        *,
        same_headers: bool = False,
    ) -> Response:
        """Send one request, once; returns when the response head has arrived. ``same_headers``:
        these headers repeat from request to request (a fixed content type), so the head is built
        once per (method, path) and kept."""
        head = self._heads.get((method, path)) if same_headers else None
        if head is None:
            head = self._head(method, path, headers, same_headers)
        data = b"".join((head, b"Content-Length: %d\r\n\r\n" % len(body), body))
        conn = self._take_idle()
        if conn is None:
            conn = await self._connect()
        conn.read_timeout = read_timeout or self.read_timeout
        return await conn.send(data, method == "HEAD")

    def _head(self, method: str, path: str, headers: Sequence[tuple[str, str]], keep: bool) -> bytes:
        lines = [f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1"), self._host_header]
        for k, v in headers:
            lines.append(f"{k}: {v}\r\n".encode("latin-1"))
        head = b"".join(lines)
        if keep and len(self._heads) < 64:  # a backend is sent a handful of paths: bounded all the same
            self._heads[(method, path)] = head
        return head

    async def get(self, path: str, read_timeout: float | None = None) -> Response:
        return await self.request("GET", path, b"", [], read_timeout)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        for conn, _ in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.abort()
        self._all.clear()

    @property
    def open_connections(self) -> int:
        return len(self._all)
