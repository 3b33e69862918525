"""The gateway: the OpenAI-compatible surface plus ``/health`` and ``/metrics``, an aiohttp application
embeddable in a running event loop.

    gw = Gateway(catalog, state, telemetry=tel, api_keys=())
    gw.mount(extra)                   # before start: routes from outside (the operator's admin API)
    await gw.start("127.0.0.1", 0)    # GatewayBindError (never sys.exit) when the port is taken
    gw.url, gw.port, gw.inflight, gw.backends, gw.warnings()
    await gw.stop(drain_timeout=10)   # stop accepting, let in-flight requests finish, close the client

A mount is anything with ``routes()``, ``listening(url)`` (called once the port is bound) and
``stopped()``; the gateway knows nothing else about it (``operator.admin_http`` is one).

No signal handlers are installed and nothing is logged per request; ``AppRunner`` + ``TCPSite``
keep the console's loop in charge.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import logging
import os
import time
from collections.abc import Sequence

import aiohttp
from aiohttp import web

from ..config.models import Catalog
from ..health import BackendProber
from ..state import AuditEntry, RoutingState
from ..telemetry import CONTENT_TYPE, Exposition
from .api import OpenAIApi
from .backends import READY, BackendRuntime, Breaker, Limiter
from .errors import GatewayBindError
from .health_feed import feed
from .protocols import Mount, TelemetryLike
from .routing import RouteTable
from .server import ServerLimits, error_layer, harden, is_loopback
from .upstream import Upstream

__all__ = ["Gateway", "GatewayBindError", "Mount"]

log = logging.getLogger("forge_tui.gateway")


class Gateway:
    def __init__(
        self,
        catalog: Catalog,
        state: RoutingState,
        *,
        telemetry: TelemetryLike,
        config_path: str | None = None,
        api_keys: Sequence[str] = (),
    ) -> None:
        self.catalog = catalog
        self.state = state
        self.telemetry = telemetry
        self.config_path = config_path
        self.api_keys = tuple(api_keys)
        s = catalog.gateway
        self.settings = s
        self.started_at = time.time()
        self.backends: dict[str, BackendRuntime] = {
            name: BackendRuntime(
                name=name,
                cfg=b,
                breaker=Breaker(s.breaker_failures, s.breaker_reset_s),
                limiter=Limiter(name, b.max_concurrency, b.max_image_concurrency, b.queue_limit, b.queue_timeout_s),
            )
            for name, b in catalog.backends.items()
        }
        # Families added here or from outside (gw.metrics.gauge/counter/register) before or after start.
        self.metrics = self._register_metrics()
        self._placements: dict[str, dict[str, str]] = {}
        for mid, m in catalog.models.items():
            for p in m.placements:
                self._placements.setdefault(p.backend, {})[p.name or mid] = mid
        self._table = self._build_table(None)
        self._unsubscribe = state.subscribe(self._on_state_change)
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        # The process's one backend probe loop (the hosts service reads it too); it feeds the runtimes.
        self.health = BackendProber(catalog, interval_s=s.health_interval_s)
        self._unfeed = feed(self.health, self.backends)
        self._upstream: Upstream | None = None
        self.url = ""
        self.port = 0
        self.addresses: list[str] = []
        self._mounts: list[Mount] = []
        self.app = self._build_app()

    # ------------------------------------------------------------------ wiring
    def _build_app(self) -> web.Application:
        s = self.settings
        public = frozenset(p for p, on in (("/health", s.public_health), ("/metrics", s.public_metrics)) if on)
        self._outer = error_layer(api_keys=self.api_keys, extra_tokens=self._metrics_tokens, public=public)
        app = web.Application(client_max_size=int(s.max_body_mb * 1024 * 1024))
        self.openai = OpenAIApi(self)
        app.add_routes(self.openai.routes())
        app.add_routes([web.get("/health", self._health), web.get("/metrics", self._metrics)])
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        # The client lives exactly as long as the app, whichever runner serves it.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, raise_for_status=False, skip_auto_headers=("User-Agent",)
        )
        self._upstream = Upstream(self.backends, self._session)
        await self.health.start()
        await self.health.first_round(timeout=1.0)  # know who is up before the first request arrives

    async def _on_cleanup(self, app: web.Application) -> None:
        await self.health.stop()
        if self._upstream is not None:
            self._upstream.close()
        if self._session is not None:
            await self._session.close()

    def mount(self, extra: Mount) -> None:
        """Serve ``extra``'s routes on this gateway's port (before ``start``; the app freezes then)."""
        if self._runner is not None:
            raise RuntimeError("mount before start: the running app's routes are frozen")
        self.app.add_routes(extra.routes())
        self._mounts.append(extra)

    def upstream_stopping(self) -> bool:
        """True once stop() has ended what was still in flight (their records say gateway_shutdown)."""
        return self._upstream is not None and self._upstream.stopping is not None

    @property
    def upstream(self) -> Upstream:
        if self._upstream is None:
            raise RuntimeError("gateway not started")
        return self._upstream

    @property
    def prober(self) -> BackendProber:
        return self.health

    def _build_table(self, previous: RouteTable | None) -> RouteTable:
        return RouteTable(self.state, config_path=self.config_path, started_at=self.started_at, previous=previous)

    def _on_state_change(self, entry: AuditEntry) -> None:
        self._table = self._build_table(self._table)

    def table(self) -> RouteTable:
        t = self._table
        if not t.current(self.state):  # a change that bypassed the listener still routes anew
            t = self._table = self._build_table(t)
        return t

    def placements_on(self, backend: str) -> dict[str, str]:
        """Upstream model name -> model id for the placements on ``backend``."""
        return self._placements.get(backend, {})

    def warnings(self) -> list[str]:
        out = []
        for b in self.backends.values():
            if b.breaker.state() == "open":
                out.append(f"backend {b.name}: circuit open after {b.breaker.consecutive} connect failures")
        return out

    # ------------------------------------------------------------------ in-flight accounting
    @property
    def inflight(self) -> int:
        return self._inflight

    def _enter(self) -> None:
        self._inflight += 1

    def _leave(self) -> None:
        self._inflight -= 1
        if self._inflight == 0 and self._idle is not None:
            self._idle.set()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if self._runner is not None:
            raise RuntimeError("gateway already started")
        runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        if not self.api_keys and not self.settings.allow_unauthenticated and not is_loopback(host):
            raise GatewayBindError(
                f"refusing to listen on {host or 'all addresses'} without caller API keys: anyone who can reach "
                f"the port could use every model; set keys (--api-key-file, $FORGE_API_KEYS) or pass "
                f"--allow-unauthenticated"
            )
        await runner.setup()
        s = self.settings
        harden(runner.server, ServerLimits(s.idle_timeout_s, s.max_connections_per_client), self._outer)
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                msg = (
                    f"port {port} on {host} is already in use (another forge-tui or another program); "
                    f"stop it or pick another port with --port"
                )
            elif exc.errno == errno.EADDRNOTAVAIL:
                msg = f"cannot listen on {host}:{port}: this machine has no such address"
            elif exc.errno == errno.EACCES:
                msg = f"not allowed to listen on {host}:{port} (ports below 1024 need privileges)"
            else:
                msg = f"cannot listen on {host}:{port}: {exc.strerror or exc}"
            err = GatewayBindError(msg)
            err.errno = exc.errno  # str(err) stays the plain message
            raise err from None
        self._runner = runner
        # Everything built so far (catalog, pydantic models, aiohttp, routes) lives as long as the
        # process: move it out of the collector's reach, so full collections under load scan only
        # what requests allocate (one took ~70 ms with it; it adds to the tail latency).
        gc.freeze()
        addr = runner.addresses[0]
        self.port = int(addr[1])
        # What the sockets really bound (0.0.0.0 / :: mean every address), for the startup line.
        self.addresses = [f"[{a[0]}]:{a[1]}" if ":" in str(a[0]) else f"{a[0]}:{a[1]}" for a in runner.addresses]
        shown = host if host not in ("", "0.0.0.0", "::") else ("127.0.0.1" if host != "::" else "::1")
        self.url = f"http://[{shown}]:{self.port}" if ":" in shown else f"http://{shown}:{self.port}"
        for m in self._mounts:
            m.listening(self.url)

    async def stop(self, drain_timeout: float = 10.0) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        for site in list(runner.sites):
            await site.stop()  # no new connections
        if self._inflight > 0:
            self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout=max(0.0, drain_timeout))
            except TimeoutError:
                log.warning(
                    "gateway stop: %d request(s) still in flight after %.0fs; cancelling them",
                    self._inflight,
                    drain_timeout,
                )
                if self._upstream is not None:
                    self._upstream.shutdown()  # they end now: an error event and [DONE], class gateway_shutdown
            finally:
                self._idle = None
        await runner.cleanup()
        self._unsubscribe()
        for m in self._mounts:
            m.stopped()

    def _metrics_tokens(self) -> tuple[str, ...]:
        """Tokens that may read /health and /metrics besides the caller keys."""
        s = self.settings
        env = os.environ.get(s.metrics_token_env) if s.metrics_token_env else None
        return tuple(t for t in (s.metrics_token, env) if t)

    # ------------------------------------------------------------------ views
    async def _health(self, request: web.Request) -> web.Response:
        backends = {n: b.status_label() for n, b in self.backends.items()}
        status = "ok" if any(h == READY for h in backends.values()) or not backends else "degraded"
        body = {"status": status, "inflight": self._inflight, "backends": backends}
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    def _register_metrics(self) -> Exposition:
        """The ``/metrics`` families: telemetry's, then the gateway's own (one line each; see ``telemetry._metrics``)."""
        m = Exposition()
        m.register(self.telemetry)
        bs = self.backends
        m.gauge(
            "forge_backend_up",
            "1 when the gateway's health probe sees the backend ready, else 0.",
            ("backend", "host"),
            lambda: [((n, b.host), float(b.health == READY and b.breaker.state() != "open")) for n, b in bs.items()],
        )
        m.gauge(
            "forge_host_up",
            "1 when the host is reachable (its backends' network word and, with the hosts service, SSH), else 0.",
            ("host",),
            lambda: [
                ((h,), float(r.reachable)) for h, r in self.health.reach.hosts().items() if r.reachable is not None
            ],
        )
        m.gauge("forge_inflight", "Requests the gateway is answering right now.", (), lambda: [((), self._inflight)])
        m.gauge(
            "forge_backend_inflight",
            "Requests holding a backend slot.",
            ("backend",),
            lambda: [((n,), b.limiter.inflight) for n, b in bs.items()],
        )
        m.gauge(
            "forge_backend_queued",
            "Requests waiting for a backend slot.",
            ("backend",),
            lambda: [((n,), b.limiter.queued) for n, b in bs.items()],
        )
        m.counter(
            "forge_backend_events_total",
            "Request-path events by backend (BackendRuntime.events: connect_timeout, read_timeout, went_bad, "
            "redispatched, cancelled_upstream, spilled_from/to, no_replay, connections_opened, ...).",
            ("backend", "host", "event"),
            lambda: [((n, b.host, e), v) for n, b in bs.items() for e, v in sorted(b.events.items())],
        )
        return m

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
