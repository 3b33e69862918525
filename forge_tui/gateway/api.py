"""The OpenAI-compatible surface: chat, completions, embeddings, models, audio.

Hot path: read body (capped), parse with the stdlib, a few type checks, a dict lookup for the
route, one upstream request, relay. One ``RequestRecord`` per request, whatever the outcome.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import itertools
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from ..telemetry.records import ErrorClass, RequestRecord
from . import http1
from .audio import FormPart, b64_audio_duration, check_audio
from .backends import BackendBad
from .errors import (
    CallerError,
    Forbidden,
    GatewayError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from .jsoncodec import loads, peek
from .openapi import openapi_bytes
from .routing import Route, pin
from .stream import SseRelay, dump_bytes, error_event
from .thinking import strip_message
from .upstream import FormPayload, JsonPayload, Opened, Payload
from .validate import (
    check_chat,
    check_completions,
    check_embeddings,
    check_model_limits,
    check_transcription_fields,
    parse_json_object,
    scan_parts,
)

if TYPE_CHECKING:
    from .app import Gateway

__all__ = ["Ctx", "OpenAIApi"]

log = logging.getLogger("forge_tui.gateway")

_UPSTREAM_READ_ERRORS = (http1.Disconnected, http1.MalformedResponse)
_DRAIN_S = 1.0  # after [DONE]: how long the end of the chunked body may take before the connection is dropped
# aiohttp >= 3.10.6 raises its own subclass of ConnectionResetError; older ones the builtin.
_CLIENT_GONE = (ConnectionResetError, getattr(aiohttp, "ClientConnectionResetError", ConnectionResetError))
_JSON_FORMATS = frozenset({"json_object", "json_schema"})
# Request ids: a per-process random prefix and a counter (unique, and cheaper than urandom per request).
_RID_PREFIX = os.urandom(4).hex()
_rid_counter = itertools.count(1)


def _new_request_id() -> str:
    return f"{_RID_PREFIX}{next(_rid_counter):08x}"


# A caller's x-forge-source is a short label; anything else is stored as "invalid" (bounded cardinality).
_SOURCE_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")


def _source(header: str | None, key_name: str | None) -> str | None:
    if header is not None:
        s = header.strip().lower()
        return s if _SOURCE_RE.fullmatch(s) else "invalid"
    return key_name


def _sse_response_class(base: type[web.StreamResponse] = web.StreamResponse) -> type[web.StreamResponse]:
    """The response class for relayed streams: headers leave with the first chunk when we can.

    aiohttp >= 3.12 sends a StreamResponse's headers on ``prepare()`` unless the (private) class
    flag ``_send_headers_immediately`` is false, in which case they go out with the first write
    (one send, not two: a smaller time to first chunk). Only set the flag where it exists with
    that meaning; elsewhere (older or newer aiohttp) the public behaviour, headers sent on
    ``prepare()``, is correct too, just one packet more.
    """
    if getattr(base, "_send_headers_immediately", None) is not True:
        return base

    class _SseResponse(base):  # type: ignore[misc,valid-type]
        _send_headers_immediately = False

    return _SseResponse


_SseResponse = _sse_response_class()


def _asked(model: object) -> str | None:
    """The model name as the caller sent it, cut short (it is shown on 404 rows, never trusted)."""
    return model[:200] if isinstance(model, str) else None


class _Redispatch(Exception):
    """A stream's backend turned bad before anything reached the caller: send the request elsewhere."""

    def __init__(self, backend: str) -> None:
        super().__init__(backend)
        self.backend = backend


# JSON of the names answers carry (roles, model ids, aliases: few and repeated). Bounded, since a
# name the caller sent that routed through an alias could be anything.
@functools.lru_cache(maxsize=1024)
def _name_json(name: str) -> bytes:
    return dump_bytes(name)


