"""Pydantic models of the catalog: hosts, backends, families, models, roles.

The catalog is what the operator writes (YAML). Every model forbids unknown keys,
so a typo such as ``max_concurency`` is an error at start, not a silent default.
Runtime changes never touch this file; they live in the state overlay (``forge_tui.state``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from enum import Enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ROLE_NAMES",
    "ROLE_REQUIRES",
    "Backend",
    "BackendKind",
    "BuildSettings",
    "Capability",
    "Catalog",
    "Family",
    "GatewaySettings",
    "Host",
    "Launch",
    "Model",
    "ModelState",
    "Placement",
    "Platform",
    "Role",
    "SshSettings",
    "ThinkingPolicy",
    "Trial",
    "TrialCriteria",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Platform(str, Enum):
    AMD_ROCM = "amd-rocm"
    NVIDIA = "nvidia"
    APPLE = "apple"
    CPU = "cpu"


class BackendKind(str, Enum):
    LLAMA_SWAP = "llama-swap"
    LLAMA_SERVER = "llama-server"
    OPENAI_COMPATIBLE = "openai-compatible"
    AUDIO_SIDECAR = "audio-sidecar"


class Capability(str, Enum):
    CHAT = "chat"
    VISION = "vision"
    AUDIO = "audio"
    EMBED = "embed"
    CODE = "code"


class ModelState(str, Enum):
    HOT = "hot"  # kept loaded
    COLD = "cold"  # on disk, loaded when asked
    ON_DEMAND = "on-demand"  # loaded for a request, unloaded after its TTL
    DISABLED = "disabled"  # never routed to


class ThinkingPolicy(str, Enum):
    """What the gateway does about a family's reasoning block."""

    NONE = "none"  # the family does not think; leave the body alone
    OFF_BY_DEFAULT = "off-by-default"  # inject enable_thinking=false unless the caller opts in
    ON = "on"  # let the model think; never inject


# The canonical roles callers use; a catalog may define more.
ROLE_NAMES: tuple[str, ...] = (
    "default-chat",
    "priority-chat",
    "vision",
    "prompt-enhance",
    "embed",
    "transcribe",
    "audio-qa",
)

# What a model must be able to do to hold a role (used to refuse bad swaps).
ROLE_REQUIRES: dict[str, tuple[Capability, ...]] = {
    "default-chat": (Capability.CHAT,),
    "priority-chat": (Capability.CHAT,),
    "vision": (Capability.CHAT, Capability.VISION),
    "prompt-enhance": (Capability.CHAT,),
    "embed": (Capability.EMBED,),
    "transcribe": (Capability.AUDIO,),
    "audio-qa": (Capability.AUDIO,),
}


class SshSettings(_Strict):
    user: str = "forge"
    port: int = Field(22, ge=1, le=65535)
    key_file: str | None = None  # None: use the ssh agent / default keys
    known_hosts: str = "~/.ssh/known_hosts"
    connect_timeout_s: float = Field(10.0, gt=0)
    command_timeout_s: float = Field(30.0, gt=0)
    keepalive_s: float = Field(15.0, gt=0)


class BuildSettings(_Strict):
    """How a host builds its llama.cpp serving binary (used by rebuild/verify jobs)."""

    source_dir: str = "~/src/llama.cpp"
    build_dir: str = "build"  # relative to source_dir
    # A git ref only: a leading "-" would be read by git as an option (--upload-pack=...).
    ref: str = Field("master", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/+-]*$")
    backend: str = "cpu"  # hip, cuda, metal, vulkan, cpu
    gpu_target: str | None = None  # e.g. gfx1151 for Strix Halo
    configure: str | None = None  # full configure command; derived from backend when absent
    build: str | None = None  # full build command; derived when absent
    update: str | None = None  # how to update the source; derived (git fetch/checkout) when absent
    server_binary: str = "bin/llama-server"  # relative to build_dir
    restart: str | None = None  # e.g. "systemctl --user restart llama-swap"
    jobs: int = Field(0, ge=0)  # 0: nproc


class Host(_Strict):
    address: str
    platform: Platform
    memory_budget_gb: float = Field(gt=0)
    description: str = ""
    transport: str = Field("ssh", pattern="^(ssh|local)$")
    ssh: SshSettings = SshSettings()
    model_dirs: tuple[str, ...] = ()
    build: BuildSettings | None = None
    # The llama-server preflight asks about architectures when the host has no build settings
    # (an installed or packaged binary); with build settings the build's binary is the default.
    serving_binary: str | None = None


