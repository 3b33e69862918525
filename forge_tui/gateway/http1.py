"""A lean HTTP/1.1 client for the request path: keep-alive pools on bare asyncio protocols.

Why not aiohttp's client here: per request it spends more CPU than the rest of the gateway
together (cookie jar, URL objects, tracing, timers, tasks), and the gateway's budget is a
fraction of a millisecond. This client does what a proxy needs and nothing else: one
``transport.write`` per request, the head parsed once, bodies framed by Content-Length,
chunked encoding or end of connection, and body bytes handed over the moment they arrive
(SSE is never batched). Back-pressure pauses reading when a slow caller lets data pile up.

Errors are typed so the router can tell "nothing listens there" from "host unreachable" from
"it accepted and went silent" from "it died mid-answer".
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ConnectFailed",
    "ConnectRefused",
    "Disconnected",
    "MalformedResponse",
    "Pool",
    "ReadTimeout",
    "Response",
]

_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024
_monotonic = time.monotonic
_get_loop = asyncio.get_running_loop
_PAUSE_AT = 1024 * 1024  # buffered body bytes before reading pauses
_RESUME_AT = 256 * 1024


class ConnectRefused(ConnectionRefusedError):
    """Nothing listens on the backend's port (it is starting, restarting or dead)."""


class ConnectFailed(OSError):
    """The backend's host could not be reached (no route, DNS, connect timeout)."""


class Disconnected(ConnectionError):
    """The backend closed the connection before the answer was complete."""

    def __init__(self, message: str, *, got_head: bool = False) -> None:
        super().__init__(message)
        self.got_head = got_head


class ReadTimeout(TimeoutError):
    """The backend sent nothing for longer than the read timeout."""


class MalformedResponse(ConnectionError):
    """The backend's bytes are not HTTP/1.1 this client can follow."""


