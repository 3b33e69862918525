"""The one reading of an error body: the backend's own words for the operator.

llama.cpp and OpenAI-style servers answer ``{"error": {"message": ...}}``, llama-swap adds a
``src`` key around the same shape or answers plain text, llama-server's ``/health`` says
``{"status": "..."}``, FastAPI-style sidecars say ``{"detail": ...}``. Everyone who turns such a
body into a message (the gateway's relay and health probe, the hosts probes, smoke, the remote
control) calls ``error_message`` so the Errors pane, the CLI and the logs say the same thing.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["EMPTY_BODY", "error_message"]

EMPTY_BODY = "(empty body)"
_KEYS = ("message", "detail", "status")  # top-level fallbacks, most specific first


def _from_data(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    err = data.get("error")
    if isinstance(err, dict):
        msg = err.get("message")
        if isinstance(msg, str) and msg:
            return msg
    if isinstance(err, str) and err:
        return err
    for key in _KEYS:
        v = data.get(key)
        if isinstance(v, str) and v:
            return v
    return None


def error_message(body: str | bytes | Any, *, limit: int = 2000) -> str:
    """The message of an error body: raw text or bytes (JSON or not), or an already parsed JSON value.

    Falls back to the text itself (cut at ``limit`` characters), ``(empty body)`` when there is none.
    """
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", "replace")
    if isinstance(body, str):
        text = body.strip()
        try:
            data: Any = json.loads(text) if text[:1] in ("{", "[") else None
        except ValueError:
            data = None
        found = _from_data(data)
        if found is not None:
            return found[:limit]
        return text[:limit] or EMPTY_BODY
    found = _from_data(body)
    if found is not None:
        return found[:limit]
    if body is None:
        return EMPTY_BODY
    return json.dumps(body)[:limit]
