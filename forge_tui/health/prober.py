"""The one backend probe loop: every backend of the catalog, each on its own timer.

What it asks, by kind (all GETs, bounded by a connect timeout and a read timeout):

- every kind: the backend's ``health_path`` (``/health``);
- llama-server, once ready: ``/props`` (model path, alias, build), ``/v1/models`` (ids and
  aliases), ``/slots`` (busy slots): what the server actually holds, not what the catalog hopes;
- llama-swap, once ``/health`` answers: ``/running`` (loaded models and their states),
  ``/v1/models`` (the models its config can start), ``/api/version`` now and then;
- openai-compatible: ``/v1/models`` (what it can serve; whether it is loaded it does not say).

Each backend has its own loop, so a frozen backend (accepts, never answers) delays nobody else;
probes use fresh connections (no keep-alive), so a dropped link shows as a connect timeout, not
as a read that waits on a dead connection. A new ``BackendState`` replaces the last one after each
probe and listeners hear of it: the gateway's runtime (routing), the hosts service (panes) and
host reachability. Not on the request path: httpx, the project's one library client for such work.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import httpx

from ..config.models import Backend, BackendKind, Catalog
from ..errortext import error_message
from .parse import model_ids, props_names, running_states, slots_busy_total
from .reach import Reachability
from .vocab import DOWN, READY, STARTING, BackendState, is_startup_text

__all__ = ["BackendProber", "describe_failure"]

VERSION_EVERY_S = 60.0  # llama-swap /api/version: it changes only with a restart
_REFUSED = (errno.ECONNREFUSED,)
_NO_ROUTE = (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN)

Listener = Callable[[BackendState], None]


def _os_error(exc: BaseException) -> OSError | None:
    seen: set[int] = set()
    x: BaseException | None = exc
    while x is not None and id(x) not in seen:
        seen.add(id(x))
        if isinstance(x, OSError) and x.errno is not None:
            return x
        x = x.__cause__ or x.__context__
    return None


def describe_failure(exc: httpx.HTTPError, connect_s: float, read_s: float) -> tuple[bool | None, str]:
    """(reachable, why) for a probe that got no HTTP answer."""
    if isinstance(exc, httpx.ConnectTimeout):
        return False, f"connect timed out after {connect_s:g}s"
    if isinstance(exc, httpx.ConnectError):
        os_err = _os_error(exc)
        if os_err is not None and os_err.errno in _REFUSED:
            return True, "connection refused"
        if os_err is not None and os_err.errno in _NO_ROUTE:
            return False, f"no route to host ({os_err.strerror})"
        return None, f"cannot connect: {os_err.strerror if os_err is not None and os_err.strerror else exc}"
    if isinstance(exc, httpx.TimeoutException):
        return True, f"accepted the connection but sent no answer within {read_s:g}s"
    return True, f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__


class BackendProber:
    def __init__(
        self,
        catalog: Catalog,
        *,
        interval_s: float,
        read_timeout_s: float | None = None,
        connect_timeout_s: float | None = None,
        backends: Iterable[str] | None = None,
    ) -> None:
        self.catalog = catalog
        self.interval_s = interval_s
        self.read_timeout_s = read_timeout_s if read_timeout_s is not None else max(1.0, min(5.0, interval_s))
        self._connect_override = connect_timeout_s  # tests: one for every backend
        names = list(backends) if backends is not None else list(catalog.backends)
        self._cfg: dict[str, Backend] = {n: catalog.backends[n] for n in names}
        self._states: dict[str, BackendState] = {n: BackendState(n, b.host, b.kind) for n, b in self._cfg.items()}
        self._version_at: dict[str, float] = {}
        self._listeners: list[Listener] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._first: dict[str, asyncio.Event] = {}
        self.reach = Reachability()

    # ------------------------------------------------------------------ readers
    def state(self, name: str) -> BackendState:
        return self._states[name]

    def states(self) -> dict[str, BackendState]:
        return dict(self._states)

    def on_host(self, host: str) -> dict[str, BackendState]:
        return {n: s for n, s in self._states.items() if s.host == host}

    def subscribe(self, cb: Listener) -> Callable[[], None]:
        """``cb(state)`` after every probe of every backend (on the event loop)."""
        self._listeners.append(cb)
        return lambda: self._listeners.remove(cb) if cb in self._listeners else None

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def connect_timeout(self, name: str) -> float:
        return self._connect_override or self._cfg[name].connect_timeout_s

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        for n in self._cfg:
            self._first[n] = asyncio.Event()
            self._tasks.append(loop.create_task(self._loop(n), name=f"forge-backend-probe {n}"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def first_round(self, timeout: float) -> None:
        """Wait (bounded) until every backend was probed once: a dead remote host must not stall startup."""
        events = [e.wait() for e in self._first.values()]
        if not events:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*events)

    async def _loop(self, name: str) -> None:
        while True:
            try:
                await self.probe(name)
            except Exception as exc:  # a bug in one probe must not end this backend's loop for good
                self._store(replace(self._states[name], health=DOWN, detail=f"probe failed: {exc!r}"))
            self._first[name].set()
            await asyncio.sleep(self.interval_s)

    # ------------------------------------------------------------------ probing
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            # No keep-alive: every probe connects afresh, so a dropped link is a connect timeout.
            # No proxy from the environment either: a proxy would answer for a host that is gone.
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_keepalive_connections=0), follow_redirects=False, trust_env=False
            )
        return self._client

    async def probe_all(self, names: Iterable[str] | None = None) -> dict[str, BackendState]:
        todo = list(names) if names is not None else list(self._cfg)
        got = await asyncio.gather(*(self.probe(n) for n in todo))
        return dict(zip(todo, got, strict=True))

    async def probe_host(self, host: str) -> dict[str, BackendState]:
        return await self.probe_all(n for n, b in self._cfg.items() if b.host == host)

    async def probe(self, name: str) -> BackendState:
        """Probe ``name`` now; the new state replaces the last and listeners hear of it."""
        state = await self._probe(name, self._cfg[name])
        self._store(state)
        return state

    def _store(self, state: BackendState) -> None:
        self._states[state.name] = state
        self._network_word(state.host)
        for cb in list(self._listeners):
            cb(state)

    def _network_word(self, host: str) -> None:
        said = [s for s in self._states.values() if s.host == host and s.reachable is not None]
        if not said:
            return
        if any(s.reachable for s in said):
            self.reach.observe(host, "network", True)
        else:
            why = "; ".join(f"{s.name}: {s.detail}" for s in said)
            self.reach.observe(host, "network", False, f"no answer from its backends ({why})")

    async def _get(self, url: str, connect_s: float) -> tuple[int, str, Any]:
        r = await self._http().get(url, timeout=httpx.Timeout(self.read_timeout_s, connect=connect_s))
        text = r.text
        try:
            data = r.json() if text[:1] in ("{", "[") else None
        except ValueError:
            data = None
        return r.status_code, text, data

    async def _probe(self, name: str, b: Backend) -> BackendState:
        base = BackendState(name, b.host, b.kind)
        connect_s = self.connect_timeout(name)
        try:
            status, text, _ = await self._get(b.base_url + b.health_path, connect_s)
        except httpx.HTTPError as exc:
            reachable, why = describe_failure(exc, connect_s, self.read_timeout_s)
            return replace(
                base, health=DOWN, detail=why, reachable=reachable, checked_at=time.time(), holds=frozenset()
            )
        st = replace(base, reachable=True)
        if b.kind is BackendKind.LLAMA_SWAP:
            if status != 200:
                return self._done(st, DOWN, f"HTTP {status} on {b.health_path}: {error_message(text)[:200]}")
            return self._done(await self._swap_details(st, b, connect_s), READY, None)
        if status == 200 or (b.kind is not BackendKind.LLAMA_SERVER and status < 500):
            if b.kind is BackendKind.LLAMA_SERVER:
                st = await self._server_details(st, b, connect_s)
            elif b.kind is BackendKind.OPENAI_COMPATIBLE:
                st = await self._listing(st, b, connect_s)
            return self._done(st, READY, None)
        msg = error_message(text)
        if status == 503 and is_startup_text(text):
            return self._done(replace(st, holds=frozenset()), STARTING, msg)
        return self._done(replace(st, holds=frozenset()), DOWN, f"HTTP {status} on {b.health_path}: {msg[:200]}")

    @staticmethod
    def _done(st: BackendState, health: Any, detail: str | None) -> BackendState:
        return replace(st, health=health, detail=detail, checked_at=time.time())

    async def _json(self, url: str, connect_s: float) -> Any:
        """The JSON of a 200 answer, else None (an older build without the endpoint, a hiccup)."""
        try:
            status, _, data = await self._get(url, connect_s)
        except httpx.HTTPError:
            return None
        return data if status == 200 else None

    async def _server_details(self, st: BackendState, b: Backend, connect_s: float) -> BackendState:
        props, models, slots = await asyncio.gather(
            self._json(b.base_url + "/props", connect_s),
            self._json(b.base_url + "/v1/models", connect_s),
            self._json(b.base_url + "/slots", connect_s),
        )
        names: set[str] = set()
        known = False
        path = build = None
        total: int | None = None
        with contextlib.suppress(ValueError):
            path, pnames = props_names(props)
            names |= pnames
            known = True
            build = props.get("build_info") if isinstance(props.get("build_info"), str) else None
            total = props.get("total_slots") if isinstance(props.get("total_slots"), int) else None
        with contextlib.suppress(ValueError):
            names |= model_ids(models)
            known = True
        busy = None
        with contextlib.suppress(ValueError):
            busy, total = slots_busy_total(slots)
        held = frozenset(names) if known else None
        # One server, one model: what it holds is all it can serve, whatever a request's "model" says.
        return replace(
            st, holds=held, serves=held, model_path=path, build_info=build, slots_busy=busy, slots_total=total
        )

    async def _swap_details(self, st: BackendState, b: Backend, connect_s: float) -> BackendState:
        running, models = await asyncio.gather(
            self._json(b.base_url + "/running", connect_s), self._json(b.base_url + "/v1/models", connect_s)
        )
        states: dict[str, str] = {}
        holds: frozenset[str] | None = None
        with contextlib.suppress(ValueError):
            states = running_states(running)
            holds = frozenset(m for m, s in states.items() if s == "ready")
        serves: frozenset[str] | None = None
        with contextlib.suppress(ValueError):
            serves = model_ids(models) | frozenset(states)
        version = self._states[st.name].swap_version
        now = time.monotonic()
        if version is None or now - self._version_at.get(st.name, 0.0) > VERSION_EVERY_S:
            self._version_at[st.name] = now
            got = await self._json(b.base_url + "/api/version", connect_s)
            version = got if isinstance(got, dict) else version
        return replace(st, holds=holds, serves=serves, model_states=states, swap_version=version)

    async def _listing(self, st: BackendState, b: Backend, connect_s: float) -> BackendState:
        try:
            serves: frozenset[str] | None = model_ids(await self._json(b.base_url + "/v1/models", connect_s))
        except ValueError:
            serves = None
        return replace(st, serves=serves)  # loaded or merely pulled (Ollama): it does not say
