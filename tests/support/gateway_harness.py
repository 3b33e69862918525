"""Build catalogs in code and run a real ``Gateway`` (real Telemetry, real RoutingState) on loopback,
with the operator service over it and its admin API mounted, as the runtime wires them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from forge_tui.config import Catalog
from forge_tui.gateway import Gateway
from forge_tui.operator.admin_http import AdminHttp
from forge_tui.operator.service import OperatorService
from forge_tui.state import RoutingState
from forge_tui.telemetry import RequestRecord, Telemetry

__all__ = ["Harness", "make_catalog", "running_gateway"]


def make_catalog(
    backends: dict[str, dict[str, Any]],
    models: dict[str, dict[str, Any]],
    roles: dict[str, dict[str, Any]],
    *,
    families: dict[str, dict[str, Any]] | None = None,
    gateway: dict[str, Any] | None = None,
    trial: dict[str, Any] | None = None,
    hosts: dict[str, dict[str, Any]] | None = None,
) -> Catalog:
    """A catalog with sensible test defaults: one ``local`` host, llama-server backends, family ``plain``."""
    data: dict[str, Any] = {
        "gateway": {"health_interval_s": 60, **(gateway or {})},
        "hosts": hosts
        or {"local": {"address": "127.0.0.1", "platform": "cpu", "memory_budget_gb": 8, "transport": "local"}},
        "backends": {n: {"host": "local", "kind": "llama-server", **b} for n, b in backends.items()},
        "families": families or {"plain": {"thinking": "none"}, "thinker": {"thinking": "off-by-default"}},
        "models": {m: {"family": "plain", "architecture": "gemma3", **d} for m, d in models.items()},
        "roles": roles,
    }
    if trial:
        data["trial"] = trial
    return Catalog.model_validate(data)


def single_model_catalog(url: str, **backend: Any) -> Catalog:
    """The smallest useful catalog: backend ``a`` at ``url``, model ``m`` on it, ``default-chat`` -> ``m``."""
    return make_catalog(
        backends={"a": {"base_url": url, **backend}},
        models={"m": {"placements": [{"backend": "a"}]}},
        roles={"default-chat": {"model": "m"}},
    )


@dataclass
class Harness:
    gw: Gateway
    state: RoutingState
    telemetry: Telemetry
    operator: OperatorService
    admin: AdminHttp
    records: list[RequestRecord] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.gw.url

    def client(self, **kw: Any) -> AsyncOpenAI:
        kw.setdefault("api_key", "test")
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 60)
        return AsyncOpenAI(base_url=self.gw.url + "/v1", **kw)

    async def record(self, request_id: str, timeout: float = 5.0) -> RequestRecord:
        """The request's record (it is written as the handler finishes, which may trail the response)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.records:
                if r.request_id == request_id:
                    return r
            await asyncio.sleep(0.02)
        raise AssertionError(
            f"no telemetry record for request {request_id} within {timeout}s "
            f"(have {[r.request_id for r in self.records]})"
        )

    async def wait_records(self, n: int, timeout: float = 5.0) -> list[RequestRecord]:
        deadline = time.monotonic() + timeout
        while len(self.records) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(self.records) >= n, f"expected {n} records, got {len(self.records)}"
        return self.records


@asynccontextmanager
async def running_gateway(
    catalog: Catalog,
    *,
    state_dir: str | Path | None = None,
    api_keys: Sequence[str] = (),
    admin_token: str | None = None,
    hosts: Any = None,
    config_path: str | None = None,
) -> AsyncIterator[Harness]:
    state = RoutingState(catalog, state_dir)
    tel = Telemetry(None)
    await tel.start()
    gw = Gateway(catalog, state, telemetry=tel, api_keys=api_keys, config_path=config_path)
    operator = OperatorService(state, telemetry=tel, gateway=gw, hosts=hosts)
    admin = AdminHttp.for_run(operator, admin_token, state.state_dir)
    gw.mount(admin)
    gw.openai.allow_placement(admin.token)
    h = Harness(gw, state, tel, operator, admin)
    tel.subscribe(h.records.append)
    await h.gw.start("127.0.0.1", 0)
    try:
        yield h
    finally:
        await h.gw.stop(drain_timeout=2)
        await tel.close()
