"""The serving stack: ``llama-server --version`` (every format), ``/props`` build_info, llama-swap
``/api/version``, ``/running`` and ``/api/performance``, llama-server ``/health`` and ``/slots``."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ...errortext import error_message
from .model import MIB, GpuMemory

__all__ = [
    "GgmlDevice",
    "LlamaVersion",
    "RunningModel",
    "ServerHealth",
    "ServerProps",
    "SwapVersion",
    "parse_build_info",
    "parse_llama_version",
    "parse_server_health",
    "parse_server_props",
    "parse_server_slots",
    "parse_swap_performance",
    "parse_swap_running",
    "parse_swap_version",
]


@dataclass(frozen=True, slots=True)
class GgmlDevice:
    index: int
    name: str
    gfx_target: str | None = None
    vram_total: int | None = None


@dataclass(frozen=True, slots=True)
class LlamaVersion:
    build: int | None  # LLAMA_BUILD_NUMBER; 0 when built outside git
    commit: str | None
    version: str | None = None  # the semantic version of new builds ("0.3.0-dev")
    compiler: str | None = None
    target: str | None = None
    backend: str | None = None  # from the device prelude: ROCm, CUDA, Vulkan, Metal
    devices: tuple[GgmlDevice, ...] = ()

    @property
    def label(self) -> str:
        if not self.build and (self.commit in (None, "unknown")):
            return "unknown build (built outside git)"
        b = f"b{self.build}" if self.build else "build ?"
        return f"{b} ({self.commit})" if self.commit else b


_OLD = re.compile(r"^version:\s*(\d+)\s*\(([^)]*)\)\s*$")
_NEW = re.compile(r"^version:\s*(\S+)\s*\(build\s*(\d+),\s*commit\s*([^)\s]*)\)\s*$")
_BUILT = re.compile(r"^built with (.*?) for ?(.*)$")
_INIT = re.compile(r"^ggml_(\w+?)_init: found (\d+) (\w+) devices")
_DEVICE = re.compile(r"^\s*Device (\d+): ([^,]+)(?:, (gfx[0-9a-f]+))?.*?(?:VRAM: (\d+) MiB)?\s*$")


def parse_llama_version(text: str) -> LlamaVersion:
    """``llama-server --version`` / ``llama-cli --version`` (stderr + stdout together).

    Old builds print ``version: 4291 (ce8784bd)``; builds from 2026 print
    ``version: 0.3.0-dev (build 10621, commit c1d0e7a00)``. Both follow with
    ``built with <compiler> for <target>`` (the target can be empty), and GPU builds print the
    ggml device lines first.
    """
    build = commit = version = compiler = target = backend = None
    devices: list[GgmlDevice] = []
    found = False
    for line in text.splitlines():
        s = line.rstrip()
        if m := _NEW.match(s.strip()):
            version, build, commit, found = m.group(1), int(m.group(2)), m.group(3), True
        elif m := _OLD.match(s.strip()):
            build, commit, found = int(m.group(1)), m.group(2), True
        elif m := _BUILT.match(s.strip()):
            compiler, target = m.group(1).strip(), (m.group(2).strip() or None)
        elif m := _INIT.match(s.strip()):
            backend = m.group(3)
        elif (m := _DEVICE.match(s)) and s.startswith("  "):
            devices.append(
                GgmlDevice(
                    int(m.group(1)), m.group(2).strip(), m.group(3), int(m.group(4)) * MIB if m.group(4) else None
                )
            )
    if not found:
        raise ValueError(f"no 'version:' line in --version output: {text.strip()[-120:]!r}")
    return LlamaVersion(build, commit, version, compiler, target, backend, tuple(devices))


def parse_build_info(text: str) -> LlamaVersion:
    """``/props`` ``build_info``: ``b6327-4d74393b`` (``b0-unknown`` outside git)."""
    m = re.fullmatch(r"b(\d+)-(\w+)", text.strip())
    if not m:
        raise ValueError(f"unexpected build_info {text!r}")
    return LlamaVersion(int(m.group(1)), m.group(2))


@dataclass(frozen=True, slots=True)
class SwapVersion:
    version: str
    commit: str | None = None
    build_date: str | None = None

    @property
    def label(self) -> str:
        return f"llama-swap {self.version}" + (f" ({self.commit[:8]})" if self.commit else "")


def parse_swap_version(data: Any) -> SwapVersion:
    if not isinstance(data, dict) or "version" not in data:
        raise ValueError("llama-swap /api/version: expected {'version', 'commit', 'build_date'}")
    return SwapVersion(str(data["version"]), data.get("commit") or None, data.get("build_date") or None)


@dataclass(frozen=True, slots=True)
class RunningModel:
    model: str
    state: str  # stopped, starting, ready, stopping, shutdown (older builds: failed)
    ttl: int | None = None
    proxy: str | None = None


def parse_swap_running(data: Any) -> list[RunningModel]:
    """``GET /running``: ``{"running": [{"model", "state", "cmd", "proxy", "ttl", ...}]}``."""
    items = data.get("running") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("llama-swap /running: expected {'running': [...]}")
    out = []
    for it in items:
        if isinstance(it, dict) and it.get("model"):
            ttl = it.get("ttl")
            out.append(
                RunningModel(
                    str(it["model"]),
                    str(it.get("state") or "unknown"),
                    int(ttl) if isinstance(ttl, int) else None,
                    it.get("proxy"),
                )
            )
    return out


def parse_swap_performance(data: Any) -> list[GpuMemory]:
    """``GET /api/performance`` (newer llama-swap): ``gpu_stats`` with ``mem_used_mb``/``mem_total_mb``.
    Empty when monitoring is off (``enabled: false``)."""
    if not isinstance(data, dict):
        raise ValueError("llama-swap /api/performance: expected an object")
    if data.get("enabled") is False:
        return []
    out = []
    for i, g in enumerate(data.get("gpu_stats") or []):
        if not isinstance(g, dict):
            continue
        used, total = g.get("mem_used_mb"), g.get("mem_total_mb")
        gid = g.get("id")
        out.append(
            GpuMemory(
                index=gid if isinstance(gid, int) else i,
                source="llama-swap",
                name=g.get("name"),
                vram_used=int(used * MIB) if isinstance(used, (int, float)) else None,
                vram_total=int(total * MIB) if isinstance(total, (int, float)) else None,
                util_pct=float(g["gpu_util_pct"]) if isinstance(g.get("gpu_util_pct"), (int, float)) else None,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class ServerHealth:
    state: str  # ready, loading, error
    detail: str = ""


def parse_server_health(status: int, data: Any) -> ServerHealth:
    """llama-server ``/health``: 200 ``{"status":"ok"}``; 503 ``Loading model`` while loading."""
    if status == 200:
        return ServerHealth("ready")
    msg = error_message(data) if data is not None else ""
    if status == 503 and "loading" in msg.lower():
        return ServerHealth("loading", msg)
    return ServerHealth("error", f"HTTP {status}: {msg}".strip())


@dataclass(frozen=True, slots=True)
class ServerProps:
    model_path: str | None
    total_slots: int | None
    build: LlamaVersion | None
    modalities: dict[str, bool] = field(default_factory=dict)


def parse_server_props(data: Any) -> ServerProps:
    if not isinstance(data, dict):
        raise ValueError("llama-server /props: expected an object")
    build = None
    if isinstance(data.get("build_info"), str):
        try:
            build = parse_build_info(data["build_info"])
        except ValueError:
            build = None
    mods = data.get("modalities")
    mods = mods if isinstance(mods, dict) else {}
    slots = data.get("total_slots")
    return ServerProps(
        data.get("model_path"),
        slots if isinstance(slots, int) else None,
        build,
        {str(k): bool(v) for k, v in mods.items()},
    )


def parse_server_slots(data: Any) -> tuple[int, int]:
    """``/slots``: (busy, total) from each slot's ``is_processing``."""
    if not isinstance(data, list):
        raise ValueError("llama-server /slots: expected a list")
    busy = sum(1 for s in data if isinstance(s, dict) and s.get("is_processing"))
    return busy, len(data)
