"""Assemble a running forge: catalog + state overlay + telemetry + hosts service + gateway + operator service.

One place builds the object graph, so ``serve``, the embedded console, the demo, the tests
and the benchmark all run the same product (telemetry, thinking policy, routing, audit on).
The operator service sits over the rest; its admin HTTP API is mounted on the gateway's port
(the gateway never imports it): ``rt.operator``, ``rt.admin`` (``.token``, ``.token_path``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .config import Catalog, load_catalog
from .gateway.app import Gateway
from .operator.admin_http import AdminHttp
from .operator.service import OperatorService
from .state import RoutingState, default_state_dir
from .telemetry import Telemetry

__all__ = ["Runtime"]


class Runtime:
    def __init__(
        self,
        config_path: str | Path,
        *,
        catalog: Catalog | None = None,
        state_dir: str | Path | None = None,
        host: str | None = None,
        port: int | None = None,
        admin_token: str | None = None,
        api_keys: Sequence[str] = (),
        with_hosts: bool = True,
        history: bool | None = None,
        probe_interval_s: float = 15.0,
    ) -> None:
        self.config_path = Path(config_path)
        self.catalog = catalog or load_catalog(self.config_path)
        g = self.catalog.gateway
        self.state_dir = Path(state_dir or g.state_dir or default_state_dir(self.config_path)).expanduser()
        self.host = host or g.host
        self.port = g.port if port is None else port
        self.admin_token = (
            admin_token or g.admin_token or (os.environ.get(g.admin_token_env) if g.admin_token_env else None)
        )
        self.api_keys = tuple(api_keys) or g.api_keys
        self.state = RoutingState(self.catalog, self.state_dir)
        use_history = g.history if history is None else history
        self.telemetry = Telemetry(
            self.state_dir / "history.sqlite3" if use_history else None,
            history_retention_days=g.history_retention_days,
            history_rollup_days=g.history_rollup_days,
        )
        self.hosts = None
        if with_hosts:
            from .hosts import HostsService

            self.hosts = HostsService(
                self.catalog,
                state_dir=self.state_dir,
                gateway_url=lambda: self.url,
                state=self.state,
                probe_interval_s=probe_interval_s,
            )
        self.gateway = Gateway(
            self.catalog,
            self.state,
            telemetry=self.telemetry,
            config_path=str(self.config_path),
            api_keys=self.api_keys,
        )
        if self.hosts is not None:
            self.hosts.use_health(self.gateway.health)  # one backend probe loop in the process: the gateway's
        self.operator = OperatorService(self.state, telemetry=self.telemetry, gateway=self.gateway, hosts=self.hosts)
        self.admin = AdminHttp.for_run(self.operator, self.admin_token, self.state_dir)
        self.gateway.mount(self.admin)
        # Placement pins (x-forge-placement: eval compare runs) are for the admin token's holder only.
        self.gateway.openai.allow_placement(self.admin.token)
        self._started = False

    @property
    def url(self) -> str | None:
        return self.gateway.url if self._started else None

    async def start(self) -> None:
        await self.telemetry.start()
        try:
            await self.gateway.start(self.host, self.port)
        except BaseException:
            await self.telemetry.close()
            raise
        self._started = True
        if self.hosts is not None:
            await self.hosts.start()

    async def stop(self, drain_timeout: float = 10.0) -> None:
        if self.hosts is not None:
            await self.hosts.close()
        if self._started:
            await self.gateway.stop(drain_timeout)
            self._started = False
        await self.telemetry.close()

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
