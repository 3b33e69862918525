"""Send a request to the first candidate that can take it.

The walk: placements of the role's model on usable backends (health not down, circuit not open),
then each fallback model's placements. On a startup signal (connection refused, 503 ``Loading
model``, llama-swap's 503 ``process is not ready``) the request moves on when a later candidate
is usable, and otherwise waits with backoff up to the backend's warmup timeout. When the backend
answers with an error, its own words reach the caller (for llama-swap's failed starts, together
with the error lines of its upstream log).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from ..config.models import BackendKind
from ..errortext import error_message
from ..telemetry.records import ErrorClass
from . import http1, thinking
from .audio import FormPart, encode_multipart
from .backends import DOWN, BackendRuntime, is_startup_text
from .errors import (
    GatewayError,
    Saturated,
    UpstreamError,
    UpstreamStartup,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from .routing import Candidate, Route
from .stream import dump_bytes

__all__ = ["FormPayload", "JsonPayload", "Opened", "Payload", "Upstream", "extract_message"]

CONNECT_TIMEOUT_S = 5.0
_ERROR_BODY_LIMIT = 64 * 1024
_LOG_TAIL_BYTES = 256 * 1024
_JSON_HEADERS = [("Content-Type", "application/json")]


class Payload(Protocol):
    def render(self, cand: Candidate) -> tuple[bytes, str]: ...


class JsonPayload:
    """A JSON body, re-rendered per candidate: the backend's own model name and the family's thinking policy."""

    __slots__ = ("_cache", "body", "caller_thinking", "chat", "header")

    def __init__(self, body: dict[str, Any], *, chat: bool, thinking_header: str | None) -> None:
        self.body = body
        self.chat = chat
        self.header = thinking_header
        self.caller_thinking = thinking.caller_choice(body) if chat else None
        self._cache: dict[tuple[str, Any], bytes] = {}

    def decision(self, cand: Candidate) -> thinking.ThinkingDecision:
        if not self.chat:
            return thinking.NO_DECISION
        return thinking.decide(cand.thinking, self.caller_thinking, self.header)

    def render(self, cand: Candidate) -> tuple[bytes, str]:
        d = self.decision(cand)
        key = (cand.upstream_name, d.inject)
        data = self._cache.get(key)
        if data is None:
            out = thinking.apply(self.body, d)
            if out is self.body:
                out = dict(self.body)
            out["model"] = cand.upstream_name
            data = dump_bytes(out)
            self._cache[key] = data
        return data, "application/json"


class FormPayload:
    """A multipart form, re-encoded per candidate with the backend's own model name."""

    __slots__ = ("_cache", "parts")

    def __init__(self, parts: list[FormPart]) -> None:
        self.parts = parts
        self._cache: dict[str, tuple[bytes, str]] = {}

    def render(self, cand: Candidate) -> tuple[bytes, str]:
        hit = self._cache.get(cand.upstream_name)
        if hit is None:
            parts = [p for p in self.parts if p.name != "model"]
            parts.insert(0, FormPart("model", cand.upstream_name.encode()))
            hit = encode_multipart(parts)
            self._cache[cand.upstream_name] = hit
        return hit


@dataclass(slots=True)
class Opened:
    """A backend that answered 2xx; the caller reads ``resp`` and must ``close()`` this."""

    cand: Candidate
    backend: BackendRuntime
    resp: http1.Response
    image: bool
    fallback: bool
    notes: list[str] = field(default_factory=list)
    cold_start: bool = False  # waited out a startup signal (or a down backend's warmup window) first
    _done: bool = False

    def close(self, *, abort: bool = False) -> None:
        """Release the backend slot; ``abort`` drops the connection so the backend stops generating."""
        if self._done:
            return
        self._done = True
        self.resp.close(abort=abort)
        self.backend.limiter.release(self.image)


def extract_message(text: str) -> str:
    """The backend's own error words from an error body (llama.cpp, llama-swap, OpenAI-style, plain text)."""
    return error_message(text)


