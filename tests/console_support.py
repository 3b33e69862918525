"""Helpers for the console tests.

``RecordedControl`` is a stand-in ``Control`` that replays one fixed ``Snapshot``. It exists only
for the snapshot (SVG) tests: a live gateway's clocks, ports, probe ages and latencies differ on
every run, so a pixel comparison needs a recorded view. Every behaviour test drives the real
gateway (LocalControl or RemoteControl) instead.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from rich.console import Console
from textual.app import App
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widget import Widget

from forge_tui.config.models import Catalog
from forge_tui.control.base import ControlError
from forge_tui.runtime import Runtime
from forge_tui.schema import (
    AuditInfo,
    BackendInfo,
    ChangeResult,
    ErrorInfo,
    HostInfo,
    JobInfo,
    ModelInfo,
    PreflightCheck,
    PreflightResult,
    RequestInfo,
    RoleInfo,
    RoleStats,
    SeriesPoint,
    Snapshot,
    TelemetryInfo,
)

__all__ = [
    "ADMIN_TOKEN",
    "T0",
    "RecordedControl",
    "console_catalog",
    "console_catalog_data",
    "homelab_snapshot",
    "screen_text",
    "wait_until",
    "widget_text",
]

ADMIN_TOKEN = "console-test-token"


def console_runtime(
    catalog: Catalog,
    tmp_path: Path,
    *,
    name: str = "console.yaml",
    state: str = "state",
    history: bool = False,
    with_hosts: bool = False,
    probe_interval_s: float = 15.0,
) -> Runtime:
    """A forge on a free loopback port with the tests' admin token, not yet started."""
    return Runtime(
        tmp_path / name,
        catalog=catalog,
        state_dir=tmp_path / state,
        host="127.0.0.1",
        port=0,
        admin_token=ADMIN_TOKEN,
        with_hosts=with_hosts,
        history=history,
        probe_interval_s=probe_interval_s,
    )


@asynccontextmanager
async def running_runtime(catalog: Catalog, tmp_path: Path, **kw: object) -> AsyncIterator[Runtime]:
    """``console_runtime`` started, and stopped (5 s drain) when the block ends."""
    rt = console_runtime(catalog, tmp_path, **kw)  # type: ignore[arg-type]
    await rt.start()
    try:
        yield rt
    finally:
        await rt.stop(drain_timeout=5)


# 2026-04-10 12:00:00 UTC: every time in the recorded snapshot is relative to this.
T0 = 1775822400.0


def _series(base: float, spread: float, n: int = 20) -> list[SeriesPoint]:
    points = []
    for i in range(n):
        wobble = ((i * 7) % 5) * spread / 5
        points.append(
            SeriesPoint(t=T0 - 600 + i * 30, count=3 + i % 4, p50_ms=base + wobble, p95_ms=base * 2.2 + wobble * 2)
        )
    return points


