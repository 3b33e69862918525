"""Relay an upstream SSE stream line by line: forward as it arrives, strip leaked thinking, take notes.

Events are only re-serialised when the think stripper changed them; everything else leaves as
the backend wrote it.

Per-event tests for a substring use ``bytes.find``: ``x in some_bytes`` first tries ``x`` as an
integer and raises (and clears) a TypeError before it searches.
"""

from __future__ import annotations

import time
from typing import Any

from .jsoncodec import dumps, loads
from .thinking import ThinkStripper

__all__ = ["SseRelay", "dump_bytes", "error_event"]

DONE = b"data: [DONE]"


def dump_bytes(obj: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return dumps(obj)


def error_event(message: str, type_: str, code: str | int | None) -> bytes:
    """An OpenAI-style in-stream error followed by a clean end of stream."""
    return (
        b"data: "
        + dump_bytes({"error": {"message": message, "type": type_, "param": None, "code": code}})
        + b"\n\n"
        + DONE
        + b"\n\n"
    )


class SseRelay:
    __slots__ = (
        "_buf",
        "_multi",
        "_settled",
        "_template",
        "content",
        "done",
        "events",
        "first_token_at",
        "leaked",
        "strippers",
        "timings",
        "upstream_error",
        "usage",
    )

    def __init__(self, *, strip: bool, capture: bool, multi: bool = False) -> None:
        self._buf = b""
        self.done = False  # saw data: [DONE]
        self.strippers: dict[int, ThinkStripper] | None = {} if strip else None
        self.first_token_at: float | None = None
        self.usage: dict[str, Any] | None = None
        self.timings: dict[str, Any] | None = None
        self.leaked = False
        self.content: list[str] | None = [] if capture else None
        self.events = 0  # chunks that carried content (a token count when the backend gives none)
        self.upstream_error: str | None = None
        self._template: dict[str, Any] = {}
        self._settled = False  # first token seen, no stripper still deciding: stop parsing chunks
        self._multi = multi  # n > 1: choices may start late, keep parsing

    def feed(self, chunk: bytes) -> bytes:
        if (
            self._settled
            and not self._buf
            and chunk[-1:] == b"\n"
            and chunk.find(b'"usage"') < 0
            and chunk.find(b'"timings"') < 0
            and chunk.find(b'"error"') < 0
            and chunk.find(b"[DONE]") < 0
        ):
            # Whole lines of ordinary events once settled: count them and pass the bytes on as they
            # came (what the line-by-line path would rebuild, without splitting and joining).
            self.events += chunk.count(b"\ndata:") + chunk.startswith(b"data:")
            return chunk
        buf = self._buf + chunk
        nl = buf.rfind(b"\n")
        if nl < 0:
            self._buf = buf
            return b""
        self._buf = buf[nl + 1 :]
        lines = buf[: nl + 1].split(b"\n")
        lines.pop()  # the empty string after the last newline
        out = bytearray()
        for line in lines:
            out += self._line(line)
            out += b"\n"
        return bytes(out)

    def _line(self, line: bytes) -> bytes:
        if not line.startswith(b"data:"):
            return line
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return self.flush() + line
        if (
            self._settled
            and payload.find(b'"usage"') < 0
            and payload.find(b'"timings"') < 0
            and payload.find(b'"error"') < 0
        ):
            # Nothing left to learn from an ordinary chunk: count it and pass it on unparsed.
            self.events += 1
            return line
        try:
            obj = loads(payload)
        except ValueError:
            return line
        if not isinstance(obj, dict):
            return line
        err = obj.get("error")
        if err is not None:
            self.upstream_error = err.get("message") if isinstance(err, dict) else str(err)
            return line
        if obj.get("usage"):
            self.usage = obj["usage"]
        if obj.get("timings"):
            self.timings = obj["timings"]
        choices = obj.get("choices")
        if not isinstance(choices, list):
            return line
        modified = False
        for ch in choices:
            if not isinstance(ch, dict):
                continue
            delta = ch.get("delta")
            if not isinstance(delta, dict):
                continue
            c = delta.get("content")
            if (isinstance(c, str) and c) or delta.get("reasoning_content"):
                self.events += 1
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
            if self.strippers is not None:
                idx = ch.get("index", 0)
                st = self.strippers.get(idx)
                if st is None:
                    st = self.strippers[idx] = ThinkStripper()
                    self._template = {k: obj[k] for k in ("id", "object", "created", "model") if k in obj}
                fed = isinstance(c, str) and bool(c)
                fin = ch.get("finish_reason") is not None
                if not st.passthrough and (fed or fin):
                    nc, nr = st.feed(c) if isinstance(c, str) and c else ("", "")
                    if fin:
                        fc, fr = st.finish()
                        nc, nr = nc + fc, nr + fr
                    if (fed or nc) and nc != c:
                        delta["content"] = nc
                        modified = True
                    if nr:
                        delta["reasoning_content"] = (delta.get("reasoning_content") or "") + nr
                        modified = True
                    c = delta.get("content")
                    if st.leaked:
                        self.leaked = True
            if self.content is not None and isinstance(c, str):
                self.content.append(c)
        if self.first_token_at is not None and self.content is None and not self._multi:
            strippers = self.strippers
            self._settled = strippers is None or (bool(strippers) and all(x.passthrough for x in strippers.values()))
        return b"data: " + dump_bytes(obj) if modified else line

    def flush(self) -> bytes:
        """Release text a stripper still holds (end of stream) as a synthetic chunk before [DONE]."""
        if not self.strippers:
            return b""
        out = bytearray()
        for idx, st in self.strippers.items():
            if st.passthrough:
                continue
            fc, fr = st.finish()
            if not fc and not fr:
                continue
            delta: dict[str, Any] = {}
            if fc:
                delta["content"] = fc
                if self.content is not None:
                    self.content.append(fc)
            if fr:
                delta["reasoning_content"] = fr
            ev = dict(self._template)
            ev.setdefault("object", "chat.completion.chunk")
            ev["choices"] = [{"index": idx, "delta": delta, "finish_reason": None}]
            out += b"data: " + dump_bytes(ev) + b"\n\n"
        return bytes(out)
