"""The HTTP server layer: every answer in the OpenAI error shape, hostile framing refused, slow clients bounded.

aiohttp's server does the parsing (llhttp, strict); this module changes how it is used:

- ``harden(runner.server, limits)`` swaps in a ``RequestHandler`` subclass that answers framing
  errors (CL+TE, duplicate Content-Length, bare CR/LF, NUL, obs-fold, oversized or too many
  headers, bad Content-Length) as JSON in the OpenAI shape with ``x-forge-request-id``, closes the
  connection and logs one line (no traceback); refuses HTTP/0.9 request lines (a CRLF inside the
  request line would otherwise be answered as ``HTTP/0.9 200``); caps concurrent connections per
  client address; and closes connections whose request head does not arrive within the idle
  timeout (aiohttp's keep-alive timer also runs from the moment a connection opens).
- ``error_layer(...)`` wraps the application's handler (``harden(..., outer=...)``): aiohttp's own
  404/405/413 and any unexpected exception become the OpenAI shape (a 500 ``gateway_error`` with no
  internal text), and ``/health`` and ``/metrics`` are guarded when caller keys are configured.
  It is one plain wrapper around ``Application._handle`` rather than an aiohttp middleware: a
  middleware costs every request a ``partial`` chain and aiohttp's ``current_app`` layer besides.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion, HttpVersion10
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from .errors import error_body, new_request_id

__all__ = ["ServerLimits", "error_layer", "harden", "is_loopback"]

log = logging.getLogger("forge_tui.gateway")

# HTTP/0.9 requests are answered as 1.1 with this version object, told apart by identity (a
# request-state key would cost every request a failed lookup).
_HTTP09_AS_11 = HttpVersion(1, 1)
_RID = "x-forge-request-id"
# aiohttp's reasons for statuses it raises itself, reworded for callers.
_HTTP_EXC_CODES = {
    404: ("not_found", "invalid_request_error"),
    405: ("method_not_allowed", "invalid_request_error"),
    413: ("payload_too_large", "invalid_request_error"),
}


Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class ServerLimits:
    idle_timeout_s: float = 30.0  # request head must arrive within this; idle keep-alive closes after it
    max_connections_per_client: int = 256  # concurrent connections from one client address


def _json_response(status: int, message: str, type_: str, code: str | None, rid: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(error_body(message, type_, code)).encode(),
        content_type="application/json",
        headers={_RID: rid},
    )


def _raw_error(status: int, reason: str, message: str, type_: str, code: str) -> bytes:
    """A complete HTTP/1.1 error answer, for when there is no request object to answer through."""
    body = json.dumps(error_body(message, type_, code)).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{_RID}: {new_request_id()}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def _framing_message(exc: BaseException | None) -> tuple[int, str]:
    """(status, a one-line description without the raw bytes aiohttp quotes back)."""
    if isinstance(exc, LineTooLong):
        return 431, "request line or a header field is too long"
    text = getattr(exc, "message", None) or str(exc or "")
    first = text.strip().splitlines()[0] if text.strip() else "malformed HTTP request"
    first = first.rstrip(": ")
    if "Too many headers" in first:
        return 431, "too many header fields"
    if isinstance(exc, BadHttpMethod) and "HTTPS" not in first:
        first = "bad HTTP method in the request line"
    return 400, first


class _Handler(RequestHandler):
    """aiohttp's connection protocol with OpenAI-shaped error answers and a per-address cap."""

    _forge_peer: str | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        mgr = self._manager
        if not isinstance(mgr, _Server):
            return
        peer = transport.get_extra_info("peername")
        addr = peer[0] if isinstance(peer, tuple) and peer else str(peer)
        n = mgr.forge_conns.get(addr, 0)
        if n >= mgr.forge_limits.max_connections_per_client:
            log.warning("refused a connection from %s: %d connections already open from that address", addr, n)
            transport.write(
                _raw_error(
                    429,
                    "Too Many Requests",
                    f"too many concurrent connections from {addr} (limit {n}); reuse connections",
                    "rate_limit_error",
                    "too_many_connections",
                )
            )
            self.force_close()
            return
        mgr.forge_conns[addr] = n + 1
        self._forge_peer = addr

    def connection_lost(self, exc: BaseException | None) -> None:
        mgr = self._manager
        addr = self._forge_peer
        if addr is not None and isinstance(mgr, _Server):
            self._forge_peer = None
            left = mgr.forge_conns.get(addr, 1) - 1
            if left > 0:
                mgr.forge_conns[addr] = left
            else:
                mgr.forge_conns.pop(addr, None)
        super().connection_lost(exc)

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        rid = new_request_id()
        remote = request.remote if request is not None else None
        if status == 500:
            # A fault in forge (or aiohttp) escaped every handler: keep the traceback for the operator,
            # never the exception text for the caller.
            log.error("gateway error answering %s (request %s)", remote, rid, exc_info=exc)
            resp = _json_response(500, "gateway error (logged on the gateway)", "server_error", "gateway_error", rid)
        elif status == 504:
            resp = _json_response(504, "the gateway timed out answering", "server_error", "gateway_timeout", rid)
        else:
            code, text = _framing_message(exc) if isinstance(exc, HttpProcessingError) else (status, message or "")
            log.warning("bad HTTP request from %s: %s (request %s)", remote, text, rid)
            resp = _json_response(code, f"malformed HTTP request: {text}", "invalid_request_error", "bad_request", rid)
        if request is not None and request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error answer")
        resp.force_close()
        return resp