def homelab_snapshot() -> Snapshot:
    """The story's homelab mid-trial: Gemma 4 in the roles, Qwen deprecated, one backend down."""
    roles = [
        RoleInfo(
            name="default-chat",
            model="gemma-4-chat-31b",
            previous="qwen3.6-chat-35b-a3b",
            requires=["chat"],
            in_trial=True,
            rollback_by="2026-04-24",
        ),
        RoleInfo(
            name="priority-chat",
            model="gemma-4-chat-26b-a4b",
            previous="qwen3-8b",
            requires=["chat"],
            in_trial=True,
            rollback_by="2026-04-24",
        ),
        RoleInfo(
            name="vision",
            model="gemma-4-multimodal-8b-e4b",
            previous="qwen3-vl-30b-a3b",
            requires=["chat", "vision"],
            in_trial=True,
            rollback_by="2026-04-24",
        ),
        RoleInfo(
            name="prompt-enhance",
            model="gemma-4-multimodal-2b-e2b",
            previous="qwen3-4b",
            requires=["chat"],
            in_trial=True,
            rollback_by="2026-04-24",
        ),
        RoleInfo(name="embed", model="nomic-embed-v1.5", requires=["embed"]),
    ]
    models = [
        ModelInfo(
            id="gemma-4-chat-31b",
            family="gemma4",
            architecture="gemma4",
            capabilities=["chat", "code"],
            state="hot",
            memory_gb=20.5,
            hosts=["furnace"],
            roles=["default-chat"],
            loaded=True,
        ),
        ModelInfo(
            id="gemma-4-chat-26b-a4b",
            family="gemma4",
            architecture="gemma4",
            capabilities=["chat"],
            state="hot",
            memory_gb=17.0,
            hosts=["furnace"],
            roles=["priority-chat"],
            loaded=True,
        ),
        ModelInfo(
            id="gemma-4-multimodal-8b-e4b",
            family="gemma4",
            architecture="gemma4",
            capabilities=["chat", "vision"],
            state="on-demand",
            memory_gb=6.2,
            hosts=["anvil", "crucible"],
            roles=["vision"],
        ),
        ModelInfo(
            id="gemma-4-multimodal-2b-e2b",
            family="gemma4",
            architecture="gemma4",
            capabilities=["chat", "vision"],
            state="hot",
            memory_gb=2.4,
            hosts=["crucible"],
            roles=["prompt-enhance"],
            loaded=True,
        ),
        ModelInfo(
            id="qwen3.6-chat-35b-a3b",
            family="qwen3",
            architecture="qwen3moe",
            capabilities=["chat"],
            state="cold",
            deprecated=True,
            sunset="2026-04-24",
            memory_gb=22.0,
            hosts=["furnace"],
        ),
        ModelInfo(
            id="qwen3-8b",
            family="qwen3",
            architecture="qwen3",
            capabilities=["chat"],
            state="cold",
            deprecated=True,
            sunset="2026-04-24",
            memory_gb=5.6,
            hosts=["crucible"],
        ),
        ModelInfo(
            id="qwen3-vl-30b-a3b",
            family="qwen3",
            architecture="qwen3vlmoe",
            capabilities=["chat", "vision"],
            state="cold",
            deprecated=True,
            sunset="2026-04-24",
            memory_gb=19.0,
            hosts=["furnace"],
        ),
        ModelInfo(
            id="qwen3-4b",
            family="qwen3",
            architecture="qwen3",
            capabilities=["chat"],
            state="cold",
            deprecated=True,
            sunset="2026-04-24",
            memory_gb=2.8,
            hosts=["crucible"],
        ),
        ModelInfo(
            id="nomic-embed-v1.5",
            family="nomic",
            architecture="nomic-bert",
            capabilities=["embed"],
            state="hot",
            memory_gb=0.3,
            hosts=["crucible"],
            roles=["embed"],
            loaded=True,
        ),
        ModelInfo(
            id="devstral2-123b",
            family="devstral",
            architecture="mistral",
            capabilities=["chat", "code"],
            state="disabled",
            memory_gb=70.0,
            hosts=["furnace"],
        ),
    ]
    hosts = [
        HostInfo(
            name="furnace",
            address="10.0.0.10",
            platform="amd-rocm",
            memory_budget_gb=96,
            reachable=True,
            memory_used_gb=41.2,
            memory_total_gb=96,
            memory_source="sysfs gtt",
            probed_at=T0 - 3,
            serving_version="llama.cpp b6702",
            backends=[
                BackendInfo(
                    name="furnace-swap",
                    host="furnace",
                    kind="llama-swap",
                    base_url="http://10.0.0.10:8080",
                    health="ready",
                    inflight=1,
                    max_concurrency=4,
                    loaded_models=["gemma-4-chat-31b", "gemma-4-chat-26b-a4b"],
                    checked_at=T0 - 2,
                )
            ],
        ),
        HostInfo(
            name="crucible",
            address="10.0.0.11",
            platform="amd-rocm",
            memory_budget_gb=64,
            reachable=True,
            memory_used_gb=55.0,
            memory_total_gb=64,
            memory_source="rocm-smi",
            probed_at=T0 - 4,
            backends=[
                BackendInfo(
                    name="crucible-swap",
                    host="crucible",
                    kind="llama-swap",
                    base_url="http://10.0.0.11:8080",
                    health="starting",
                    max_concurrency=2,
                    loaded_models=["gemma-4-multimodal-2b-e2b"],
                    checked_at=T0 - 2,
                    detail="loading gemma-4-multimodal-8b-e4b",
                ),
                BackendInfo(
                    name="crucible-audio",
                    host="crucible",
                    kind="audio-sidecar",
                    base_url="http://10.0.0.11:9000",
                    health="circuit-open",
                    max_concurrency=1,
                    detail="connect refused (3 in a row)",
                    checked_at=T0 - 9,
                ),
            ],
        ),
        HostInfo(
            name="anvil",
            address="10.0.0.12",
            platform="apple",
            memory_budget_gb=24,
            reachable=False,
            memory_source="vm_stat",
            memory_used_gb=None,
            memory_total_gb=24,
            probed_at=T0 - 95,
            error="ssh: connect timed out after 10s",
            backends=[
                BackendInfo(
                    name="anvil-mlx",
                    host="anvil",
                    kind="openai-compatible",
                    base_url="http://10.0.0.12:8081",
                    health="down",
                    max_concurrency=1,
                    detail="connect timed out",
                    checked_at=T0 - 30,
                )
            ],
        ),
    ]
    stats = [
        RoleStats(
            role="default-chat",
            count=60,
            errors=2,
            p50_ms=820,
            p95_ms=2100,
            ttft_p50_ms=180,
            rps=0.1,
            series=_series(800, 200),
        ),
        RoleStats(
            role="priority-chat",
            count=41,
            errors=0,
            p50_ms=410,
            p95_ms=900,
            ttft_p50_ms=95,
            rps=0.07,
            series=_series(400, 120),
        ),
        RoleStats(role="vision", count=6, errors=3, p50_ms=5200, p95_ms=9100, rps=0.01, series=_series(5000, 900, n=6)),
    ]
    recent = [
        RequestInfo(
            time=T0 - 40 + i * 4,
            request_id=f"req-{i:04d}",
            endpoint="/v1/chat/completions",
            role=("default-chat", "priority-chat", "vision")[i % 3],
            model=("gemma-4-chat-31b", "gemma-4-chat-26b-a4b", "gemma-4-multimodal-8b-e4b")[i % 3],
            host=("furnace", "furnace", "crucible")[i % 3],
            backend="furnace-swap",
            stream=i % 2 == 0,
            status=502 if i == 5 else 200,
            error_class="upstream_error" if i == 5 else "ok",
            latency_ms=400 + 90 * i,
            ttft_ms=80 + 9 * i,
            tokens_in=120 + i,
            tokens_out=40 + 3 * i,
            thinking_injected=True,
            fallback=i == 7,
            seq=1000 + i,
        )
        for i in range(10)
    ]
    errors = [
        ErrorInfo(
            time=T0 - 20,
            request_id="req-0005",
            error_class="upstream_error",
            status=502,
            role="vision",
            model="gemma-4-multimodal-8b-e4b",
            host="crucible",
            backend="crucible-swap",
            message="llama_model_load: error loading model: unknown model architecture: 'gemma4'",
        ),
        ErrorInfo(
            time=T0 - 200,
            request_id="req-x1",
            error_class="saturated",
            status=429,
            role="default-chat",
            model="gemma-4-chat-31b",
            host="furnace",
            message="backend furnace-swap is saturated; retry after 2s",
        ),
    ]
    telemetry = TelemetryInfo(
        window_s=600,
        total=107,
        rps=0.18,
        inflight=1,
        roles=stats,
        errors_by_class={"ok": 102, "upstream_error": 3, "saturated": 2},
        errors_by_target={"vision/gemma-4-multimodal-8b-e4b": 3, "default-chat/gemma-4-chat-31b": 2},
        last_errors=errors,
        recent=recent,
        thinking_leaks=1,
    )
    return Snapshot(
        gateway_url="http://127.0.0.1:8600",
        config_path="config/forge.yaml",
        trial="gemma4-migration",
        trial_rollback_by="2026-04-24",
        roles=roles,
        models=models,
        hosts=hosts,
        telemetry=telemetry,
        jobs=[],
        taken_at=T0,
    )


