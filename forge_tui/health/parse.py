"""Readings of the serving endpoints the backend prober asks (pure functions over parsed JSON)."""

from __future__ import annotations

from typing import Any

__all__ = ["model_ids", "props_names", "running_states", "slots_busy_total"]


def model_ids(data: Any) -> frozenset[str]:
    """``GET /v1/models`` (OpenAI shape; llama-server adds ``aliases``): every id and alias."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("/v1/models: expected {'data': [...]}")
    out: set[str] = set()
    for it in items:
        if not isinstance(it, dict):
            continue
        if isinstance(it.get("id"), str) and it["id"]:
            out.add(it["id"])
        aliases = it.get("aliases")
        if isinstance(aliases, list):
            out.update(a for a in aliases if isinstance(a, str) and a)
    return frozenset(out)


def props_names(data: Any) -> tuple[str | None, frozenset[str]]:
    """llama-server ``GET /props``: (model_path, the names it answers to: path and alias)."""
    if not isinstance(data, dict):
        raise ValueError("llama-server /props: expected an object")
    path = data.get("model_path") if isinstance(data.get("model_path"), str) else None
    names = {v for k in ("model_path", "model_alias") if isinstance(v := data.get(k), str) and v}
    return path, frozenset(names)


def running_states(data: Any) -> dict[str, str]:
    """llama-swap ``GET /running``: model id -> state (stopped, starting, ready, stopping, shutdown)."""
    items = data.get("running") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ValueError("llama-swap /running: expected {'running': [...]}")
    return {
        str(it["model"]): str(it.get("state") or "unknown")
        for it in items
        if isinstance(it, dict) and isinstance(it.get("model"), str) and it["model"]
    }


def slots_busy_total(data: Any) -> tuple[int, int]:
    """llama-server ``GET /slots``: (busy, total) from each slot's ``is_processing``."""
    if not isinstance(data, list):
        raise ValueError("llama-server /slots: expected a list")
    return sum(1 for s in data if isinstance(s, dict) and s.get("is_processing")), len(data)
