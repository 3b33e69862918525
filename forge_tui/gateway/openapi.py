"""The gateway's own OpenAPI description, served at ``/openapi.json``.

It states what ``validate.py`` enforces (ranges, enums, required fields), so a client generator or a
fuzzer (the bad-input tests use it) sees the same contract the gateway keeps. Fields the gateway
passes to llama.cpp unchecked beyond their type stay open (``additionalProperties``).
"""

from __future__ import annotations

import json
from typing import Any

from .validate import EMBEDDING_INPUTS_MAX

__all__ = ["openapi_bytes", "openapi_doc"]

_INT32_MAX = 2**31 - 1


def _num(lo: float | None = None, hi: float | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"type": ["number", "null"]}
    if lo is not None:
        s["minimum"] = lo
    if hi is not None:
        s["maximum"] = hi
    return s


def _int(lo: int, hi: int) -> dict[str, Any]:
    return {"type": ["integer", "null"], "minimum": lo, "maximum": hi}


_STR = {"type": "string"}
_TOKENS = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": _INT32_MAX}, "minItems": 1}

_COMMON: dict[str, Any] = {
    "model": {"type": ["string", "null"], "description": "role, model id or alias; absent or 'auto' routes by kind"},
    "stream": {"type": ["boolean", "null"]},
    "max_tokens": _int(1, _INT32_MAX),
    "max_completion_tokens": _int(1, _INT32_MAX),
    "n": _int(1, 128),
    "seed": _int(-(2**63), 2**63 - 1),
    "temperature": _num(0, 2),
    "top_p": _num(0, 1),
    "presence_penalty": _num(-2, 2),
    "frequency_penalty": _num(-2, 2),
    "top_k": _int(0, _INT32_MAX),
    "min_p": _num(0, 1),
    "repeat_penalty": _num(0),
    "stop": {
        "oneOf": [_STR, {"type": "array", "items": _STR, "maxItems": 16}, {"type": "null"}],
    },
    "stream_options": {
        "type": ["object", "null"],
        "properties": {"include_usage": {"type": "boolean"}},
        "description": "only with stream: true",
    },
    "logit_bias": {
        "type": ["object", "null"],
        "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
    },
    "user": {"type": ["string", "null"]},
}

_TEXT_PART = {
    "type": "object",
    "required": ["type", "text"],
    "properties": {"type": {"const": "text"}, "text": _STR},
}
_IMAGE_PART = {
    "type": "object",
    "required": ["type", "image_url"],
    "properties": {
        "type": {"const": "image_url"},
        "image_url": {
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "pattern": "^(https?://|data:[^,]*;base64,)"},
                "detail": {"enum": ["auto", "low", "high", None]},
            },
        },
    },
}
_AUDIO_PART = {
    "type": "object",
    "required": ["type", "input_audio"],
    "properties": {
        "type": {"const": "input_audio"},
        "input_audio": {
            "type": "object",
            "required": ["data"],
            "properties": {"data": {"type": "string", "minLength": 1}, "format": {"enum": ["wav", "mp3", None]}},
        },
    },
}
_FILE_PART = {"type": "object", "required": ["type", "file"], "properties": {"type": {"const": "file"}}}


def _message(role: str, parts: list[dict[str, Any]], content_required: bool) -> dict[str, Any]:
    content: dict[str, Any] = {"oneOf": [_STR, {"type": "array", "items": {"oneOf": parts}, "minItems": 1}]}
    req = ["role", "content"] if content_required else ["role"]
    props: dict[str, Any] = {"role": {"const": role}, "content": content, "name": _STR}
    if role == "tool":
        req.append("tool_call_id")
        props["tool_call_id"] = _STR
    if role == "assistant":
        content["oneOf"].append({"type": "null"})
        content["oneOf"][1] = {"type": "array", "items": {"oneOf": parts}}
        props["tool_calls"] = {"type": "array"}
    return {"type": "object", "required": req, "properties": props}


_MESSAGE = {
    "oneOf": [
        _message("system", [_TEXT_PART], True),
        _message("developer", [_TEXT_PART], True),
        _message("user", [_TEXT_PART, _IMAGE_PART, _AUDIO_PART, _FILE_PART], True),
        _message("assistant", [_TEXT_PART], False),
        _message("tool", [_TEXT_PART], True),
        _message("function", [_TEXT_PART], True),
    ]
}

_TOOL = {
    "type": "object",
    "required": ["type", "function"],
    "properties": {
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                "description": _STR,
                "parameters": {"type": "object"},
            },
        },
    },
}

