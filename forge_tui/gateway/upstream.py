"""Send a request to the first candidate that can take it, once per backend, and never twice to one.

The walk: placements of the role's model on usable backends (health not down, not suspect,
circuit not open), then each fallback model's placements; each gets one try, and a startup signal
(connection refused, 503 ``Loading model``, llama-swap's 503 ``process is not ready``) or a
failure moves on. A full backend is queued for (FIFO, bounded); with the role's
``spill_after_ms`` the request leaves that queue for a later candidate with a free slot (a spill,
shown as such). When nothing usable served, the last resort waits on every candidate that may
still come up (recently down, starting, suspect), all at once, asking each one's health path, and
sends the request to whichever is ready first; else one answer: 503, every backend's reason,
Retry-After.

A backend turning bad (a connect timeout, its circuit opening, a failed probe through
``BackendRuntime.set_health``) moves its queued requests on at once and cancels, on that backend,
the requests that have no answer yet (closing the connection: llama.cpp stops generating); the
walk then goes on to the next candidate. A request the backend may have read is not sent again,
unless the backend refuses connections right after (its process died with it).

When the backend answers with an error, its own words reach the caller (for llama-swap's failed
starts, together with the error lines of its upstream log).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from ..config.models import BackendKind
from ..errortext import error_message
from ..telemetry.records import ErrorClass
from . import http1, thinking
from .audio import FormPart, encode_multipart
from .backends import DOWN, BackendBad, BackendRuntime, is_startup_text
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

__all__ = ["FormPayload", "GatewayShutdown", "JsonPayload", "Opened", "Payload", "Upstream", "extract_message"]

# Idle keep-alive connections are not reused after this long: below llama.cpp's own keep-alive
# timeout (5 s in its HTTP server), so the backend never closes one just as a request goes out.
IDLE_TTL_S = 4.0
_READY_TIMEOUT_S = 2.0  # a last-resort readiness check's wait for the health path's answer
_RETRY_READY_S = 0.5  # a backend ready by its health path that still refused the request: ask again after
_ERROR_BODY_LIMIT = 64 * 1024
_LOG_TAIL_BYTES = 256 * 1024
_JSON_HEADERS = (("Content-Type", "application/json"),)


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
    spill_from: str | None = None  # spill-over: the full backend this request left for a free slot here
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


class GatewayShutdown(GatewayError):
    """The gateway stopped while this request was still being answered (not the caller's doing)."""

    status = 503
    error_class = ErrorClass.GATEWAY_SHUTDOWN
    type = "server_error"
    code = "gateway_shutdown"


class Upstream:
    """The request path's way to the backends: one keep-alive pool per backend, the walk, the waits.

    Hooks for the rest of the gateway: ``BackendRuntime.mark_bad`` (called by the request path and,
    through ``set_health(DOWN, ...)``, by the health probe) cancels what waits on that backend here;
    ``shutdown`` ends what is still in flight when the gateway stops.
    """

    def __init__(self, backends: dict[str, BackendRuntime], session: aiohttp.ClientSession) -> None:
        self.backends = backends
        self.session = session  # side requests only (llama-swap logs); the request path uses the pools
        self.stopping: str | None = None  # set by shutdown(): new requests are refused with this
        self.pools: dict[str, http1.Pool] = {}
        self._listeners: list[tuple[BackendRuntime, Callable[[str], None]]] = []
        for name, b in backends.items():
            pool = http1.Pool.for_url(
                b.cfg.base_url,
                connect_timeout=b.cfg.connect_timeout_s,
                read_timeout=b.cfg.request_timeout_s,
                max_idle=max(8, 2 * b.cfg.max_concurrency),
                idle_ttl_s=IDLE_TTL_S,
                counts=b.events,
            )
            self.pools[name] = pool
            cb = _canceller(b, pool)
            b.bad_listeners.append(cb)
            self._listeners.append((b, cb))

    def close(self) -> None:
        for b, cb in self._listeners:
            if cb in b.bad_listeners:
                b.bad_listeners.remove(cb)
        self._listeners.clear()
        for p in self.pools.values():
            p.close()

    def shutdown(self, reason: str = "the gateway is shutting down") -> int:
        """End every request still waiting on a backend or relaying (the drain timeout passed): each
        answers a ``gateway_shutdown`` error (in-stream: an error event and ``[DONE]``). Returns how many."""
        self.stopping = reason
        n = 0
        for name, p in self.pools.items():
            exc = GatewayShutdown(f"{reason}: the request was cut off before its answer was complete")
            n += p.fail_all(exc)
            n += self.backends[name].limiter.fail_waiters(exc)
        return n

    async def open(
        self, route: Route, path: str, payload: Payload, *, image: bool = False, skip: frozenset[str] = frozenset()
    ) -> Opened:
        """The first candidate that answers 2xx. ``skip``: backends already tried for this request."""
        if self.stopping is not None:
            raise GatewayShutdown(f"{self.stopping}: not taking new requests")
        cands = route.candidates
        if skip:
            cands = tuple(c for c in cands if c.backend not in skip)
        if cands:
            first = cands[0]
            be = self.backends[first.backend]
            if be.usable():  # the common case: the first placement is up
                try:
                    return await self._attempt(first, be, path, payload, image, cands, 0, route)
                except (Saturated, UpstreamUnreachable, UpstreamStartup) as exc:
                    return await self._walk(route, cands, path, payload, image, exc)
        return await self._walk(route, cands, path, payload, image, None)

    async def _walk(
        self,
        route: Route,
        cands: tuple[Candidate, ...],
        path: str,
        payload: Payload,
        image: bool,
        first_failure: GatewayError | None,
    ) -> Opened:
        what = f"role {route.role!r}" if route.role else f"model {route.model!r}"
        if not cands:
            raise _nothing(what, ["no enabled model with a placement to send this to"], startup=False)
        order = [c for c in cands if self.backends[c.backend].usable()]
        reasons: dict[str, str] = {}
        saturated: Saturated | None = None
        full: set[str] = set()  # backends that are up and at their cap: not waited on below
        if first_failure is not None:
            # The first placement was tried already (open's fast path).
            reasons[cands[0].backend] = first_failure.message
            if isinstance(first_failure, Saturated):
                saturated = first_failure
                full.add(cands[0].backend)
            order = [c for c in order if c is not cands[0]]
        for i, cand in enumerate(order):
            be = self.backends[cand.backend]
            if not be.usable():  # turned bad while an earlier candidate was tried
                continue
            try:
                opened = await self._attempt(cand, be, path, payload, image, order, i, route)
            except Saturated as exc:
                saturated = exc
                full.add(cand.backend)
                reasons[cand.backend] = exc.message
                continue
            except (UpstreamUnreachable, UpstreamStartup) as exc:
                reasons[cand.backend] = exc.message
                continue
            opened.fallback = cand is not cands[0] and opened.spill_from is None
            opened.notes = [f"{b}: {r}" for b, r in reasons.items()]
            return opened
        for c in cands:
            reasons.setdefault(c.backend, self._skip_reason(c))
        rest = tuple(c for c in cands if c.backend not in full)
        if saturated is not None and not self._windows(rest):
            raise saturated  # the ones that are up are full, nothing else may come up: 429, retry shortly
        return await self._last_resort(route, cands, rest, path, payload, image, reasons, what)

    def _skip_reason(self, c: Candidate) -> str:
        be = self.backends[c.backend]
        if be.breaker.state() != "closed":
            return f"circuit open after {be.breaker.consecutive} consecutive failures"
        if be.health == DOWN:
            return f"down ({be.detail or 'health probe failed'})"
        if be.suspect is not None:
            return f"suspect ({be.suspect})"
        return "skipped"

    def _windows(self, cands: tuple[Candidate, ...]) -> dict[str, float]:
        """How long each candidate's backend is worth waiting for (monotonic deadline), by backend name.

        Recently down: what is left of its warmup window (it may be restarting); starting or just
        refused: a warmup window from now; suspect (a connect timeout): one more check; an open
        circuit or down for longer than its warmup: not at all."""
        now = time.monotonic()
        out: dict[str, float] = {}
        for c in cands:
            be = self.backends[c.backend]
            if c.backend in out or not be.breaker.allows():
                continue
            if be.health == DOWN:
                if be.maybe_starting(now):
                    out[c.backend] = (be.down_since or now) + be.cfg.warmup_timeout_s
            elif be.suspect is not None:
                out[c.backend] = now + be.cfg.connect_timeout_s + _READY_TIMEOUT_S
            else:
                out[c.backend] = now + be.cfg.warmup_timeout_s
        return out

    async def _last_resort(
        self,
        route: Route,
        cands: tuple[Candidate, ...],
        waitable: tuple[Candidate, ...],
        path: str,
        payload: Payload,
        image: bool,
        reasons: dict[str, str],
        what: str,
    ) -> Opened:
        """Nothing usable served: wait on every candidate that may still come up, all at once, and send
        the request to whichever is ready first (readiness is asked with the health path, so nothing
        generates twice); 503 with Retry-After when none comes up within its window."""
        windows = self._windows(waitable)
        if not windows:
            raise _nothing(what, [f"{b}: {r}" for b, r in reasons.items()], startup=False)
        last: dict[str, str] = {}
        starting = False
        pending = {
            asyncio.ensure_future(self._until_ready(self.backends[name], end, last)): name
            for name, end in windows.items()
        }
        try:
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    name = pending.pop(t)
                    be = self.backends[name]
                    if not t.result():
                        if be.name in last:
                            signal = last[be.name]
                            starting = starting or _is_startup_signal(signal)
                            reasons[name] = (
                                f"startup timeout: {be.where} was still starting after its warmup timeout of "
                                f"{be.cfg.warmup_timeout_s:g}s (last: {signal})"
                            )
                            if signal == "connection refused":
                                be.breaker.failure()
                        continue
                    for i, c in enumerate(cands):
                        if c.backend != name:
                            continue
                        try:
                            opened = await self._attempt(c, be, path, payload, image, cands, i, route, last_resort=True)
                        except (Saturated, UpstreamUnreachable, UpstreamStartup) as exc:
                            reasons[name] = exc.message
                            last[name] = exc.message
                            continue
                        opened.fallback = c is not cands[0]
                        opened.cold_start = True
                        opened.notes = [f"{b}: {r}" for b, r in reasons.items()]
                        return opened
                    # Ready by its health path, yet it could not take the request: ask again shortly.
                    if time.monotonic() + _RETRY_READY_S < windows[name]:
                        task = asyncio.ensure_future(
                            self._until_ready(be, windows[name], last, first_delay=_RETRY_READY_S)
                        )
                        pending[task] = name
        finally:
            for t in pending:
                t.cancel()
        raise _nothing(what, [f"{b}: {r}" for b, r in reasons.items()], startup=starting)

    async def _until_ready(
        self, be: BackendRuntime, end: float, last: dict[str, str], first_delay: float = 0.0
    ) -> bool:
        """Poll ``be``'s health path (backoff 0.1 -> 1 s) until it answers ready (True) or ``end`` (False)."""
        if first_delay:
            await asyncio.sleep(first_delay)
        delay = 0.1
        while True:
            ready, signal = await self._ready_once(be)
            if ready:
                be.answered()
                be.breaker.success()
                return True
            last[be.name] = signal
            if time.monotonic() + delay > end:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 1.6, 1.0)

    async def _ready_once(self, be: BackendRuntime) -> tuple[bool, str]:
        pool = self.pools[be.name]
        try:
            resp = await pool.request("GET", be.cfg.health_path, b"", [], read_timeout=_READY_TIMEOUT_S)
        except http1.ConnectRefused:
            return False, "connection refused"
        except http1.ConnectFailed as exc:
            return False, f"unreachable: {exc.strerror or exc}"
        except http1.ReadTimeout:
            return False, f"no answer to {be.cfg.health_path} within {_READY_TIMEOUT_S:g}s"
        except (http1.Disconnected, http1.MalformedResponse, BackendBad) as exc:
            return False, f"{be.cfg.health_path} failed: {exc}"
        status = resp.status
        text = (await _read_limited(resp)).decode("utf-8", "replace")
        if status == 200 or (be.kind is not BackendKind.LLAMA_SERVER and status < 500):
            return True, "ready"
        msg = extract_message(text)
        return False, f"HTTP {status} {msg}"

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
        route: Route,
        *,
        last_resort: bool = False,
    ) -> Opened:
        if not be.breaker.enter():
            raise UpstreamUnreachable(f"backend {be.name!r} circuit is open (repeated failures)")
        lim = be.limiter
        spill_from: str | None = None
        if not lim.try_acquire(image):
            spill: Callable[[], object | None] | None = None
            if route.spill_after_s is not None and not last_resort:
                spill = _spill_finder(self.backends, be, order, index, image)
            try:
                other = await lim.acquire(image, spill_after_s=route.spill_after_s, spill=spill)
            except BackendBad as exc:
                be.breaker.abandon()
                raise UpstreamUnreachable(f"{exc} (left its queue at once)") from None
            except BaseException:
                be.breaker.abandon()
                raise
            if isinstance(other, Candidate):
                # Queued past spill_after_ms while that candidate had a free slot (already taken for us).
                be.breaker.abandon()
                spill_from = be.name
                be.count("spilled_from")
                index = list(order).index(other)
                cand, be = other, self.backends[other.backend]
                be.count("spilled_to")
        ok = False
        try:
            opened = await self._send(cand, be, path, payload, image, order, index)
            opened.spill_from = spill_from
            ok = True
            return opened
        except GatewayError as exc:
            if exc.candidate is None:
                exc.candidate = cand
            raise
        finally:
            if not ok:
                be.limiter.release(image)
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
    ) -> Opened:
        """One try, never repeated on this backend: a startup signal or a failure moves the walk on."""
        body, ctype = payload.render(cand)
        pool = self.pools[be.name]
        headers = _JSON_HEADERS if ctype == "application/json" else (("Content-Type", ctype),)
        where = be.where
        try:
            resp = await pool.request("POST", path, body, headers, same_headers=headers is _JSON_HEADERS)
        except http1.ConnectRefused:
            be.count("connect_refused")
            if self._others_usable(order, index, refused=True):
                be.breaker.failure()
            raise UpstreamUnreachable(f"{where}: connection refused") from None
        except http1.ConnectTimeout:
            be.count("connect_timeout")
            be.breaker.failure()
            be.mark_bad(f"connect timed out after {be.cfg.connect_timeout_s:g}s")
            raise UpstreamUnreachable(
                f"{where} is unreachable ({be.cfg.base_url}): no answer to the connection attempt within "
                f"{be.cfg.connect_timeout_s:g}s"
            ) from None
        except http1.ConnectFailed as exc:
            be.count("connect_failed")
            be.breaker.failure()
            be.mark_bad(f"unreachable: {exc.strerror or exc}")
            raise UpstreamUnreachable(f"{where} is unreachable ({be.cfg.base_url}): {exc.strerror or exc}") from None
        except http1.ReadTimeout:
            be.count("read_timeout")
            be.breaker.failure()  # a backend that accepts and goes silent is failing too
            raise UpstreamTimeout(
                f"{where} accepted the request but sent no answer within {be.cfg.request_timeout_s:g}s"
            ) from None
        except BackendBad as exc:
            be.count("redispatched")
            raise UpstreamUnreachable(f"{exc}; the request was cancelled there before any answer") from None
        except http1.Disconnected as exc:
            if exc.got_head:
                raise UpstreamError(f"{where} closed the connection mid-answer ({exc})", upstream=str(exc)) from None
            be.count("no_replay")
            if await _refuses(pool):
                # It died with the request: nothing there is generating it, so it can go elsewhere.
                be.breaker.failure()
                raise UpstreamUnreachable(f"{where} died before answering (connection refused since)") from None
            raise UpstreamError(
                f"{where} closed the connection after receiving the request, before answering ({exc}); "
                "not sent again, since it may already be generating",
                upstream=str(exc),
            ) from None
        except http1.MalformedResponse as exc:
            raise UpstreamError(
                f"{where} answered with something that is not HTTP ({exc})", upstream=str(exc)
            ) from None
        be.breaker.success()
        be.answered()
        if resp.status < 400:
            return Opened(cand, be, resp, image, False)
        raw = await _read_limited(resp)
        text = raw.decode("utf-8", "replace")
        msg = extract_message(text)
        if resp.status == 503 and is_startup_text(text):
            raise UpstreamStartup(f"{where} is still starting (HTTP 503 {msg})")
        if resp.status == 429:
            ra = resp.headers.get("retry-after", "1")
            raise Saturated(f"{where} is saturated: {msg}", retry_after=int(ra) if ra.isdigit() else 1, upstream=msg)
        raise await self._answer_error(be, cand, resp.status, msg)

    async def _answer_error(self, be: BackendRuntime, cand: Candidate, status: int, msg: str) -> GatewayError:
        where = be.where
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