class Launch(_Strict):
    """A llama.cpp server the console starts itself on a ``local`` host (the demo uses this)."""

    gguf: str  # a path, or "@gemma3-270m" for the GGUF shipped by the demo extra
    ctx_size: int = Field(2048, ge=128)
    parallel: int = Field(2, ge=1)
    embedding: bool = False
    threads: int = Field(1, ge=1)


class Backend(_Strict):
    host: str
    kind: BackendKind
    base_url: str
    max_concurrency: int = Field(4, ge=1)
    max_image_concurrency: int | None = Field(None, ge=1)
    queue_limit: int = Field(32, ge=0)  # requests allowed to wait for a slot
    queue_timeout_s: float = Field(30.0, gt=0)
    warmup_timeout_s: float = Field(120.0, gt=0)
    request_timeout_s: float = Field(600.0, gt=0)
    # LAN-sized: one connect timeout marks the backend suspect, so requests behind it go elsewhere at once.
    connect_timeout_s: float = Field(2.0, gt=0)
    health_path: str = "/health"
    launch: Launch | None = None
    serving_binary: str | None = None  # this backend's llama-server, when not the host's (preflight)

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class Family(_Strict):
    thinking: ThinkingPolicy = ThinkingPolicy.NONE
    description: str = ""


class Placement(_Strict):
    backend: str
    name: str | None = None  # the name that backend knows the model by; defaults to the model id


class Model(_Strict):
    family: str
    architecture: str
    gguf: str | None = None
    capabilities: tuple[Capability, ...] = (Capability.CHAT,)
    memory_gb: float = Field(0.0, ge=0)
    state: ModelState = ModelState.COLD
    deprecated: bool = False
    sunset: dt.date | None = None  # end of the rollback window for a deprecated model
    placements: Annotated[tuple[Placement, ...], Field(min_length=1)]
    description: str = ""
    # Per-model limits the gateway enforces before forwarding (tighter than the OpenAI API's own).
    max_output_tokens: int | None = Field(None, ge=1)  # max_tokens / max_completion_tokens cap
    context_tokens: int | None = Field(None, ge=1)  # the context window the backend serves it with


class Role(_Strict):
    model: str
    previous: str | None = None
    fallbacks: tuple[str, ...] = ()
    requires: tuple[Capability, ...] | None = None  # default from ROLE_REQUIRES, else chat
    trial: bool = False  # part of the current migration trial
    # Spill-over: queue on a full primary at most this long, then take a later candidate with a free slot.
    spill_after_ms: float | None = Field(None, ge=0)
    description: str = ""

    def required(self, name: str) -> tuple[Capability, ...]:
        if self.requires is not None:
            return self.requires
        return ROLE_REQUIRES.get(name, (Capability.CHAT,))


class TrialCriteria(_Strict):
    """When the trial scorecard says keep or roll back (95 % intervals; a difference counts only when they separate)."""

    min_requests: int = Field(200, ge=1)  # per side (trial and baseline) before any verdict
    max_error_rate_increase: float = Field(0.01, ge=0, le=1)  # absolute: 0.01 = one percentage point
    max_p95_ratio: float = Field(1.25, ge=1)  # trial p95 latency over baseline p95
    max_structured_drop: float = Field(0.02, ge=0, le=1)  # structured-output success, absolute
    max_fallback_increase: float = Field(0.05, ge=0, le=1)  # fallback + spill-over rate, absolute
    max_eval_drop: float = Field(0.05, ge=0, le=1)  # eval pass rate, absolute
    exclude_sources: tuple[str, ...] = ("smoke", "bench")  # shown on their own line, not compared


class Trial(_Strict):
    name: str
    started: dt.date | None = None
    rollback_by: dt.date | None = None  # the rollback deadline shown in the Roles pane
    criteria: TrialCriteria = TrialCriteria()


class GatewaySettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8600, ge=0, le=65535)
    admin_token: str | None = None  # literal token; prefer admin_token_env
    admin_token_env: str | None = "FORGE_ADMIN_TOKEN"
    api_keys: tuple[str, ...] = ()  # required from callers when non-empty
    # caller name -> key, accepted like api_keys; the name is the request's source in the history (agent, job, ...)
    named_api_keys: dict[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,31}$")], str] = {}
    max_body_mb: float = Field(32.0, gt=0)
    audio_max_seconds: float = Field(30.0, gt=0)
    health_interval_s: float = Field(5.0, gt=0)
    breaker_failures: int = Field(3, ge=1)  # consecutive connect failures that open the circuit
    breaker_reset_s: float = Field(15.0, gt=0)  # open -> half-open after this
    state_dir: str | None = None  # default: ~/.local/state/forge-tui/<config name>
    history: bool = True  # SQLite request history
    history_retention_days: float = Field(14.0, gt=0)  # raw rows; hourly rollups outlive them
    history_rollup_days: float = Field(400.0, gt=0)
    # Exposure: without caller keys the gateway refuses to listen beyond loopback unless this is set.
    allow_unauthenticated: bool = False
    api_keys_env: str | None = "FORGE_API_KEYS"  # comma-separated caller keys (keeps them out of `ps`)
    metrics_token: str | None = None  # a token that may read /health and /metrics only; prefer the env var
    metrics_token_env: str | None = "FORGE_METRICS_TOKEN"
    public_health: bool = False  # /health answers without a key even when caller keys are configured
    public_metrics: bool = False  # the same for /metrics (e.g. a Prometheus without credentials)
    idle_timeout_s: float = Field(30.0, gt=0)  # a request head must arrive within this; idle keep-alive closes
    max_connections_per_client: int = Field(256, ge=1)  # concurrent connections from one client address
    body_timeout_s: float = Field(120.0, gt=0)  # a request body must arrive within this (slow uploads: 408)


class Catalog(_Strict):
    gateway: GatewaySettings = GatewaySettings()
    trial: Trial | None = None
    hosts: dict[str, Host]
    backends: dict[str, Backend]
    families: dict[str, Family] = {}
    models: dict[str, Model]
    roles: dict[str, Role]
    # Extra names callers may use (e.g. tools that hard-code `text-embedding-3-small`): name -> role or model.
    aliases: dict[str, str] = {}
    # Console key remaps: binding id (the `?` screen lists them, e.g. forge.swap) -> key(s), e.g. "ctrl+s" or
    # "s,ctrl+s". The ids and keys are checked against the console's bindings when it starts (console.keymap).
    keys: dict[str, str] = {}

    @field_validator("keys")
    @classmethod
    def _keys_shape(cls, v: dict[str, str]) -> dict[str, str]:
        for bid, key in v.items():
            if not bid or any(c.isspace() for c in bid):
                raise ValueError(f"binding id {bid!r} must be a single word such as forge.swap")
            if not key.strip() or any(not part.strip() for part in key.split(",")):
                raise ValueError(f"{bid}: key {key!r} is empty (give e.g. ctrl+s, or several as s,ctrl+s)")
        return v

    @model_validator(mode="after")
    def _references(self) -> Catalog:
        # Cross-references are checked here so a bad name is reported with its path.
        errors: list[str] = []
        for alias, target in self.aliases.items():
            if target not in self.roles and target not in self.models:
                errors.append(f"aliases.{alias}: unknown role or model {target!r}")
            if alias in self.roles or alias in self.models:
                errors.append(f"aliases.{alias}: already a role or model name")
        for name, b in self.backends.items():
            if b.host not in self.hosts:
                errors.append(f"backends.{name}.host: unknown host {b.host!r} (known: {_known(self.hosts)})")
        for mid, m in self.models.items():
            if m.family not in self.families:
                errors.append(f"models.{mid}.family: unknown family {m.family!r} (known: {_known(self.families)})")
            for i, p in enumerate(m.placements):
                if p.backend not in self.backends:
                    errors.append(
                        f"models.{mid}.placements.{i}.backend: unknown backend {p.backend!r} "
                        f"(known: {_known(self.backends)})"
                    )
        for rname, r in self.roles.items():
            for field, ref in [("model", r.model), ("previous", r.previous)] + [
                (f"fallbacks.{i}", f) for i, f in enumerate(r.fallbacks)
            ]:
                if ref is not None and ref not in self.models:
                    errors.append(f"roles.{rname}.{field}: unknown model {ref!r}")
        if errors:
            raise ValueError("; ".join(errors))
        return self


def _known(d: Mapping[str, object]) -> str:
    return ", ".join(sorted(d)) or "none defined"
