"""Just enough HTTP/1.1 framing for the benchmark's own processes (upstream, floor proxy, load generator).

Kept minimal on purpose: every microsecond spent here is charged to the benchmark's
machinery, not to the system under test. Heads are parsed once; bodies are framed by
Content-Length, chunked transfer encoding, or (responses only) the end of the connection.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BodyFramer", "Head", "MalformedHTTP", "parse_head"]

HEAD_END = b"\r\n\r\n"
MAX_HEAD = 64 * 1024


class MalformedHTTP(Exception):
    """The peer sent something that is not HTTP/1.1 framing we can follow."""


@dataclass(slots=True)
class Head:
    """A request or response head: the start line split on spaces, lower-cased headers, head size."""

    start: list[bytes]
    headers: dict[bytes, bytes]
    size: int  # bytes up to and including the blank line

    @property
    def keep_alive(self) -> bool:
        return self.headers.get(b"connection", b"").lower() != b"close"


def parse_head(buf: bytes | bytearray) -> Head | None:
    """Parse a head at the start of ``buf``; None while it is incomplete."""
    end = buf.find(HEAD_END)
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise MalformedHTTP("head larger than 64 KiB")
        return None
    lines = bytes(buf[:end]).split(b"\r\n")
    start = lines[0].split(b" ", 2)
    if len(start) < 2:
        raise MalformedHTTP(f"bad start line {lines[0][:80]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            raise MalformedHTTP(f"bad header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return Head(start, headers, end + 4)


class BodyFramer:
    """Finds where one message body ends, fed incrementally.

    ``feed(data)`` returns ``(used, payload)``: how many bytes of ``data`` belong to this body
    and the de-chunked payload pieces in them. ``done`` turns true at the end of the body;
    bytes past ``used`` belong to the next message on the connection.
    """

    __slots__ = ("_line", "_state", "done", "mode", "remaining")

    def __init__(self, headers: dict[bytes, bytes], *, response: bool, no_body: bool = False) -> None:
        self._state = 0  # chunked: 0 size line, 1 data, 2 data CRLF, 3 trailer
        self._line = bytearray()
        self.remaining = 0
        self.done = False
        te = headers.get(b"transfer-encoding", b"").lower()
        if no_body:
            self.mode = "none"
            self.done = True
        elif b"chunked" in te:
            self.mode = "chunked"
        elif b"content-length" in headers:
            self.mode = "length"
            self.remaining = int(headers[b"content-length"])
            self.done = self.remaining == 0
        elif response:
            self.mode = "close"  # read until the peer closes
        else:
            self.mode = "none"
            self.done = True

    def feed(self, data: bytes | bytearray, collect: bool = True) -> tuple[int, list[bytes]]:
        """Consume body bytes; with ``collect=False`` only the framing is followed (a proxy's case)."""
        if self.done:
            return 0, []
        if self.mode == "length":
            take = min(self.remaining, len(data))
            self.remaining -= take
            self.done = self.remaining == 0
            return take, [bytes(data[:take])] if take and collect else []
        if self.mode == "close":
            return len(data), [bytes(data)] if collect else []
        return self._feed_chunked(bytes(data), collect)

    def _feed_chunked(self, data: bytes, collect: bool) -> tuple[int, list[bytes]]:
        pos, n, out = 0, len(data), []
        while pos < n and not self.done:
            if self._state == 1:  # chunk data
                take = min(self.remaining, n - pos)
                if collect:
                    out.append(data[pos : pos + take])
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self._state = 2
                continue
            # line-oriented states: size line, CRLF after data, trailer lines
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._line += data[pos:]
                if len(self._line) > 4096:
                    raise MalformedHTTP("chunk framing line too long")
                return n, out
            line = bytes(self._line + data[pos:nl]).rstrip(b"\r")
            self._line.clear()
            pos = nl + 1
            if self._state == 0:
                try:
                    size = int(line.split(b";", 1)[0], 16)
                except ValueError:
                    raise MalformedHTTP(f"bad chunk size {line[:40]!r}") from None
                if size == 0:
                    self._state = 3
                else:
                    self.remaining, self._state = size, 1
            elif self._state == 2:
                if line:
                    raise MalformedHTTP("missing CRLF after chunk data")
                self._state = 0
            elif not line:  # state 3: an empty line ends the trailer
                self.done = True
        return pos, out