class _Server(web.Server):
    """aiohttp's low-level server building ``_Handler`` connections (set by ``harden``)."""

    forge_limits: ServerLimits
    forge_conns: dict[str, int]

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


def harden(server: web.Server | None, limits: ServerLimits, outer: Callable[[Handler], Handler] | None = None) -> None:
    """Make ``server`` (``AppRunner.server`` after ``setup()``, before any site starts) use this module's
    protocol; ``outer`` (``error_layer(...)``) wraps the application's handler."""
    if server is None:
        raise RuntimeError("harden() needs the runner's server: call it after runner.setup()")
    server.__class__ = _Server
    assert isinstance(server, _Server)
    server.forge_limits = limits
    server.forge_conns = {}
    server._kwargs["keepalive_timeout"] = limits.idle_timeout_s
    inner = server.request_factory

    def factory(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
        if message.version < HttpVersion10:
            # HTTP/0.9 has no headers and no status line: answer as 1.1 and refuse it in the middleware.
            message = message._replace(version=_HTTP09_AS_11, should_close=True)
        return inner(message, payload, protocol, writer, task)

    server.request_factory = factory
    if outer is not None:
        # Connections take the handler from the server when they open: set before the site starts.
        server.request_handler = outer(server.request_handler)


def error_layer(
    *, api_keys: Sequence[str], extra_tokens: Callable[[], Sequence[str]], public: frozenset[str]
) -> Callable[[Handler], Handler]:
    """The outermost layer around the application. ``public``: of ``/health`` and ``/metrics``, the
    paths open without a key."""
    guarded = frozenset({"/health", "/metrics"}) - public
    keys = tuple(f"Bearer {k}".encode() for k in api_keys)

    def authorised(request: web.BaseRequest) -> bool:
        got = request.headers.get("Authorization", "").encode()
        allowed = keys + tuple(f"Bearer {t}".encode() for t in extra_tokens() if t)
        return any(hmac.compare_digest(got, k) for k in allowed)

    def wrap(handler: Handler) -> Handler:
        async def layer(request: web.BaseRequest) -> web.StreamResponse:
            if request.version is _HTTP09_AS_11:
                rid = new_request_id()
                log.warning("bad HTTP request from %s: HTTP/0.9 request line (request %s)", request.remote, rid)
                refused = _json_response(
                    400,
                    "malformed HTTP request: HTTP/0.9 request lines are not served (a CR or LF inside the request line?)",
                    "invalid_request_error",
                    "bad_request",
                    rid,
                )
                refused.force_close()
                return refused
            if keys and request.path in guarded and not authorised(request):
                return _json_response(
                    401,
                    f"{request.path} needs a caller API key (or the metrics token): send 'Authorization: Bearer <key>'",
                    "authentication_error",
                    "invalid_api_key",
                    new_request_id(),
                )
            try:
                resp = await handler(request)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                code, type_ = _HTTP_EXC_CODES.get(exc.status, ("bad_request", "invalid_request_error"))
                if exc.status == 404:
                    msg = f"unknown path {request.path!r}; this gateway serves the OpenAI API under /v1"
                elif exc.status == 405:
                    allow = exc.headers.get("Allow", "")
                    msg = f"method {request.method} is not allowed on {request.path}" + (
                        f" (allowed: {allow.replace(',', ', ')})" if allow else ""
                    )
                else:
                    msg = exc.reason
                out = _json_response(exc.status, msg, type_, code, new_request_id())
                for h in ("Allow", "Retry-After"):
                    if h in exc.headers:
                        out.headers[h] = exc.headers[h]
                return out
            except Exception:
                rid = new_request_id()
                log.exception("gateway error on %s %s (request %s)", request.method, request.path, rid)
                return _json_response(
                    500, "gateway error (logged on the gateway)", "server_error", "gateway_error", rid
                )
            if not resp.prepared and _RID not in resp.headers:
                resp.headers[_RID] = new_request_id()
            return resp

        return layer

    return wrap


def is_loopback(host: str | None) -> bool:
    """True for addresses only this machine can reach (``localhost`` included)."""
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address((host or "").strip("[]")).is_loopback
    except ValueError:
        return False
