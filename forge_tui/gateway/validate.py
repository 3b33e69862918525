"""Cheap shape checks of request bodies: the fields the gateway relies on, with OpenAI-style messages.

Deliberately not a full schema: the backend validates the rest, and a big body (base64 images)
must not be walked twice on the hot path.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import CallerError

__all__ = ["check_chat", "check_completions", "check_embeddings", "parse_json_object", "scan_parts"]

_INT_FIELDS = ("max_tokens", "max_completion_tokens", "n", "seed", "top_k", "logprobs_top", "top_logprobs")
_NUM_FIELDS = ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repeat_penalty")
_INT_SET = frozenset(_INT_FIELDS)
_NUM_SET = frozenset(_NUM_FIELDS)
_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


def _got(v: Any) -> str:
    return _JSON_TYPES.get(type(v), type(v).__name__)


def _bad(field: str, expected: str, v: Any) -> CallerError:
    return CallerError(f"Invalid type for '{field}': expected {expected}, but got {_got(v)} instead.", param=field)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise CallerError("request body is empty; expected a JSON object")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise CallerError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise CallerError(f"request body must be a JSON object, but got {_got(body)}")
    return body


def _common(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", "a string", model)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("stream", "a boolean", stream)
    keys = body.keys()
    for f in keys & _INT_SET:
        v = body[f]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise _bad(f, "an integer", v)
        if isinstance(v, int) and not isinstance(v, bool) and v < 0:
            raise CallerError(f"Invalid value for '{f}': must be >= 0, got {v}.", param=f)
    for f in keys & _NUM_SET:
        v = body[f]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise _bad(f, "a number", v)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, (str, list)):
        raise _bad("stop", "a string or an array of strings", stop)
    so = body.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise _bad("stream_options", "an object", so)


def check_chat(body: dict[str, Any]) -> None:
    _common(body)
    messages = body.get("messages")
    if messages is None:
        raise CallerError(
            "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter"
        )
    if not isinstance(messages, list):
        raise _bad("messages", "an array", messages)
    if not messages:
        raise CallerError("Invalid 'messages': empty array. Expected an array with minimum length 1.", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _bad(f"messages[{i}]", "an object", m)
        role = m.get("role")
        if not isinstance(role, str):
            raise _bad(f"messages[{i}].role", "a string", role)
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise _bad(f"messages[{i}].content", "a string or an array of content parts", content)
    rf = body.get("response_format")
    if rf is not None and not isinstance(rf, dict):
        raise _bad("response_format", "an object", rf)
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _bad("tools", "an array", tools)


def check_completions(body: dict[str, Any]) -> None:
    _common(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise CallerError("Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
    if not isinstance(prompt, (str, list)):
        raise _bad("prompt", "a string or an array", prompt)


def check_embeddings(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", "a string", model)
    inp = body.get("input")
    if inp is None:
        raise CallerError("Missing required parameter: 'input'.", param="input", code="missing_required_parameter")
    if not isinstance(inp, (str, list)):
        raise _bad("input", "a string or an array", inp)
    if isinstance(inp, (str, list)) and len(inp) == 0:
        raise CallerError("Invalid 'input': must not be empty.", param="input")


def scan_parts(body: dict[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
    """(has an image part, the input_audio objects) of a chat body."""
    image = False
    audio: list[dict[str, Any]] = []
    for m in body.get("messages") or ():
        content = m.get("content") if isinstance(m, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict):
                continue
            t = part.get("type")
            if t == "image_url":
                image = True
            elif t == "input_audio":
                ia = part.get("input_audio")
                if not isinstance(ia, dict):
                    raise CallerError("input_audio part must carry an 'input_audio' object", param="messages")
                audio.append(ia)
    return image, audio