class Ctx:
    """Per-request state: the record being filled and the headers every answer carries."""

    __slots__ = ("drop_usage", "headers", "name_json", "rec", "t0")

    def __init__(self, rec: RequestRecord, t0: float) -> None:
        self.rec = rec
        self.t0 = t0
        self.headers: dict[str, str] = {"x-forge-request-id": rec.request_id}
        self.name_json: bytes | None = None  # the name answers carry (JSON), set once routed
        self.drop_usage = False  # a stream whose usage chunk forge asked for, not the caller

    def routed(self, route: Route) -> None:
        self.rec.role = route.role
        self.rec.model = route.model
        # Answers carry the name the caller used (role, model id or alias), never the backend's GGUF path;
        # the served model is in x-forge-route.
        asked = self.rec.asked
        self.name_json = _name_json(asked if asked and asked != "auto" else (route.role or route.model))
        self.headers["x-forge-route"] = route.route_header
        for k, v in route.headers:
            self.headers[k] = v

    def served(self, opened: Opened) -> None:
        c = opened.cand
        rec = self.rec
        rec.model, rec.host, rec.backend = c.model, c.host, c.backend
        rec.fallback = opened.fallback
        rec.inflight = opened.backend.limiter.inflight - 1  # others on this backend (this one holds a slot)
        rec.cold_start = opened.cold_start
        if opened.spill_from is not None:  # spill-over from a full backend: not a failure fallback
            rec.spill = True
            rec.extra["spill_from"] = opened.spill_from
        if c.fallback_of:
            rec.extra["fallback_of"] = c.fallback_of
        h = self.headers
        h["x-forge-route"] = (
            c.route_header if opened.spill_from is None else f"{c.route_header}; spill={opened.spill_from}"
        )
        h.pop("Deprecation", None)
        h.pop("Sunset", None)
        for k, v in c.headers:
            h[k] = v


def _usage_into(rec: RequestRecord, usage: Any, timings: Any) -> None:
    if isinstance(usage, dict):
        pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(pt, int):
            rec.tokens_in = pt
        if isinstance(ct, int):
            rec.tokens_out = ct
    if isinstance(timings, dict):
        if rec.tokens_in is None and isinstance(timings.get("prompt_n"), int):
            # llama.cpp's prompt_n leaves out prompt-cache hits; cache_n counts them.
            cache_n = timings.get("cache_n")
            rec.tokens_in = timings["prompt_n"] + (cache_n if isinstance(cache_n, int) else 0)
        if rec.tokens_out is None and isinstance(timings.get("predicted_n"), int):
            rec.tokens_out = timings["predicted_n"]
        pps = timings.get("predicted_per_second")
        if isinstance(pps, (int, float)) and pps > 0:
            rec.tokens_per_s = float(pps)


# Token counts of a large answer straight from its bytes (parsing megabytes of embeddings for them
# would cost more). Each key is found with a plain search (inside JSON strings quotes are escaped,
# so a quoted key is structural) and its number read right after it.
_NUM_AFTER_KEY = re.compile(rb"\s*:\s*([0-9][0-9.eE+-]*)")
_PROMPT_TOKENS = b'"prompt_tokens"'
_COMPLETION_TOKENS = b'"completion_tokens"'


def _num_after(data: bytes, key: bytes, start: int) -> bytes | None:
    i = data.find(key, start)
    if i < 0:
        return None
    m = _NUM_AFTER_KEY.match(data, i + len(key))
    return m.group(1) if m is not None else None


def _usage_from_bytes(rec: RequestRecord, data: bytes) -> None:
    obj = peek(data)
    if obj is not None:  # a small answer: parsed whole (orjson) is cheaper than searched for keys
        if isinstance(obj, dict):
            _usage_into(rec, obj.get("usage"), obj.get("timings"))
        return
    if data.find(b"_tokens") < 0 and data.find(b"predicted_n") < 0:  # find: see _swap_model
        return
    u, t = data.rfind(b'"usage"'), data.rfind(b'"timings"')
    start = min(u, t) if u >= 0 and t >= 0 else max(u, t, 0)
    try:
        pt = _num_after(data, _PROMPT_TOKENS, start)
        if pt is not None:
            rec.tokens_in = int(pt)
        else:
            pn = _num_after(data, b'"prompt_n"', start)
            if pn is not None:
                # llama.cpp's prompt_n leaves out prompt-cache hits; cache_n counts them.
                rec.tokens_in = int(pn) + int(_num_after(data, b'"cache_n"', start) or b"0")
        ct = _num_after(data, _COMPLETION_TOKENS, start) or _num_after(data, b'"predicted_n"', start)
        if ct is not None:
            rec.tokens_out = int(ct)
        pps = _num_after(data, b'"predicted_per_second"', start)
        if pps is not None and float(pps) > 0:
            rec.tokens_per_s = float(pps)
    except ValueError:
        pass