class RecordedControl:
    """Replays a fixed snapshot; reads answer from it, changes are refused (it is a recording)."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self._snapshot = snapshot or homelab_snapshot()

    @property
    def gateway_url(self) -> str:
        return self._snapshot.gateway_url

    @property
    def mode(self) -> str:
        return "recorded"

    async def snapshot(self) -> Snapshot:
        return self._snapshot

    async def eligible_models(self, role: str) -> list[str]:
        info = next((r for r in self._snapshot.roles if r.name == role), None)
        if info is None:
            raise ControlError(f"unknown role {role!r}")
        return [
            m.id
            for m in self._snapshot.models
            if m.state != "disabled" and all(c in m.capabilities for c in info.requires)
        ]

    async def preflight(self, role: str, model: str) -> PreflightResult:
        info = next(m for m in self._snapshot.models if m.id == model)
        host = info.hosts[0] if info.hosts else None
        checks = [
            PreflightCheck(name="weights", outcome="pass", evidence=f"/models/{model}.gguf on {host} (18.2 GB)"),
            PreflightCheck(
                name="architecture",
                outcome="pass",
                evidence=f"llama-server b6702 loads general.architecture={info.architecture}",
            ),
            PreflightCheck(name="memory", outcome="warn", evidence="hot set 58.1/64 GB after the swap"),
        ]
        return PreflightResult(role=role, model=model, host=host, checks=checks)

    async def _refuse(self) -> ChangeResult:
        return ChangeResult(ok=False, message="a recorded snapshot cannot be changed")

    async def swap(
        self, role: str, model: str, *, force: bool = False, actor: str = "operator", preflight_id: str | None = None
    ) -> ChangeResult:
        return await self._refuse()

    async def rollback(self, role: str, *, actor: str = "operator") -> ChangeResult:
        return await self._refuse()

    async def rollback_trial(self, *, actor: str = "operator") -> ChangeResult:
        return await self._refuse()

    async def set_deprecated(
        self, model: str, deprecated: bool, *, sunset: str | None = None, actor: str = "operator"
    ) -> ChangeResult:
        return await self._refuse()

    async def audit(self, limit: int = 200) -> list[AuditInfo]:
        return [
            AuditInfo(
                time="2026-04-10T09:12:03+00:00",
                actor="operator",
                action="swap",
                target="default-chat",
                before={"model": "qwen3.6-chat-35b-a3b"},
                after={"model": "gemma-4-chat-31b"},
            ),
            AuditInfo(
                time="2026-04-10T09:13:40+00:00",
                actor="operator",
                action="deprecate",
                target="qwen3.6-chat-35b-a3b",
                before={"deprecated": False},
                after={"deprecated": True, "sunset": "2026-04-24"},
            ),
        ][-limit:]

    async def start_job(self, kind: str, host: str) -> JobInfo:
        raise ControlError("a recorded snapshot runs no jobs")

    async def job_log(self, job_id: str, since: int = 0) -> list[str]:
        raise ControlError(f"unknown job {job_id!r}")

    async def cancel_job(self, job_id: str) -> JobInfo:
        raise ControlError(f"unknown job {job_id!r}")

    async def close(self) -> None:
        return None


async def wait_until(
    pilot: Pilot[object], cond: Callable[[], object], *, timeout: float = 30.0, what: str = "condition"
) -> None:
    """Let the app run until ``cond()`` is true; fail with ``what`` after ``timeout`` seconds, or at
    once if the app has exited (an exited app would never make ``cond()`` true)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            notices = list(getattr(pilot.app, "notices", []))[-5:]
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what} (screen {pilot.app.screen!r}, "
                f"focus {pilot.app.focused!r}, last notices {notices})"
            )
        if not pilot.app.is_running:
            raise AssertionError(f"the app exited (return code {pilot.app.return_code}) while waiting for {what}")
        await pilot.pause(0.05)
        await asyncio.sleep(0)


