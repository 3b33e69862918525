"""The one backend-state vocabulary: what routing, the panes, preflight and smoke all read.

``Health`` is the backend's serving state (the gateway's words since the first release:
llama-server's "loading" is ``starting``, a probe error is ``down``); ``BackendState`` is one
probe's full reading, replaced as a whole after every probe so a reader never sees half of one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..config.models import BackendKind

__all__ = ["DOWN", "READY", "STARTING", "STARTUP_MARKERS", "UNKNOWN", "BackendState", "Health", "is_startup_text"]


class Health(StrEnum):
    READY = "ready"  # answers its health check: requests can go there
    STARTING = "starting"  # up but still loading (llama-server 503 "Loading model", llama-swap "not ready")
    DOWN = "down"  # refused, unreachable, timed out, or an error answer
    UNKNOWN = "unknown"  # not probed yet


READY, STARTING, DOWN, UNKNOWN = Health.READY, Health.STARTING, Health.DOWN, Health.UNKNOWN

# Words in a 503 body that mean "still loading" (llama-server, llama-swap, most OpenAI-compatible servers).
STARTUP_MARKERS = ("loading model", "process is not ready", "not ready", "loading", "starting")


def is_startup_text(text: str) -> bool:
    low = text.lower()
    return any(m in low for m in STARTUP_MARKERS)


@dataclass(frozen=True, slots=True)
class BackendState:
    """One probe of one backend. ``holds``/``serves`` are the names the backend itself reports
    (llama-server: its model path and alias; llama-swap: its config's model ids); None means the
    backend did not say (not asked yet, an older build, or a kind that never says)."""

    name: str
    host: str
    kind: BackendKind
    health: Health = UNKNOWN
    detail: str | None = None
    checked_at: float | None = None  # unix seconds the probe finished
    # Network evidence about the host: True when anything answered (even a refusal), False when
    # nothing did (connect timeout, no route), None when the probe cannot tell.
    reachable: bool | None = None
    holds: frozenset[str] | None = None  # loaded right now
    serves: frozenset[str] | None = None  # can be asked for (loaded, or loaded on demand by llama-swap)
    model_states: dict[str, str] = field(default_factory=dict)  # llama-swap /running: model -> state
    model_path: str | None = None  # llama-server /props
    build_info: str | None = None  # llama-server /props (b<build>-<commit>)
    swap_version: dict[str, Any] | None = None  # llama-swap /api/version, as sent
    slots_busy: int | None = None
    slots_total: int | None = None

    @property
    def ready(self) -> bool:
        return self.health is READY