def _canceller(be: BackendRuntime, pool: http1.Pool) -> Callable[[str], None]:
    def cancel(reason: str) -> None:
        n = pool.fail_unanswered(BackendBad(f"{be.where} turned bad ({reason})"))
        if n:
            be.count("cancelled_upstream", n)

    return cancel


def _spill_finder(
    backends: dict[str, BackendRuntime],
    full: BackendRuntime,
    order: tuple[Candidate, ...] | list[Candidate],
    index: int,
    image: bool,
) -> Callable[[], object | None]:
    """For ``Limiter.acquire``: a later candidate on another usable backend with a free slot (taken)."""

    def find() -> Candidate | None:
        for c in order[index + 1 :]:
            ob = backends[c.backend]
            if ob is full or not ob.usable():
                continue
            if ob.limiter.try_acquire(image):
                if ob.breaker.enter():
                    return c
                ob.limiter.release(image)
        return None

    return find


async def _refuses(pool: http1.Pool) -> bool:
    """Does the backend refuse connections now (its process is gone)? One connection attempt."""
    try:
        conn = await pool.connect_once()
    except http1.ConnectRefused:
        return True
    except OSError:
        return False
    pool.put(conn)
    return False


def _is_startup_signal(signal: str) -> bool:
    return signal == "connection refused" or is_startup_text(signal)


def _nothing(what: str, reasons: list[str], *, startup: bool) -> GatewayError:
    """The one answer for "nothing can serve this role right now": 503, the reasons, Retry-After."""
    cls = UpstreamStartup if startup else UpstreamUnreachable
    return cls(
        f"{what}: no backend can serve this right now ({'; '.join(reasons)}); retry shortly",
        status=503,
        headers={"Retry-After": "5"},
    )