class Response:
    """One answer on a pooled connection. Read it fully (``read``) or piecewise (``readany``), then ``close``."""

    __slots__ = (
        "_buffered",
        "_cbuf",
        "_conn",
        "_cstate",
        "_error",
        "_left",
        "_mode",
        "_paused",
        "_pieces",
        "_released",
        "_waiter",
        "done",
        "headers",
        "keep_alive",
        "reason",
        "status",
    )

    def __init__(self, conn: _Conn, status: int, reason: str, headers: dict[str, str], no_body: bool) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case names
        self._conn = conn
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self.done = False
        self._error: BaseException | None = None
        self._released = False
        self._paused = False
        self._cstate = 0  # chunked: 0 size line, 1 data, 2 CRLF after data, 3 trailers
        self._cbuf = bytearray()
        self._left = 0
        te = headers.get("transfer-encoding", "").lower()
        self.keep_alive = headers.get("connection", "").lower() != "close"
        if no_body:
            self._mode = 0
            self.done = True
        elif "chunked" in te:
            self._mode = 2
        elif "content-length" in headers:
            try:
                self._left = int(headers["content-length"])
            except ValueError:
                raise MalformedResponse(f"bad Content-Length {headers['content-length']!r}") from None
            self._mode = 1
            self.done = self._left == 0
        else:
            self._mode = 3  # until the connection closes
            self.keep_alive = False

    # ---------------------------------------------------------------- fed by the protocol
    def _feed(self, data: bytes) -> bytes:
        """Take body bytes; return what belongs to a following message (normally nothing)."""
        mode = self._mode
        if mode == 1:
            n = self._left
            if len(data) <= n:
                self._push(data)
                self._left = n - len(data)
                if self._left == 0:
                    self._finish()
                return b""
            self._push(data[:n])
            self._left = 0
            self._finish()
            return data[n:]
        if mode == 3:
            self._push(data)
            return b""
        if mode == 2:
            return self._feed_chunked(data)
        return data

    def _feed_chunked(self, data: bytes) -> bytes:
        buf = self._cbuf
        buf += data
        pos = 0
        end = len(buf)
        while pos < end:
            st = self._cstate
            if st == 1:
                take = min(self._left, end - pos)
                self._push(bytes(buf[pos : pos + take]))
                pos += take
                self._left -= take
                if self._left == 0:
                    self._cstate = 2
            elif st == 2:
                if end - pos < 2:
                    break
                pos += 2
                self._cstate = 0
            elif st == 0:
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    if end - pos > 1024:
                        raise MalformedResponse("chunk size line too long")
                    break
                try:
                    size = int(bytes(buf[pos:nl]).split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise MalformedResponse(f"bad chunk size line {bytes(buf[pos:nl])[:40]!r}") from None
                pos = nl + 2
                if size == 0:
                    self._cstate = 3
                else:
                    self._left = size
                    self._cstate = 1
            else:  # trailers: end at an empty line
                nl = buf.find(b"\r\n", pos)
                if nl < 0:
                    break
                empty = nl == pos
                pos = nl + 2
                if empty:
                    rest = bytes(buf[pos:])
                    buf.clear()
                    self._finish()
                    return rest
        del buf[:pos]
        return b""

    def _push(self, data: bytes) -> None:
        if not data:
            return
        self._pieces.append(data)
        self._buffered += len(data)
        if self._buffered > _PAUSE_AT and not self._paused:
            self._paused = True
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        self.done = True
        self._wake()
        self._conn.response_done(self)

    def _fail(self, exc: BaseException) -> None:
        if self.done:
            return
        if self._mode == 3:  # a close-delimited body ends with the connection
            self.done = True
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
        w = self._waiter = asyncio.get_running_loop().create_future()
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
    __slots__ = (
        "head",
        "head_waiter",
        "last_data",
        "lost",
        "no_body",
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
        self.head = bytearray()
        self.resp: Response | None = None
        self.head_waiter: asyncio.Future[Response] | None = None
        self.lost = False
        self.read_timeout = pool.read_timeout
        self.no_body = False
        self.reused = False
        self.waiting: asyncio.Future[Any] | None = None  # what the watchdog may time out
        self.last_data = 0.0  # monotonic time of the last bytes from the backend (or of the send)

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.last_data = _monotonic()
        try:
            resp = self.resp
            if resp is None:
                if self.head_waiter is None:
                    return  # stray bytes on an idle connection: it will not be reused
                self.head += data
                end = self.head.find(_HEAD_END)
                if end < 0:
                    if len(self.head) > _MAX_HEAD:
                        raise MalformedResponse("response head larger than 64 KiB")
                    return
                resp = self._parse_head(bytes(self.head[:end]))
                rest = bytes(self.head[end + 4 :])
                self.head.clear()
                self.resp = resp
                w, self.head_waiter = self.head_waiter, None
                if not w.done():
                    w.set_result(resp)
                if rest:
                    resp._feed(rest)
            else:
                resp._feed(data)
        except MalformedResponse as exc:
            self._broken(exc)

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool.forget(self)
        err = Disconnected(
            f"the backend closed the connection{f' ({exc})' if exc else ''}", got_head=self.resp is not None
        )
        w = self.head_waiter
        if w is not None and not w.done():
            w.set_exception(err)
        if self.resp is not None:
            self.resp._fail(err)

    # ---------------------------------------------------------------- helpers
    def _parse_head(self, head: bytes) -> Response:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise MalformedResponse(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
        try:
            status = int(parts[1])
        except ValueError:
            raise MalformedResponse(f"bad status {parts[1][:20]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep:
                headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        no_body = self.no_body or status in (204, 304) or 100 <= status < 200
        resp = Response(self, status, parts[2].decode("latin-1") if len(parts) > 2 else "", headers, no_body)
        if parts[0] == b"HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
            resp.keep_alive = False
        return resp

    def _broken(self, exc: BaseException) -> None:
        w = self.head_waiter
        if w is not None and not w.done():
            w.set_exception(exc)
        if self.resp is not None:
            self.resp._fail(exc)
        if self.transport is not None:
            self.transport.abort()

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
        loop = asyncio.get_running_loop()
        self.no_body = no_body
        w: asyncio.Future[Response] = loop.create_future()
        self.head_waiter = w
        self.waiting = w
        self.last_data = _monotonic()
        assert self.transport is not None
        self.transport.write(data)
        self.pool.watch(self)
        try:
            return await w
        except BaseException:
            # Timed out or the caller left: the backend must see the connection go, and stop working.
            self.lost = True
            self.pool.forget(self)
            self.transport.abort()
            raise
        finally:
            self.waiting = None
            if self.head_waiter is w:
                self.head_waiter = None


class Pool:
    """Keep-alive connections to one backend (host:port, optional TLS and path prefix)."""

    @classmethod
    def for_url(cls, base_url: str, *, connect_timeout: float, read_timeout: float, max_idle: int = 64) -> Pool:
        u = urlsplit(base_url)
        tls = u.scheme == "https"
        return cls(
            u.hostname or "127.0.0.1",
            u.port or (443 if tls else 80),
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_idle=max_idle,
            ssl=tls,
            prefix=u.path,
        )

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_idle: int = 64,
        idle_ttl_s: float = 30.0,
        ssl: bool = False,
        prefix: str = "",
    ) -> None:
        self.host = host
        self.port = port
        self.ssl = ssl
        self.prefix = prefix.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_idle = max_idle
        self.idle_ttl_s = idle_ttl_s
        self._idle: deque[tuple[_Conn, float]] = deque()
        self._all: set[_Conn] = set()
        self._watchdog: asyncio.TimerHandle | None = None
        # One timer per pool instead of one per request: sweep busy connections for silence.
        self._tick = max(0.05, min(0.5, read_timeout / 4))
        shown = f"[{host}]" if ":" in host else host
        self._host_header = f"Host: {shown}:{port}\r\n".encode("latin-1")

    def put(self, conn: _Conn) -> None:
        if len(self._idle) >= self.max_idle:
            conn.lost = True
            self.forget(conn)
            if conn.transport is not None:
                conn.transport.close()
            return
        self._idle.append((conn, time.monotonic()))

    def forget(self, conn: _Conn) -> None:
        self._all.discard(conn)

    def watch(self, conn: _Conn) -> None:
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(self._tick, self._sweep)

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
            self._watchdog = asyncio.get_running_loop().call_later(self._tick, self._sweep)

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
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
            raise ConnectFailed(f"connect timed out after {self.connect_timeout:g}s") from None
        except OSError as exc:
            raise ConnectFailed(exc.errno, exc.strerror or str(exc)) from None
        self._all.add(conn)
        return conn

    def _take_idle(self) -> _Conn | None:
        now = time.monotonic()
        while self._idle:
            conn, since = self._idle.pop()  # most recently used first: likeliest to be alive
            if conn.lost or conn.transport is None or conn.transport.is_closing():
                continue
            if now - since > self.idle_ttl_s:
                conn.lost = True
                self.forget(conn)
                conn.transport.close()
                continue
            conn.reused = True
            return conn
        return None

    async def request(
        self, method: str, path: str, body: bytes, headers: list[tuple[str, str]], read_timeout: float | None = None
    ) -> Response:
        """Send one request; returns once the response head has arrived."""
        head = [f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1"), self._host_header]
        for k, v in headers:
            head.append(f"{k}: {v}\r\n".encode("latin-1"))
        head.append(b"Content-Length: %d\r\n\r\n" % len(body))
        data = b"".join(head) + body
        no_body = method == "HEAD"
        conn = self._take_idle()
        if conn is not None:
            conn.read_timeout = read_timeout or self.read_timeout
            try:
                return await conn.send(data, no_body)
            except Disconnected as exc:
                if exc.got_head:
                    raise
                # An idle keep-alive connection the backend had already closed: try a fresh one.
        conn = await self._connect()
        conn.read_timeout = read_timeout or self.read_timeout
        return await conn.send(data, no_body)

    async def get(self, path: str, read_timeout: float | None = None) -> Response:
        return await self.request("GET", path, b"", [], read_timeout)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for conn, _ in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.abort()
        self._all.clear()

    @property
    def stats(self) -> dict[str, Any]:
        return {"idle": len(self._idle), "open": len(self._all)}
