"""The gateway: an aiohttp application embeddable in a running event loop.

    gw = Gateway(catalog, state, telemetry=tel, admin_token=..., api_keys=(), hosts=None)
    await gw.start("127.0.0.1", 0)    # GatewayBindError (never sys.exit) when the port is taken
    gw.url, gw.port, gw.inflight, gw.snapshot()
    gw.admin_token, gw.admin_token_path   # the admin API's token; the 0600 file it was written to, if any
    await gw.stop(drain_timeout=10)   # stop accepting, let in-flight requests finish, close the client

The admin API always requires a token. With none configured the gateway generates one per run;
``start()`` writes it to ``<state_dir>/admin.token`` (mode 0600) once the port is bound, so a
second gateway that fails to bind never clobbers a running one's file; ``stop()`` removes it.

No signal handlers are installed and nothing is logged per request; ``AppRunner`` + ``TCPSite``
keep the console's loop in charge.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from aiohttp import web

from ..config.models import Catalog
from ..schema import Snapshot
from ..state import AuditEntry, RoutingState
from .admin import AdminApi
from .admin_token import TOKEN_FILE_NAME, new_token, remove_token_file, write_token_file
from .api import OpenAIApi
from .backends import READY, BackendRuntime, Breaker, HealthProber, Limiter
from .errors import GatewayBindError
from .protocols import HostsLike, TelemetryLike
from .routing import RouteTable
from .snapshot import build_snapshot
from .upstream import Upstream

__all__ = ["Gateway", "GatewayBindError"]

log = logging.getLogger("forge_tui.gateway")


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Gateway:
    def __init__(
        self,
        catalog: Catalog,
        state: RoutingState,
        *,
        telemetry: TelemetryLike,
        config_path: str | None = None,
        admin_token: str | None = None,
        api_keys: Sequence[str] = (),
        hosts: HostsLike | None = None,
    ) -> None:
        self.catalog = catalog
        self.state = state
        self.telemetry = telemetry
        self.config_path = config_path
        self.hosts = hosts
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
        self._placements: dict[str, dict[str, str]] = {}
        for mid, m in catalog.models.items():
            for p in m.placements:
                self._placements.setdefault(p.backend, {})[p.name or mid] = mid
        self._table = self._build_table()
        self._unsubscribe = state.subscribe(self._on_state_change)
        self._inflight = 0
        self._idle: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._prober: HealthProber | None = None
        self._upstream: Upstream | None = None
        self.url = ""
        self.port = 0
        # An empty configured token counts as none: the admin API is never open.
        self._token_generated = not admin_token
        self.admin_token: str = admin_token or new_token()
        # Where start() writes a generated token (None: configured token, or no state dir: memory only).
        self.admin_token_path: Path | None = (
            state.state_dir / TOKEN_FILE_NAME if self._token_generated and state.state_dir is not None else None
        )
        self.app = self._build_app(self.admin_token)

    # ------------------------------------------------------------------ wiring
    def _build_app(self, admin_token: str) -> web.Application:
        app = web.Application(client_max_size=int(self.settings.max_body_mb * 1024 * 1024))
        self.openai = OpenAIApi(self)
        self.admin = AdminApi(self, admin_token)
        app.add_routes(self.openai.routes())
        app.add_routes(self.admin.routes())
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
        self._prober = HealthProber(self.backends, self._session, self.settings.health_interval_s)
        self._prober.start()
        await self._prober.first_round(timeout=1.0)  # know who is up before the first request arrives

    async def _on_cleanup(self, app: web.Application) -> None:
        if self._prober is not None:
            await self._prober.stop()
        if self._upstream is not None:
            self._upstream.close()
        if self._session is not None:
            await self._session.close()

    @property
    def upstream(self) -> Upstream:
        if self._upstream is None:
            raise RuntimeError("gateway not started")
        return self._upstream

    @property
    def prober(self) -> HealthProber | None:
        return self._prober

    def _build_table(self) -> RouteTable:
        return RouteTable(self.state, config_path=self.config_path, started_at=self.started_at)

    def _on_state_change(self, entry: AuditEntry) -> None:
        self._table = self._build_table()

    def table(self) -> RouteTable:
        t = self._table
        if not t.current(self.state):  # a change that bypassed the listener still routes anew
            t = self._table = self._build_table()
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
        await runner.setup()
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
        if self.admin_token_path is not None:
            try:
                write_token_file(self.admin_token_path, self.admin_token)
            except OSError as exc:
                log.warning(
                    "cannot write the admin token to %s (%s); it stays in memory only: set "
                    "FORGE_ADMIN_TOKEN to choose one",
                    self.admin_token_path,
                    exc.strerror or exc,
                )
                self.admin_token_path = None
        addr = runner.addresses[0]
        self.port = int(addr[1])
        shown = host if host not in ("", "0.0.0.0", "::") else ("127.0.0.1" if host != "::" else "::1")
        self.url = f"http://[{shown}]:{self.port}" if ":" in shown else f"http://{shown}:{self.port}"

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
            finally:
                self._idle = None
        await runner.cleanup()
        self._unsubscribe()
        if self.admin_token_path is not None:
            remove_token_file(self.admin_token_path, self.admin_token)

    # ------------------------------------------------------------------ views
    def snapshot(self) -> Snapshot:
        return build_snapshot(self)

    async def _health(self, request: web.Request) -> web.Response:
        backends = {n: b.status_label() for n, b in self.backends.items()}
        status = "ok" if any(h == READY for h in backends.values()) or not backends else "degraded"
        body = {"status": status, "inflight": self._inflight, "backends": backends}
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    async def _metrics(self, request: web.Request) -> web.Response:
        lines = [
            "# HELP forge_backend_up 1 when the gateway's health probe sees the backend ready, else 0.",
            "# TYPE forge_backend_up gauge",
        ]
        for n, b in self.backends.items():
            up = 1 if b.health == READY and b.breaker.state() != "open" else 0
            lines.append(f'forge_backend_up{{backend="{_label(n)}",host="{_label(b.host)}"}} {up}')
        lines += [
            "# HELP forge_inflight Requests the gateway is answering right now.",
            "# TYPE forge_inflight gauge",
            f"forge_inflight {self._inflight}",
            "# HELP forge_backend_inflight Requests holding a backend slot.",
            "# TYPE forge_backend_inflight gauge",
        ]
        lines += [
            f'forge_backend_inflight{{backend="{_label(n)}"}} {b.limiter.inflight}' for n, b in self.backends.items()
        ]
        lines += [
            "# HELP forge_backend_queued Requests waiting for a backend slot.",
            "# TYPE forge_backend_queued gauge",
        ]
        lines += [f'forge_backend_queued{{backend="{_label(n)}"}} {b.limiter.queued}' for n, b in self.backends.items()]
        text = self.telemetry.prometheus().rstrip("\n") + "\n" + "\n".join(lines) + "\n"
        return web.Response(body=text.encode(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