_CHAT = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        **_COMMON,
        "messages": {"type": "array", "items": _MESSAGE, "minItems": 1},
        "response_format": {
            "type": ["object", "null"],
            "required": ["type"],
            "properties": {"type": {"enum": ["text", "json_object", "json_schema"]}, "json_schema": {"type": "object"}},
        },
        "tools": {"type": ["array", "null"], "items": _TOOL, "maxItems": 128},
        "tool_choice": {
            "oneOf": [
                {"enum": ["none", "auto", "required"]},
                {
                    "type": "object",
                    "required": ["type", "function"],
                    "properties": {"type": {"const": "function"}, "function": {"type": "object", "required": ["name"]}},
                },
                {"type": "null"},
            ],
            "description": "only with tools",
        },
        "parallel_tool_calls": {"type": ["boolean", "null"]},
        "logprobs": {"type": ["boolean", "null"]},
        "top_logprobs": _int(0, 20),
        "reasoning_effort": {"enum": ["none", "minimal", "low", "medium", "high", None]},
        "chat_template_kwargs": {"type": ["object", "null"]},
    },
}

_COMPLETION = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        **_COMMON,
        "prompt": {
            "oneOf": [
                _STR,
                {"type": "array", "items": _STR, "minItems": 1},
                _TOKENS,
                {"type": "array", "items": _TOKENS, "minItems": 1},
            ]
        },
        "echo": {"type": ["boolean", "null"]},
        "logprobs": _int(0, 5),
        "best_of": _int(1, 20),
        "suffix": {"type": ["string", "null"]},
    },
}

_EMBEDDING = {
    "type": "object",
    "required": ["input"],
    "properties": {
        "model": _COMMON["model"],
        "input": {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1},
                    "minItems": 1,
                    "maxItems": EMBEDDING_INPUTS_MAX,
                },
                {**_TOKENS, "maxItems": EMBEDDING_INPUTS_MAX},
                {"type": "array", "items": _TOKENS, "minItems": 1, "maxItems": EMBEDDING_INPUTS_MAX},
            ]
        },
        "encoding_format": {"enum": ["float", "base64", None]},
        "dimensions": _int(1, 65536),
        "user": {"type": ["string", "null"]},
    },
}

_ERROR = {
    "type": "object",
    "required": ["error"],
    "additionalProperties": False,
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "additionalProperties": False,
            "properties": {
                "message": _STR,
                "type": _STR,
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "integer", "null"]},
            },
        }
    },
}

_MODEL = {
    "type": "object",
    "required": ["id", "object", "created", "owned_by"],
    "properties": {"id": _STR, "object": {"const": "model"}, "created": {"type": "integer"}, "owned_by": _STR},
}


def _errors(*codes: int) -> dict[str, Any]:
    ref = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {str(c): {"description": "an error in the OpenAI shape", "content": ref} for c in codes}


def _post(summary: str, schema: str, ok: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
            },
            "responses": {
                "200": {"description": ok, "content": {"application/json": {}, "text/event-stream": {}}},
                **_errors(400, 401, 404, 408, 413, 429, 500, 502, 503, 504),
            },
        }
    }


def openapi_doc() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "forge-tui gateway",
            "version": "1",
            "description": "OpenAI-compatible gateway: roles, model ids and aliases route to llama.cpp backends. "
            "Every error is {error: {message, type, param, code}} with an x-forge-request-id header.",
        },
        "paths": {
            "/v1/chat/completions": _post("Chat completion", "ChatCompletionRequest", "completion or SSE stream"),
            "/v1/completions": _post("Text completion", "CompletionRequest", "completion or SSE stream"),
            "/v1/embeddings": _post("Embeddings", "EmbeddingRequest", "embeddings"),
            "/v1/models": {
                "get": {
                    "summary": "Roles, models and aliases",
                    "responses": {"200": {"description": "the list"}, **_errors(401)},
                }
            },
            "/v1/models/{model}": {
                "get": {
                    "summary": "One role, model or alias",
                    "parameters": [{"name": "model", "in": "path", "required": True, "schema": _STR}],
                    "responses": {
                        "200": {
                            "description": "the entry",
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Model"}}},
                        },
                        **_errors(401, 404),
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "ChatCompletionRequest": _CHAT,
                "CompletionRequest": _COMPLETION,
                "EmbeddingRequest": _EMBEDDING,
                "Error": _ERROR,
                "Model": _MODEL,
            }
        },
    }


_CACHED: bytes | None = None


def openapi_bytes() -> bytes:
    global _CACHED
    if _CACHED is None:
        _CACHED = json.dumps(openapi_doc()).encode()
    return _CACHED
