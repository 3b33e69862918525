"""The floor: a minimal forwarding proxy written with bare asyncio protocols.

It does the least any Python HTTP gateway must do: follow HTTP/1.1 framing on both sides,
keep both connections alive, and pass bytes through the moment they arrive (so SSE chunks
are never batched). No routing, no JSON, no telemetry. What it costs is the practical floor
for a Python gateway on this machine; the gateway is measured against it.

``python -m bench.floor --upstream 127.0.0.1:PORT [--port 0] [--cpu N]`` prints
``LISTENING <host> <port>`` and stops on SIGTERM or when its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

from .http1 import BodyFramer, Head, MalformedHTTP, parse_head
from .proc import pin_to_cpu, serve_until_stopped

__all__ = ["start_floor"]

_BG_BODY = b'{"error":{"message":"upstream unreachable","code":502}}'
BAD_GATEWAY = (
    b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
    b"Connection: close\r\n\r\n%s" % (len(_BG_BODY), _BG_BODY)
)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _UpstreamSide(asyncio.Protocol):
    """The proxy's keep-alive connection to the upstream, owned by one client connection."""

    def __init__(self, client: _ClientSide) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.hbuf = bytearray()
        self.head: Head | None = None
        self.framer: BodyFramer | None = None
        self.no_body = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def expect(self, method: bytes) -> None:
        self.head, self.framer, self.no_body = None, None, method == b"HEAD"
        self.hbuf.clear()

    def data_received(self, data: bytes) -> None:
        self.client.write(data)  # pass through first; framing only decides when the answer ends
        try:
            if self.head is None:
                self.hbuf += data
                self.head = parse_head(self.hbuf)
                if self.head is None:
                    return
                status = int(self.head.start[1])
                no_body = self.no_body or status in (204, 304) or 100 <= status < 200
                self.framer = BodyFramer(self.head.headers, response=True, no_body=no_body)
                rest = bytes(self.hbuf[self.head.size :])
                self.hbuf.clear()
                self.framer.feed(rest, collect=False)
            else:
                assert self.framer is not None
                self.framer.feed(data, collect=False)
        except (MalformedHTTP, ValueError):
            self.client.close()
            return
        if self.framer.done:
            self.client.response_done(self.head.keep_alive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.framer is not None and self.framer.mode == "close" and not self.framer.done:
            self.client.close()  # a close-delimited answer ends here
        elif self.client.busy:
            self.client.close()  # the upstream died mid-answer
        self.client.upstream = None


class _ClientSide(asyncio.Protocol):
    """One caller connection: reads a request, forwards it, relays the answer, then the next."""

    def __init__(self, up_host: str, up_port: int) -> None:
        self.up_host, self.up_port = up_host, up_port
        self.transport: asyncio.Transport | None = None
        self.upstream: _UpstreamSide | None = None
        self.buf = bytearray()
        self.out = bytearray()  # the request being framed, as raw bytes
        self.head: Head | None = None
        self.framer: BodyFramer | None = None
        self.busy = False
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._pump()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def response_done(self, upstream_keep_alive: bool) -> None:
        self.busy = False
        if not upstream_keep_alive and self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()
        if self.close_after:
            self.close()
        elif self.buf:
            self._pump()

    def _pump(self) -> None:
        try:
            if self.head is None:
                self.head = parse_head(self.buf)
                if self.head is None:
                    return
                self.out += self.buf[: self.head.size]
                del self.buf[: self.head.size]
                self.framer = BodyFramer(self.head.headers, response=False)
            assert self.framer is not None
            if not self.framer.done:
                used, _ = self.framer.feed(self.buf, collect=False)
                self.out += self.buf[:used]
                del self.buf[:used]
                if not self.framer.done:
                    return
        except (MalformedHTTP, ValueError):
            self.write(BAD_REQUEST)
            self.close()
            return
        head, raw = self.head, bytes(self.out)
        self.head, self.framer = None, None
        self.out.clear()
        self.busy = True
        self.close_after = not head.keep_alive
        up = self.upstream
        if up is not None and up.transport is not None:
            up.expect(head.start[0])
            up.transport.write(raw)
        else:
            asyncio.get_running_loop().create_task(self._connect_and_send(head.start[0], raw))

    async def _connect_and_send(self, method: bytes, raw: bytes) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(lambda: _UpstreamSide(self), self.up_host, self.up_port)
        except OSError:
            self.write(BAD_GATEWAY)
            self.close()
            return
        self.upstream = up
        up.expect(method)
        assert up.transport is not None
        up.transport.write(raw)


async def start_floor(upstream_host: str, upstream_port: int, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _ClientSide(upstream_host, upstream_port), host, port, backlog=1024)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n\n")[0])
    ap.add_argument("--upstream", required=True, help="HOST:PORT of the upstream")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = ap.parse_args(argv)
    pin_to_cpu(args.cpu)
    up_host, _, up_port = args.upstream.rpartition(":")
    return serve_until_stopped(lambda: start_floor(up_host or "127.0.0.1", int(up_port), args.host, args.port))


if __name__ == "__main__":
    raise SystemExit(main())