class Upstream:
    def __init__(self, backends: dict[str, BackendRuntime], session: aiohttp.ClientSession) -> None:
        self.backends = backends
        self.session = session  # side requests only (llama-swap logs); the request path uses the pools
        self.pools = {
            name: http1.Pool.for_url(
                b.cfg.base_url,
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=b.cfg.request_timeout_s,
                max_idle=max(8, 2 * b.cfg.max_concurrency),
            )
            for name, b in backends.items()
        }

    def close(self) -> None:
        for p in self.pools.values():
            p.close()

    async def open(self, route: Route, path: str, payload: Payload, *, image: bool = False) -> Opened:
        cands = route.candidates
        if cands:
            first = cands[0]
            be = self.backends[first.backend]
            if be.usable():  # the common case: the first placement is up
                try:
                    return await self._attempt(first, be, path, payload, image, cands, 0, last_resort=False)
                except (Saturated, UpstreamUnreachable, UpstreamStartup) as exc:
                    if len(cands) == 1:
                        raise
                    return await self._walk(route, path, payload, image, exc)
        return await self._walk(route, path, payload, image, None)

    async def _walk(
        self, route: Route, path: str, payload: Payload, image: bool, first_failure: GatewayError | None
    ) -> Opened:
        cands = route.candidates
        what = f"role {route.role!r}" if route.role else f"model {route.model!r}"
        if not cands:
            raise UpstreamUnreachable(f"{what}: no enabled model with a placement to send this to")
        now = time.monotonic()
        order = [c for c in cands if self.backends[c.backend].usable()]
        reasons: list[str] = []
        saturated: Saturated | None = None
        failure: GatewayError | None = None
        if first_failure is not None:
            # The first placement was tried already (open's fast path).
            reasons.append(f"{cands[0].backend}: {first_failure.message}")
            if isinstance(first_failure, Saturated):
                saturated = first_failure
            else:
                failure = first_failure
            order = [c for c in order if c is not cands[0]]
        last_resort = False
        if not order and first_failure is None:
            # Everything looks down. One recently-down backend may just be restarting: give it its window.
            order = [
                c
                for c in cands
                if self.backends[c.backend].breaker.allows() and self.backends[c.backend].maybe_starting(now)
            ][:1]
            last_resort = True
        tried_first = first_failure is not None
        reasons += [self._skip_reason(c) for c in cands if c not in order and not (tried_first and c is cands[0])]
        for i, cand in enumerate(order):
            be = self.backends[cand.backend]
            try:
                opened = await self._attempt(cand, be, path, payload, image, order, i, last_resort=last_resort)
            except Saturated as exc:
                saturated = exc
                reasons.append(f"{cand.backend}: {exc.message}")
                continue
            except (UpstreamUnreachable, UpstreamStartup) as exc:
                failure = exc
                reasons.append(f"{cand.backend}: {exc.message}")
                continue
            opened.fallback = cand is not cands[0]
            opened.notes = reasons
            return opened
        if failure is not None:
            if len(reasons) > 1:
                failure.message = f"{what}: " + "; ".join(reasons)
                failure.args = (failure.message,)
            raise failure
        if saturated is not None:
            raise saturated
        raise UpstreamUnreachable(f"{what}: no usable placement ({'; '.join(reasons)})")

    def _skip_reason(self, c: Candidate) -> str:
        be = self.backends[c.backend]
        if be.breaker.state() != "closed":
            return f"{c.backend}: circuit open after {be.breaker.consecutive} connect failures"
        if be.health == DOWN:
            return f"{c.backend}: down ({be.detail or 'health probe failed'})"
        return f"{c.backend}: skipped"

    def _others_usable(self, order: tuple[Candidate, ...] | list[Candidate], i: int, *, refused: bool) -> bool:
        """Can a later candidate serve (so a startup signal means: move on rather than wait)?

        A refused connection rules out the whole backend; a model still loading on a llama-swap
        does not rule out another model that backend already has up."""
        me = order[i]
        for c in order[i + 1 :]:
            elsewhere = c.backend != me.backend or (not refused and c.model != me.model)
            if elsewhere and self.backends[c.backend].usable():
                return True
        return False

    async def _attempt(
        self,
        cand: Candidate,
        be: BackendRuntime,
        path: str,
        payload: Payload,
        image: bool,
        order: tuple[Candidate, ...] | list[Candidate],
        index: int,
        *,
        last_resort: bool,
    ) -> Opened:
        if not be.breaker.enter():
            raise UpstreamUnreachable(f"backend {be.name!r} circuit is open (repeated connect failures)")
        lim = be.limiter
        if not lim.try_acquire(image):
            try:
                await lim.acquire(image)
            except BaseException:
                be.breaker.abandon()
                raise
        ok = False
        try:
            opened = await self._send(cand, be, path, payload, image, order, index, last_resort=last_resort)
            ok = True
            return opened
        except GatewayError as exc:
            if exc.candidate is None:
                exc.candidate = cand
            raise
        finally:
            if not ok:
                lim.release(image)
                if be.breaker.trial:
                    be.breaker.abandon()

    async def _send(
        self,
        cand: Candidate,
        be: BackendRuntime,
        path: str,
        payload: Payload,
        image: bool,
        order: tuple[Candidate, ...] | list[Candidate],
        index: int,
        *,
        last_resort: bool,
    ) -> Opened:
        body, ctype = payload.render(cand)
        pool = self.pools[be.name]
        headers = _JSON_HEADERS if ctype == "application/json" else [("Content-Type", ctype)]
        warmup = be.cfg.warmup_timeout_s
        deadline: float | None = None
        if last_resort and be.down_since is not None:
            deadline = be.down_since + warmup
        delay = 0.1
        while True:
            refused = False
            try:
                resp = await pool.request("POST", path, body, headers)
            except http1.ConnectRefused:
                refused = True
                signal = "connection refused"
                where = _where(be)
            except http1.ConnectFailed as exc:
                where = _where(be)
                be.breaker.failure()
                raise UpstreamUnreachable(
                    f"{where} is unreachable ({be.cfg.base_url}): {exc.strerror or exc}"
                ) from None
            except http1.ReadTimeout:
                where = _where(be)
                be.breaker.success()
                raise UpstreamTimeout(
                    f"{where} accepted the request but sent no answer within {be.cfg.request_timeout_s:g}s"
                ) from None
            except (http1.Disconnected, http1.MalformedResponse) as exc:
                where = _where(be)
                raise UpstreamError(
                    f"{where} closed the connection without answering ({exc})", upstream=str(exc)
                ) from None
            else:
                be.breaker.success()
                if resp.status < 400:
                    return Opened(cand, be, resp, image, False, cold_start=deadline is not None)
                where = _where(be)
                raw = await _read_limited(resp)
                text = raw.decode("utf-8", "replace")
                msg = extract_message(text)
                if resp.status == 503 and is_startup_text(text):
                    signal = f"HTTP 503 {msg}"
                elif resp.status == 429:
                    ra = resp.headers.get("retry-after", "1")
                    raise Saturated(
                        f"{where} is saturated: {msg}", retry_after=int(ra) if ra.isdigit() else 1, upstream=msg
                    )
                else:
                    raise await self._answer_error(be, cand, resp.status, msg)
            # A startup signal: move on if something else can serve, else wait it out.
            if self._others_usable(order, index, refused=refused):
                if refused:
                    be.breaker.failure()
                    raise UpstreamUnreachable(f"{where}: {signal}")
                raise UpstreamStartup(f"{where} is still starting ({signal})")
            now = time.monotonic()
            if deadline is None:
                deadline = now + warmup
            if now + delay > deadline:
                if refused:
                    be.breaker.failure()
                raise UpstreamStartup(
                    f"startup timeout: {where} was still starting after its warmup timeout of {warmup:g}s "
                    f"(last: {signal})",
                    headers={"Retry-After": "5"},
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.6, 1.0)

    async def _answer_error(self, be: BackendRuntime, cand: Candidate, status: int, msg: str) -> GatewayError:
        where = _where(be)
        detail = msg
        if be.kind is BackendKind.LLAMA_SWAP and status >= 500 and ("start" in msg.lower() or "exited" in msg.lower()):
            lines = await self._llama_swap_log_errors(be)
            if lines:
                detail = f"{msg}; upstream log: " + " | ".join(lines)
        err = UpstreamError(f"{where} answered HTTP {status} for {cand.upstream_name!r}: {detail}", upstream=detail)
        if status in (400, 413, 422):
            # The backend judged the request itself (e.g. longer than its context): the caller's to fix.
            err.status = status
            err.error_class = ErrorClass.CALLER_ERROR
            err.type = "invalid_request_error"
            err.code = "upstream_rejected"
        return err

    async def _llama_swap_log_errors(self, be: BackendRuntime) -> list[str]:
        """llama-swap answers a failed start with little; the reason is in its upstream log (GET /logs)."""
        try:
            async with self.session.get(
                be.cfg.base_url + "/logs", headers={"Accept": "text/plain"}, timeout=aiohttp.ClientTimeout(total=3)
            ) as resp:
                if resp.status != 200:
                    return []
                raw = await resp.read()
        except (TimeoutError, aiohttp.ClientError):
            return []
        tail = raw[-_LOG_TAIL_BYTES:].decode("utf-8", "replace").splitlines()[-300:]
        # The loader's own line is the one an operator needs first, then the last few other failures.
        specific = [ln.strip() for ln in tail if "error loading model" in ln or "unknown model architecture" in ln]
        picked = specific[-1:]
        others: list[str] = []
        for ln in reversed(tail):
            low = ln.lower()
            s = ln.strip()
            if s and ("error" in low or "failed" in low) and s not in picked and s not in others:
                others.append(s)
                if len(others) >= 2:
                    break
        return picked + others[::-1]


def _where(be: BackendRuntime) -> str:
    return f"backend {be.name!r} on {be.host}"


async def _read_limited(resp: http1.Response) -> bytes:
    """An error body, at most 64 KiB of it; the connection is given back or dropped."""
    out = bytearray()
    try:
        while len(out) < _ERROR_BODY_LIMIT:
            chunk = await resp.readany()
            if not chunk:
                break
            out += chunk
    except (http1.Disconnected, http1.MalformedResponse, http1.ReadTimeout):
        pass
    resp.close()
    return bytes(out[:_ERROR_BODY_LIMIT])