def console_catalog(chat_url: str, *, spare_url: str | None = None) -> Catalog:
    return Catalog.model_validate(console_catalog_data(chat_url, spare_url=spare_url))


def console_catalog_data(chat_url: str, *, spare_url: str | None = None) -> dict[str, object]:
    """A small real catalog on the session's llama.cpp server (one honest GGUF, several names).

    ``gemma-a``/``gemma-b`` are the same server under two model ids (so a swap is visible in
    ``x-forge-route``); ``gemma-embed`` claims only ``embed`` and holds no role (an invalid swap
    target for a chat role); ``gemma-missing`` names weights that are not on the host (its
    preflight fails); ``gemma-spare`` lives on ``spare_url`` (a server a test may kill).
    The chat backend carries a ``launch:`` block, as in the demo, so the hosts service treats
    xllamacpp as the local serving stack (``v`` can verify it); the tests start it themselves.
    """
    backends: dict[str, object] = {
        "local-chat": {
            "host": "local",
            "kind": "llama-server",
            "base_url": chat_url,
            "max_concurrency": 4,
            "warmup_timeout_s": 2,
            "launch": {"gguf": "@gemma3-270m"},
        },
    }
    models: dict[str, object] = {
        "gemma-a": {
            "family": "gemma3",
            "architecture": "gemma3",
            "capabilities": ["chat"],
            "gguf": "@gemma3-270m",  # what local-chat runs: its preflight "serves" check passes
            "state": "hot",
            "memory_gb": 0.4,
            "placements": [{"backend": "local-chat"}],
        },
        "gemma-b": {
            "family": "gemma3",
            "architecture": "gemma3",
            "capabilities": ["chat"],
            "gguf": "@gemma3-270m",  # what local-chat runs: its preflight "serves" check passes
            "state": "hot",
            "memory_gb": 0.4,
            "placements": [{"backend": "local-chat"}],
        },
        "gemma-embed": {
            "family": "gemma3",
            "architecture": "gemma3",
            "capabilities": ["embed"],
            "state": "cold",
            "memory_gb": 0.4,
            "placements": [{"backend": "local-chat"}],
        },
        "gemma-missing": {
            "family": "gemma3",
            "architecture": "gemma3",
            "capabilities": ["chat"],
            "state": "cold",
            "gguf": "/nonexistent/forge-console-test/gemma-missing.gguf",
            "memory_gb": 0.4,
            "placements": [{"backend": "local-chat"}],
        },
    }
    if spare_url is not None:
        backends["local-spare"] = {
            "host": "local",
            "kind": "llama-server",
            "base_url": spare_url,
            "max_concurrency": 2,
            "warmup_timeout_s": 1,
        }
        models["gemma-spare"] = {
            "family": "gemma3",
            "architecture": "gemma3",
            "capabilities": ["chat"],
            "gguf": "@gemma3-270m",  # what the test starts local-spare with
            "state": "cold",
            "memory_gb": 0.4,
            "placements": [{"backend": "local-spare"}],
        }
    return {
        "gateway": {"health_interval_s": 1, "history": False},
        "trial": {"name": "console-trial", "rollback_by": "2030-01-01"},
        "hosts": {"local": {"address": "127.0.0.1", "platform": "cpu", "memory_budget_gb": 4, "transport": "local"}},
        "backends": backends,
        "families": {"gemma3": {"thinking": "none"}},
        "models": models,
        "roles": {
            "default-chat": {"model": "gemma-b", "previous": "gemma-a", "trial": True},
            "priority-chat": {"model": "gemma-a"},
            "prompt-enhance": {"model": "gemma-b", "previous": "gemma-a", "trial": True},
        },
    }


def widget_text(widget: Widget) -> str:
    """What the operator sees of ``widget`` right now, as plain text (one line per row), padding included."""
    width, height = widget.region.size
    strips = widget.render_lines(Region(0, 0, width, height))
    return "\n".join(strip.text.rstrip() for strip in strips)


def screen_text(app: App[object]) -> str:
    """The whole terminal as the operator sees it (dialogs over their screen), as plain text."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, record=True)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()