# A structural "model" field (inside JSON strings quotes are escaped, so this never matches text).
# The string is matched as runs of plain bytes between escapes ("unrolled"): the same strings as
# ("(?:[^"\\]|\\.)*"), without a group step per byte.
_MODEL_FIELD = re.compile(rb'"model"\s*:\s*("[^"\\]*(?:\\.[^"\\]*)*")')


def _rename(data: bytes, name_json: bytes | None) -> bytes:
    """Put the caller's model name in place of the backend's in an answer (whole JSON or whole SSE lines)."""
    if name_json is None or data.find(b'"model"') < 0:
        return data
    field = b'"model":' + name_json
    return _MODEL_FIELD.sub(lambda _m: field, data)


# The backends' own names, as raw JSON strings: few, and the same on every answer.
@functools.lru_cache(maxsize=256)
def _served_name(raw: bytes) -> str | None:
    return _served_name_of(raw)


def _served_name_of(raw: bytes) -> str | None:
    """A backend's ``model`` value (its JSON string, quotes included), header-safe."""
    if b"\\" in raw:
        try:
            name = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(name, str):
            return None
    else:
        name = raw[1:-1].decode("utf-8", "replace")
    name = name[:300]
    if name.isascii() and name.isprintable():
        return name or None
    return "".join(ch for ch in name if ch.isprintable() and ord(ch) < 128) or None


def _swap_model(data: bytes, name_json: bytes) -> tuple[bytes, str | None]:
    """One pass over a whole JSON answer: the backend's own name (for ``x-forge-upstream-model``)
    and the answer with the caller's name in its place."""
    i = data.find(b'"model"')
    if i < 0:
        return data, None
    m = _MODEL_FIELD.match(data, i)  # anchored where the plain search landed: no scan
    if m is None:  # "model" with a value that is not a string: look further on
        m = _MODEL_FIELD.search(data, i + 7)
        if m is None:
            return data, None
    field = b'"model":' + name_json
    tail = data[m.end() :]
    if tail.find(b'"model"') >= 0:  # not ``in``: on bytes it first raises (and clears) a TypeError
        tail = _MODEL_FIELD.sub(lambda _m: field, tail)
    return data[: m.start()] + field + tail, _served_name(m.group(1))


def _ask_usage(body: dict[str, Any], ctx: Ctx) -> dict[str, Any]:
    """Streams always ask the backend for usage (exact prompt tokens, cache hits included); the extra
    usage chunk is dropped again when the caller did not ask for it."""
    so = body.get("stream_options")
    if body.get("stream") is not True or (isinstance(so, dict) and so.get("include_usage") is True):
        return body
    ctx.drop_usage = True
    return {**body, "stream_options": {**(so if isinstance(so, dict) else {}), "include_usage": True}}


def _drop_usage_events(piece: bytes) -> bytes:
    """Remove the usage-only events (``choices: []``) from whole SSE lines."""
    out: list[bytes] = []
    skip_blank = False
    for line in piece.split(b"\n"):
        if skip_blank and line in (b"", b"\r"):
            skip_blank = False
            continue
        skip_blank = False
        if line.startswith(b"data:") and b'"usage"' in line:
            try:
                obj = json.loads(line[5:])
            except ValueError:
                obj = None
            if isinstance(obj, dict) and obj.get("choices") == []:
                skip_blank = True
                continue
        out.append(line)
    return b"\n".join(out)


def _content_is_json(text: str) -> bool:
    if not text.strip():
        return False
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


class OpenAIApi:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        s = gw.catalog.gateway
        self.max_body = int(s.max_body_mb * 1024 * 1024)
        self.max_body_mb = s.max_body_mb
        self.audio_max_s = s.audio_max_seconds
        self.body_timeout_s = s.body_timeout_s
        self._keys = tuple(f"Bearer {k}".encode() for k in gw.api_keys)
        named = s.named_api_keys  # name -> key: accepted too, and the name is the record's source
        self._keys += tuple(f"Bearer {k}".encode() for k in named.values())
        self._key_names = {f"Bearer {k}".encode(): n for n, k in named.items()}
        self._placement_tokens: tuple[bytes, ...] = ()

    def allow_placement(self, token: str) -> None:
        """Accept ``x-forge-placement`` from callers sending this token (the admin API's; the gateway does not
        hold it, so whoever mounts the admin API hands it over). Without one, every pin is refused."""
        if token:
            self._placement_tokens += (token.encode(),)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self._wrap("/v1/chat/completions", self.chat)),
            web.post("/v1/completions", self._wrap("/v1/completions", self.completions)),
            web.post("/v1/embeddings", self._wrap("/v1/embeddings", self.embeddings)),
            web.post("/v1/audio/transcriptions", self._wrap("/v1/audio/transcriptions", self.transcriptions)),
            web.post("/v1/audio_qa", self._wrap("/v1/audio_qa", self.audio_qa)),
            web.get("/v1/models", self.models),
            web.get("/v1/models/{model_id:.+}", self.model),
            web.get("/openapi.json", self.openapi),
        ]

    # ------------------------------------------------------------------ plumbing
    def _check_key(self, request: web.Request) -> str | None:
        """Raise Unauthorized unless the caller sent an accepted key; returns that key's name if it has one."""
        if not self._keys:
            return None
        got = request.headers.get("Authorization", "").encode()
        for k in self._keys:
            if hmac.compare_digest(got, k):
                return self._key_names.get(k)
        raise Unauthorized(
            "Incorrect or missing API key: send 'Authorization: Bearer <key>' with a key this gateway accepts."
        )

    def _wrap(
        self, endpoint: str, impl: Callable[[web.Request, Ctx], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        gw = self.gw

        async def handler(request: web.Request) -> web.StreamResponse:
            rid = request.headers.get("x-request-id") or _new_request_id()
            rec = RequestRecord(time=time.time(), request_id=rid[:64], endpoint=endpoint)
            ctx = Ctx(rec, time.perf_counter())
            gw._enter()
            try:
                label = request.headers.get("x-forge-source")
                key_name = self._check_key(request) if self._keys else None
                rec.source = _source(label, key_name) if label is not None else key_name
                resp = await impl(request, ctx)
                if not rec.status:
                    rec.status = resp.status
                return resp
            except GatewayError as exc:
                return self._error(ctx, exc)
            except asyncio.CancelledError:
                rec.status = 499
                rec.error_class = ErrorClass.CLIENT_GONE
                rec.error = "client disconnected before the answer was complete"
                if gw.upstream_stopping():  # cancelled by the gateway stopping, not by the caller
                    rec.status = 503
                    rec.error_class = ErrorClass.GATEWAY_SHUTDOWN
                    rec.error = "cut off by the gateway stopping before the answer was complete"
                raise
            except Exception as exc:  # a bug in forge: the traceback for the operator, no internal text for the caller
                log.exception("gateway error on %s (request %s)", endpoint, rid)
                err = GatewayError(f"gateway error (logged on the gateway as request {rec.request_id})")
                resp = self._error(ctx, err)
                rec.error = f"{exc.__class__.__name__}: {exc}"[:500]
                return resp
            finally:
                rec.latency_ms = (time.perf_counter() - ctx.t0) * 1000.0
                if rec.tokens_out and rec.tokens_per_s is None:
                    gen_ms = rec.latency_ms - (rec.ttft_ms or 0.0)
                    if gen_ms > 0:
                        rec.tokens_per_s = rec.tokens_out / (gen_ms / 1000.0)
                gw._leave()
                try:
                    gw.telemetry.record(rec)
                except Exception:  # telemetry must never take a request down
                    log.exception("telemetry.record failed")

        return handler

    def _error(self, ctx: Ctx, exc: GatewayError) -> web.Response:
        rec = ctx.rec
        rec.status = exc.status
        rec.error_class = exc.error_class
        rec.error = exc.upstream or exc.message
        c = exc.candidate
        if c is not None:
            rec.model, rec.host, rec.backend = c.model, c.host, c.backend
            ctx.headers["x-forge-route"] = c.route_header
        headers = dict(ctx.headers)
        headers.update(exc.headers)
        return web.Response(status=exc.status, body=exc.body_bytes(), headers=headers, content_type="application/json")

    async def _read(self, request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > self.max_body:
            raise self._too_large(request.content_length)
        try:
            if request.content.is_eof():
                # The whole body came with the head (the usual small JSON request): nothing to wait
                # for, so no timer either.
                return await request.read()
            async with asyncio.timeout(self.body_timeout_s):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large(None) from None
        except TimeoutError:
            raise self._slow_body() from None

    def _slow_body(self) -> CallerError:
        # The connection is dropped after the answer: the rest of a trickled body is never read.
        return CallerError(
            f"request body did not arrive within {self.body_timeout_s:g} s",
            status=408,
            code="request_timeout",
            headers={"Connection": "close"},
        )

    def _too_large(self, size: int | None) -> PayloadTooLarge:
        got = f" ({size / 1048576:.2f} MB)" if size else ""
        return PayloadTooLarge(f"request body{got} exceeds this gateway's limit of {self.max_body_mb:g} MB")

    async def _json(self, request: web.Request) -> dict[str, Any]:
        return parse_json_object(await self._read(request))

    # ------------------------------------------------------------------ endpoints
    async def models(self, request: web.Request) -> web.Response:
        rid = _new_request_id()
        try:
            self._check_key(request)
        except GatewayError as exc:
            return web.Response(
                status=exc.status,
                body=exc.body_bytes(),
                content_type="application/json",
                headers={"x-forge-request-id": rid},
            )
        return web.Response(
            body=self.gw.table().models_json, content_type="application/json", headers={"x-forge-request-id": rid}
        )

    async def model(self, request: web.Request) -> web.Response:
        """``GET /v1/models/{id}``: one role, model or alias, as OpenAI's retrieve answers it."""
        rid = _new_request_id()
        try:
            self._check_key(request)
            mid = request.match_info["model_id"]
            entry = self.gw.table().model_entry(mid)
            if entry is None:
                raise NotFound(f"The model {mid[:200]!r} does not exist (GET /v1/models lists them)", param="model")
        except GatewayError as exc:
            return web.Response(
                status=exc.status,
                body=exc.body_bytes(),
                content_type="application/json",
                headers={"x-forge-request-id": rid},
            )
        return web.Response(body=entry, content_type="application/json", headers={"x-forge-request-id": rid})

    async def openapi(self, request: web.Request) -> web.Response:
        """The gateway's own OpenAPI description (public: it names no role, model or host)."""
        return web.Response(
            body=openapi_bytes(), content_type="application/json", headers={"x-forge-request-id": _new_request_id()}
        )

    def _limits(self, body: dict[str, Any], route: Route) -> None:
        if "max_tokens" not in body and "max_completion_tokens" not in body:
            return
        m = self.gw.catalog.models.get(route.model)
        if m is not None:
            check_model_limits(body, route.model, m.max_output_tokens, m.context_tokens)

    async def chat(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        body = await self._json(request)
        check_chat(body)
        model = body.get("model")
        ctx.rec.asked = model[:200] if isinstance(model, str) else None  # _asked, inline on this path
        route = self.gw.table().resolve(model, "chat", body)
        if "x-forge-placement" in request.headers:
            route = self._pinned(request, route)
        ctx.routed(route)
        self._limits(body, route)
        image, audio = scan_parts(body)
        ctx.rec.image = image
        for ia in audio:
            fmt = ia.get("format")
            if fmt in (None, "wav"):
                b64_audio_duration(ia.get("data"), self.audio_max_s, what="input_audio")
        stream = body.get("stream") is True
        ctx.rec.stream = stream
        payload = JsonPayload(
            _ask_usage(body, ctx) if stream else body,
            chat=True,
            thinking_header=request.headers.get("x-forge-thinking"),
        )
        rf = body.get("response_format")
        want_json = isinstance(rf, dict) and rf.get("type") in _JSON_FORMATS
        if want_json:
            ctx.rec.structured = True  # set False where the answer does not parse
        n = body.get("n")
        skip: frozenset[str] = frozenset()
        while True:  # bounded: each round leaves one more backend out, and open() fails when none is left
            opened = await self.gw.upstream.open(route, "/v1/chat/completions", payload, image=image, skip=skip)
            ctx.served(opened)
            decision = payload.decision(opened.cand)
            ctx.rec.thinking_injected = decision.injected_off
            if decision.label is not None:
                ctx.rec.extra["thinking"] = decision.label
            if not stream:
                return await self._relay_json(ctx, opened, chat=True, strip=decision.off, want_json=want_json)
            try:
                return await self._relay_stream(
                    request, ctx, opened, strip=decision.off, want_json=want_json, multi=isinstance(n, int) and n > 1
                )
            except _Redispatch as again:
                skip |= {again.backend}
                ctx.rec.extra["redispatched_from"] = ",".join(sorted(skip))

    async def completions(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        body = await self._json(request)
        check_completions(body)
        return await self._plain_json(request, ctx, body, "completions", "/v1/completions")

    async def embeddings(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        body = await self._json(request)
        check_embeddings(body)
        return await self._plain_json(request, ctx, body, "embeddings", "/v1/embeddings")

    async def _plain_json(
        self, request: web.Request, ctx: Ctx, body: dict[str, Any], kind: str, path: str
    ) -> web.StreamResponse:
        ctx.rec.asked = _asked(body.get("model"))
        route = self.gw.table().resolve(body.get("model"), kind, body)
        route = self._pinned(request, route)
        ctx.routed(route)
        self._limits(body, route)
        stream = body.get("stream") is True
        ctx.rec.stream = stream
        if kind == "completions":
            body = _ask_usage(body, ctx)
        payload = JsonPayload(body, chat=False, thinking_header=None)
        skip: frozenset[str] = frozenset()
        while True:  # bounded: each round leaves one more backend out, and open() fails when none is left
            opened = await self.gw.upstream.open(route, path, payload, skip=skip)
            ctx.served(opened)
            try:
                if stream:
                    return await self._relay_stream(request, ctx, opened, strip=False, want_json=False)
                return await self._relay_json(ctx, opened, chat=False, strip=False, want_json=False)
            except _Redispatch as again:
                skip |= {again.backend}
                ctx.rec.extra["redispatched_from"] = ",".join(sorted(skip))

    async def _form(self, request: web.Request) -> list[FormPart]:
        ctype = request.content_type
        if not ctype.startswith("multipart/"):
            raise CallerError(f"expected a multipart/form-data body, got {ctype or 'no content type'}")
        if request.content_length is not None and request.content_length > self.max_body:
            raise self._too_large(request.content_length)
        try:
            async with asyncio.timeout(self.body_timeout_s):
                form = await request.post()
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large(None) from None
        except TimeoutError:
            raise self._slow_body() from None
        except ValueError as exc:
            raise CallerError(f"unreadable multipart body: {exc}") from None
        parts: list[FormPart] = []
        for name, value in form.items():
            if isinstance(value, web.FileField):
                parts.append(FormPart(name, value.file.read(), value.filename, value.content_type))
            else:
                parts.append(FormPart(name, str(value).encode()))
        return parts

    async def transcriptions(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        parts = await self._form(request)
        if not any(p.name == "file" and p.filename is not None for p in parts):
            raise CallerError("Missing required parameter: 'file' (the audio file part).", param="file")
        check_transcription_fields({p.name: p.data.decode("utf-8", "replace") for p in parts if p.filename is None})
        audio = next(p for p in parts if p.name == "file" and p.filename is not None)
        check_audio(audio.data, self.audio_max_s, what="file")
        route = self._route_form(ctx, parts, "transcriptions", request)
        return await self._forward(ctx, route, FormPayload(parts), "/v1/audio/transcriptions")

    async def audio_qa(self, request: web.Request, ctx: Ctx) -> web.StreamResponse:
        if request.content_type.startswith("multipart/"):
            parts = await self._form(request)
            route = self._route_form(ctx, parts, "audio_qa", request)
            audio = next((p for p in parts if p.name in ("file", "audio")), None)
            if audio is None:
                audio = next((p for p in parts if (p.content_type or "").startswith("audio/")), None)
            if audio is None:
                raise CallerError(
                    "Missing the audio part: send the WAV as a 'file' (or 'audio') form field.", param="file"
                )
            check_audio(audio.data, self.audio_max_s, what="audio")
            image = any(p.name == "image" or (p.content_type or "").startswith("image/") for p in parts)
            ctx.rec.image = image
            return await self._forward(ctx, route, FormPayload(parts), "/v1/audio_qa", image=image)
        body = await self._json(request)
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise CallerError("Invalid type for 'model': expected a string.", param="model")
        ctx.rec.asked = _asked(model)
        route = self.gw.table().resolve(model, "audio_qa", body)
        route = self._pinned(request, route)
        ctx.routed(route)
        audio_field = body.get("audio", body.get("input_audio"))
        if audio_field is None:
            raise CallerError(
                'Missing required parameter: \'audio\' (base64 WAV, or {"data": ..., "format": "wav"}).', param="audio"
            )
        data = audio_field.get("data") if isinstance(audio_field, dict) else audio_field
        b64_audio_duration(data, self.audio_max_s, what="audio")
        return await self._forward(ctx, route, JsonPayload(body, chat=False, thinking_header=None), "/v1/audio_qa")

    def _pinned(self, request: web.Request, route: Route) -> Route:
        """``x-forge-placement: <host or backend>`` serves only from there (eval compare runs); admin token only."""
        want = request.headers.get("x-forge-placement")
        if want is None:
            return route
        got = request.headers.get("x-forge-admin-token", "").encode("utf-8", "replace")
        # every comparison runs: the time taken says nothing about which token was close
        if not [t for t in self._placement_tokens if hmac.compare_digest(got, t)]:
            raise Forbidden(
                "x-forge-placement pins a request to a host and needs the admin token (send x-forge-admin-token)",
                param="x-forge-placement",
                code="placement_forbidden",
            )
        return pin(route, want.strip())

    def _route_form(self, ctx: Ctx, parts: list[FormPart], kind: str, request: web.Request) -> Route:
        model = next((p.data.decode("utf-8", "replace") for p in parts if p.name == "model"), None)
        ctx.rec.asked = _asked(model)
        route = self._pinned(request, self.gw.table().resolve(model, kind, None))
        ctx.routed(route)
        return route

    async def _forward(
        self, ctx: Ctx, route: Route, payload: Payload, path: str, *, image: bool = False
    ) -> web.StreamResponse:
        skip: frozenset[str] = frozenset()
        while True:  # bounded: each round leaves one more backend out, and open() fails when none is left
            opened = await self.gw.upstream.open(route, path, payload, image=image, skip=skip)
            ctx.served(opened)
            try:
                return await self._relay_json(ctx, opened, chat=False, strip=False, want_json=False)
            except _Redispatch as again:
                skip |= {again.backend}
                ctx.rec.extra["redispatched_from"] = ",".join(sorted(skip))

    # ------------------------------------------------------------------ relays
    async def _relay_json(self, ctx: Ctx, opened: Opened, *, chat: bool, strip: bool, want_json: bool) -> web.Response:
        resp = opened.resp
        rec = ctx.rec
        try:
            data = await resp.read()
        except http1.ReadTimeout:
            opened.close(abort=True)
            raise UpstreamTimeout(f"backend {opened.backend.name!r} stopped answering mid-response") from None
        except _UPSTREAM_READ_ERRORS as exc:
            opened.close(abort=True)
            raise UpstreamError(
                f"backend {opened.backend.name!r} on {opened.backend.host} died while answering "
                f"({exc.__class__.__name__}: {exc})",
                upstream=str(exc),
            ) from None
        except BackendBad:
            opened.close(abort=True)  # nothing of it reached the caller: it goes elsewhere
            opened.backend.count("redispatched")
            raise _Redispatch(opened.backend.name) from None
        except BaseException:
            opened.close(abort=True)
            raise
        opened.close()
        ctype = resp.headers.get("content-type", "application/json")
        if "json" in ctype:
            if chat and (want_json or (strip and (data.find(b"<think>") >= 0 or data.find(b"\\u003cthink") >= 0))):
                try:
                    obj = loads(data)
                except ValueError:
                    obj = None
                if isinstance(obj, dict):
                    _usage_into(rec, obj.get("usage"), obj.get("timings"))
                    data = self._check_chat_output(rec, obj, data, strip, want_json)
            else:
                _usage_from_bytes(rec, data)
            served_as = None
            if ctx.name_json is not None:
                data, served_as = _swap_model(data, ctx.name_json)
        else:
            served_as = None
        rec.status = resp.status
        headers = {**ctx.headers, "Content-Type": ctype}
        if served_as:
            headers["x-forge-upstream-model"] = served_as  # what the backend called itself (smoke checks it)
        enc = resp.headers.get("content-encoding")
        if enc is not None:
            headers["Content-Encoding"] = enc
        return web.Response(status=resp.status, body=data, headers=headers)

    def _check_chat_output(
        self, rec: RequestRecord, obj: dict[str, Any], data: bytes, strip: bool, want_json: bool
    ) -> bytes:
        choices = obj.get("choices")
        if not isinstance(choices, list):
            return data
        leaked = False
        for ch in choices:
            msg = ch.get("message") if isinstance(ch, dict) else None
            if not isinstance(msg, dict):
                continue
            if strip and strip_message(msg):
                leaked = True
            if want_json and not msg.get("tool_calls"):
                content = msg.get("content")
                if not isinstance(content, str) or not _content_is_json(content):
                    rec.error_class = ErrorClass.MODEL_OUTPUT
                    rec.structured = False
                    rec.error = "asked for JSON, the model answered " + (
                        "nothing" if not content else f"non-JSON: {str(content)[:120]!r}"
                    )
        if leaked:
            rec.thinking_leaked = True
            rec.error_class = ErrorClass.MODEL_OUTPUT
            rec.error = rec.error or "thinking leaked into content (moved to reasoning_content)"
            return dump_bytes(obj)
        return data

    async def _relay_stream(
        self, request: web.Request, ctx: Ctx, opened: Opened, *, strip: bool, want_json: bool, multi: bool = False
    ) -> web.StreamResponse:
        resp = opened.resp
        if "text/event-stream" not in resp.headers.get("content-type", ""):
            return await self._relay_json(ctx, opened, chat=True, strip=strip, want_json=want_json)
        rec = ctx.rec
        out = _SseResponse(
            status=200,
            headers={
                **ctx.headers,
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            },
        )
        relay = SseRelay(strip=strip, capture=want_json, multi=multi)
        clean = False
        prepared = False  # nothing goes to the caller before the first piece: until then it can go elsewhere
        try:
            failure: GatewayError | None = None
            while not relay.done:
                try:
                    chunk = await resp.readany()
                except http1.ReadTimeout:
                    failure = UpstreamTimeout(
                        f"backend {opened.backend.name!r} went silent mid-stream "
                        f"(nothing for {opened.backend.cfg.request_timeout_s:g}s)"
                    )
                    break
                except _UPSTREAM_READ_ERRORS as exc:
                    failure = UpstreamError(
                        f"backend {opened.backend.name!r} on {opened.backend.host} died mid-stream "
                        f"({exc.__class__.__name__}: {exc})",
                        upstream=str(exc),
                    )
                    break
                except BackendBad as exc:
                    if not prepared:
                        opened.backend.count("redispatched")
                        raise _Redispatch(opened.backend.name) from None
                    failure = UpstreamError(f"{exc}: the stream was cut off", upstream=str(exc))
                    break
                except GatewayError as exc:  # the gateway is stopping: an error event and [DONE]
                    failure = exc
                    break
                if not chunk:
                    if not relay.done:
                        failure = UpstreamError(
                            f"backend {opened.backend.name!r} on {opened.backend.host} ended the stream without [DONE]"
                        )
                    break
                piece = _rename(relay.feed(chunk), ctx.name_json)
                if ctx.drop_usage and piece.find(b'"usage"') >= 0:
                    piece = _drop_usage_events(piece)
                if piece:
                    resp.relayed = True  # from here on the request can no longer go elsewhere
                    if not prepared:
                        await out.prepare(request)
                        prepared = True
                    try:
                        await out.write(piece)
                    except _CLIENT_GONE:
                        rec.status = 499
                        rec.error_class = ErrorClass.CLIENT_GONE
                        rec.error = "client disconnected mid-stream"
                        return out
            if not prepared:
                await out.prepare(request)
            if relay.first_token_at is not None:
                rec.ttft_ms = (relay.first_token_at - ctx.t0) * 1000.0
            _usage_into(rec, relay.usage, relay.timings)
            if rec.tokens_out is None and relay.events:
                rec.tokens_out = relay.events
                rec.extra["tokens_out_from"] = "chunk count"
            if relay.leaked:
                rec.thinking_leaked = True
                rec.error_class = ErrorClass.MODEL_OUTPUT
                rec.error = "thinking leaked into content (moved to reasoning_content)"
            if failure is not None or relay.upstream_error:
                if failure is None:
                    failure = UpstreamError(
                        f"backend {opened.backend.name!r} reported mid-stream: {relay.upstream_error}",
                        upstream=relay.upstream_error,
                    )
                    tail = b""  # the backend's own error event already went out
                else:
                    tail = relay.flush() + error_event(failure.message, failure.type, failure.code)
                rec.status = failure.status
                rec.error_class = failure.error_class
                rec.error = failure.upstream or failure.message
                try:
                    if tail:
                        await out.write(tail)
                    await out.write_eof()
                except _CLIENT_GONE:
                    pass
                return out
            if want_json and relay.content is not None and not _content_is_json("".join(relay.content)):
                rec.error_class = ErrorClass.MODEL_OUTPUT
                rec.structured = False
                rec.error = "asked for JSON, the model streamed something else"
            rec.status = 200
            try:
                await out.write_eof()
            except _CLIENT_GONE:
                pass
            # [DONE] is not the end of the chunked body: read its terminator too, so the connection is kept.
            clean = resp.done or await resp.drain(_DRAIN_S)
            return out
        finally:
            opened.close(abort=not clean)
