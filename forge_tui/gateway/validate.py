"""Request validation before anything is forwarded: strict JSON, the OpenAI API's types, ranges and enums.

Every failure is a ``CallerError`` (400) naming the parameter (``param``) in OpenAI's words, so a
caller's mistake is never forwarded and never a 500. Ranges follow the OpenAI API reference
(chat completions, completions, embeddings, transcriptions); per-model limits from the catalog
(``max_output_tokens``, ``context_tokens``) apply on top once the route is known
(``check_model_limits``). Fields the OpenAI API does not define (llama.cpp's ``top_k``,
``min_p``, ``chat_template_kwargs``, ...) get type checks only.

One pass over the small parts of a body; the only walk over big data is a strict base64 decode of
inline images and non-WAV audio (C speed), so a corrupt image is refused here, not by the backend.
"""

from __future__ import annotations

import binascii
import json
import math
import re
from collections.abc import Callable
from typing import Any

from .errors import CallerError
from .jsoncodec import fast_loads

__all__ = [
    "EMBEDDING_INPUTS_MAX",
    "check_chat",
    "check_completions",
    "check_embeddings",
    "check_model_limits",
    "check_transcription_fields",
    "parse_json_object",
    "scan_parts",
]

EMBEDDING_INPUTS_MAX = 2048  # OpenAI: at most 2,048 inputs per embeddings request
_INT32_MAX = 2**31 - 1  # llama.cpp keeps token counts in int32: a larger value would wrap upstream
_INT64 = 2**63
_STOP_MAX = 16  # OpenAI documents 4; llama.cpp takes more and editor clients send ~10, so 16
_N_MAX = 128
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_PARTS_BY_ROLE = {
    "user": frozenset({"text", "image_url", "input_audio", "file"}),
    "system": frozenset({"text"}),
    "developer": frozenset({"text"}),
    "assistant": frozenset({"text", "refusal"}),
    "tool": frozenset({"text"}),
    "function": frozenset({"text"}),
}
_RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
_TOOL_CHOICES = frozenset({"none", "auto", "required"})
_REASONING_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high"})
_IMAGE_DETAIL = frozenset({"auto", "low", "high"})
_AUDIO_FORMATS = frozenset({"wav", "mp3"})
_ENCODING_FORMATS = frozenset({"float", "base64"})
_TRANSCRIPTION_FORMATS = frozenset({"json", "text", "srt", "verbose_json", "vtt"})
# (min, max) per number field; None: unbounded on that side.
_NUM_RANGES: dict[str, tuple[float | None, float | None]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
    "min_p": (0.0, 1.0),
    "repeat_penalty": (0.0, None),
}
_INT_RANGES: dict[str, tuple[int, int]] = {
    "max_tokens": (1, _INT32_MAX),
    "max_completion_tokens": (1, _INT32_MAX),
    "n": (1, _N_MAX),
    "seed": (-_INT64, _INT64 - 1),
    "top_k": (0, _INT32_MAX),
    "top_logprobs": (0, 20),
}
_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}
# A lone UTF-16 surrogate escape (\ud800 without its pair, or a stray low half): valid JSON syntax,
# but no valid text; Python would carry it until an encode fails deep in the relay.
_SURROGATE = re.compile(rb"(\\+)u[dD]([89abAB][0-9a-fA-F]{2})(?:\\u[dD][c-fC-F][0-9a-fA-F]{2})?|(\\+)u[dD][c-fC-F]")


def _got(v: Any) -> str:
    return _JSON_TYPES.get(type(v), type(v).__name__)


def _bad(field: str, expected: str, v: Any) -> CallerError:
    return CallerError(f"Invalid type for '{field}': expected {expected}, but got {_got(v)} instead.", param=field)


def _value(field: str, why: str) -> CallerError:
    return CallerError(f"Invalid value for '{field}': {why}", param=field, code="invalid_value")


def _missing(field: str) -> CallerError:
    return CallerError(f"Missing required parameter: '{field}'.", param=field, code="missing_required_parameter")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    v = float(text)
    if math.isinf(v):
        raise ValueError(f"number {text[:40]} is out of range (numbers must be finite)")
    return v


def _lone_surrogate(raw: bytes) -> bool:
    for m in _SURROGATE.finditer(raw):
        slashes = m.group(1) or m.group(3)
        if len(slashes) % 2 == 0:
            continue  # an escaped backslash followed by the letters "ud8..": plain text
        if m.group(3) is not None or m.end() - m.start() == len(slashes) + 5:
            return True  # a low half alone, or a high half with no low half after it
    return False


# One decoder for the process: json.loads with hooks would build a decoder and scanner per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Parse strictly: no NaN/Infinity, no numbers that overflow to infinity, no lone surrogates."""
    if not raw:
        raise CallerError("request body is empty; expected a JSON object")
    fast, body = fast_loads(raw)  # orjson refuses NaN, infinities and lone surrogates itself
    if not fast:  # the standard parser decides, with the words callers know
        try:
            body = _DECODER.decode(raw.decode("utf-8"))
        except RecursionError:
            raise CallerError("request body is nested too deeply") from None
        except ValueError as exc:
            raise CallerError(f"request body is not valid JSON: {exc}") from None
        if b"\\u" in raw and _lone_surrogate(raw):
            raise CallerError("request body is not valid JSON text: it contains an unpaired UTF-16 surrogate escape")
    if not isinstance(body, dict):
        raise CallerError(f"request body must be a JSON object, but got {_got(body)}")
    return body


# ---------------------------------------------------------------------- scalars
def _check_int(body: dict[str, Any], f: str, lo: int, hi: int) -> None:
    v = body[f]
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f, "an integer", v)
    if v < lo:
        raise _value(f, f"{v} is less than the minimum of {lo}.")
    if v > hi:
        raise _value(f, f"{v} is greater than the maximum of {hi}.")


def _check_num(body: dict[str, Any], f: str, lo: float | None, hi: float | None) -> None:
    v = body[f]
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _bad(f, "a number", v)
    if lo is not None and v < lo:
        raise _value(f, f"{v} is less than the minimum of {lo:g}.")
    if hi is not None and v > hi:
        raise _value(f, f"{v} is greater than the maximum of {hi:g}.")


def _check_str(v: Any, f: str, *, enum: frozenset[str] | None = None, nonempty: bool = False) -> None:
    if not isinstance(v, str):
        raise _bad(f, "a string", v)
    if nonempty and not v:
        raise _value(f, "must not be empty.")
    if enum is not None and v not in enum:
        raise _value(f, f"{v[:64]!r} is not one of {', '.join(sorted(enum))}.")


def _check_bool(body: dict[str, Any], f: str) -> None:
    v = body[f]
    if v is not None and not isinstance(v, bool):
        raise _bad(f, "a boolean", v)


def _check_model(body: dict[str, Any], f: str) -> None:
    v = body[f]
    if v is not None and not isinstance(v, str):
        raise _bad(f, "a string", v)


def _check_ranged_int(body: dict[str, Any], f: str) -> None:
    _check_int(body, f, *_INT_RANGES[f])


def _check_ranged_num(body: dict[str, Any], f: str) -> None:
    _check_num(body, f, *_NUM_RANGES[f])


def _check_stop(body: dict[str, Any], f: str) -> None:
    stop = body[f]
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list):
        raise _bad("stop", "a string or an array of strings", stop)
    if len(stop) > _STOP_MAX:
        raise _value("stop", f"{len(stop)} sequences given; at most {_STOP_MAX} are accepted.")
    for i, s in enumerate(stop):
        if not isinstance(s, str):
            raise _bad(f"stop[{i}]", "a string", s)


def _check_stream_options(body: dict[str, Any], f: str) -> None:
    so = body[f]
    if so is None:
        return
    if not isinstance(so, dict):
        raise _bad("stream_options", "an object", so)
    if body.get("stream") is not True:
        raise CallerError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    if "include_usage" in so and not isinstance(so["include_usage"], bool):
        raise _bad("stream_options.include_usage", "a boolean", so["include_usage"])


def _check_logit_bias(body: dict[str, Any], f: str) -> None:
    lb = body[f]
    if lb is None:
        return
    if not isinstance(lb, dict):
        raise _bad("logit_bias", "an object", lb)
    for tok, bias in lb.items():
        if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not -100 <= bias <= 100:
            raise _value(f"logit_bias.{tok[:32]}", "biases must be numbers between -100 and 100.")


# A body is checked one field at a time in the caller's order (the first bad field is the one
# reported), each present field by its checker: a small request costs a lookup per key, and the
# rules of fields it does not carry cost nothing. Checkers take (body, field name).
_Checker = Callable[[dict[str, Any], str], None]
_COMMON: dict[str, _Checker] = {
    "model": _check_model,
    "stream": _check_bool,
    **dict.fromkeys(_INT_RANGES, _check_ranged_int),
    **dict.fromkeys(_NUM_RANGES, _check_ranged_num),
    "stop": _check_stop,
    "stream_options": _check_stream_options,
    "logit_bias": _check_logit_bias,
    "user": _check_model,  # the same rule: a string or null
}


def _check_fields(body: dict[str, Any], checkers: dict[str, _Checker]) -> None:
    for f in body:
        chk = checkers.get(f)
        if chk is not None:
            chk(body, f)


# ---------------------------------------------------------------------- chat
def _check_b64(data: str, field: str, what: str) -> None:
    try:
        binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        raise _value(field, f"the {what} is not valid base64.") from None


def _check_part(part: Any, role: str, i: int, j: int) -> None:
    f = f"messages[{i}].content[{j}]"
    if not isinstance(part, dict):
        raise _bad(f, "an object", part)
    t = part.get("type")
    if not isinstance(t, str):
        raise _missing(f"{f}.type") if t is None else _bad(f"{f}.type", "a string", t)
    allowed = _PARTS_BY_ROLE.get(role, frozenset())
    if t not in allowed:
        known = t in _PARTS_BY_ROLE["user"] or t == "refusal"
        why = f"a {role} message cannot carry {t!r} parts" if known else f"unknown content part type {t[:64]!r}"
        raise _value(f"{f}.type", f"{why} (allowed: {', '.join(sorted(allowed))}).")
    if t == "text" or t == "refusal":
        if not isinstance(part.get(t), str):
            raise _missing(f"{f}.{t}") if part.get(t) is None else _bad(f"{f}.{t}", "a string", part.get(t))
    elif t == "image_url":
        iu = part.get("image_url")
        if not isinstance(iu, dict):
            raise _missing(f"{f}.image_url") if iu is None else _bad(f"{f}.image_url", "an object", iu)
        url = iu.get("url")
        if not isinstance(url, str) or not url:
            raise _missing(f"{f}.image_url.url") if url is None else _bad(f"{f}.image_url.url", "a URL string", url)
        if "detail" in iu and iu["detail"] is not None:
            _check_str(iu["detail"], f"{f}.image_url.detail", enum=_IMAGE_DETAIL)
        if url.startswith("data:"):
            head, sep, data = url.partition(",")
            if not sep or not head.endswith(";base64"):
                raise _value(f"{f}.image_url.url", "a data URL must be data:<type>;base64,<data>.")
            if not data:
                raise _value(f"{f}.image_url.url", "the image data is empty.")
            _check_b64(data, f"{f}.image_url.url", "image data")
        elif not url.startswith(("http://", "https://")):
            raise _value(f"{f}.image_url.url", "expected an http(s) URL or a base64 data URL.")
    elif t == "input_audio":
        ia = part.get("input_audio")
        if not isinstance(ia, dict):
            raise _missing(f"{f}.input_audio") if ia is None else _bad(f"{f}.input_audio", "an object", ia)
        fmt = ia.get("format")
        if fmt is not None:
            _check_str(fmt, f"{f}.input_audio.format", enum=_AUDIO_FORMATS)
        audio_data = ia.get("data")
        if not isinstance(audio_data, str) or not audio_data:
            raise (
                _missing(f"{f}.input_audio.data")
                if audio_data is None
                else _bad(f"{f}.input_audio.data", "base64", audio_data)
            )
        if fmt == "mp3":
            _check_b64(audio_data, f"{f}.input_audio.data", "audio data")  # WAV is checked with its duration
    elif t == "file":
        fo = part.get("file")
        if not isinstance(fo, dict):
            raise _missing(f"{f}.file") if fo is None else _bad(f"{f}.file", "an object", fo)


def _check_message(m: Any, i: int) -> None:
    if not isinstance(m, dict):
        raise _bad(f"messages[{i}]", "an object", m)
    role = m.get("role")
    if role is None:
        raise _missing(f"messages[{i}].role")
    if not isinstance(role, str):
        raise _bad(f"messages[{i}].role", "a string", role)
    if role not in _ROLES:
        raise _value(
            f"messages[{i}].role",
            f"{role[:64]!r} is not one of {', '.join(sorted(_ROLES))}.",
        )
    content = m.get("content")
    if content is None:
        # An assistant turn may be only tool calls (or a refusal); every other role needs content.
        if role != "assistant" or not (m.get("tool_calls") or m.get("function_call") or m.get("refusal")):
            raise _missing(f"messages[{i}].content")
    elif isinstance(content, list):
        if not content and role != "assistant":
            raise _value(f"messages[{i}].content", "empty array; expected at least one content part.")
        for j, part in enumerate(content):
            _check_part(part, role, i, j)
    elif not isinstance(content, str):
        raise _bad(f"messages[{i}].content", "a string or an array of content parts", content)
    if role == "tool":
        tcid = m.get("tool_call_id")
        if not isinstance(tcid, str):
            raise (
                _missing(f"messages[{i}].tool_call_id")
                if tcid is None
                else _bad(f"messages[{i}].tool_call_id", "a string", tcid)
            )
    name = m.get("name")
    if name is not None and not isinstance(name, str):
        raise _bad(f"messages[{i}].name", "a string", name)
    tc = m.get("tool_calls")
    if tc is not None and not isinstance(tc, list):
        raise _bad(f"messages[{i}].tool_calls", "an array", tc)


def _check_tools(body: dict[str, Any], f: str) -> None:
    tools = body[f]
    if tools is None:
        return
    if not isinstance(tools, list):
        raise _bad("tools", "an array", tools)
    if len(tools) > 128:
        raise _value("tools", f"{len(tools)} tools given; at most 128 are accepted.")
    for k, t in enumerate(tools):
        f = f"tools[{k}]"
        if not isinstance(t, dict):
            raise _bad(f, "an object", t)
        _check_str(t.get("type"), f"{f}.type", enum=frozenset({"function"}))
        fn = t.get("function")
        if not isinstance(fn, dict):
            raise _missing(f"{f}.function") if fn is None else _bad(f"{f}.function", "an object", fn)
        name = fn.get("name")
        if not isinstance(name, str):
            raise _missing(f"{f}.function.name") if name is None else _bad(f"{f}.function.name", "a string", name)
        if not _TOOL_NAME.fullmatch(name):
            raise _value(f"{f}.function.name", "must be 1-64 characters of a-z, A-Z, 0-9, _ and -.")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise _bad(f"{f}.function.parameters", "an object (a JSON Schema)", params)


def _check_tool_choice(body: dict[str, Any], f: str) -> None:
    tc = body[f]
    if tc is None:
        return
    if isinstance(tc, str):
        _check_str(tc, "tool_choice", enum=_TOOL_CHOICES)
    elif isinstance(tc, dict):
        fn = tc.get("function")
        if tc.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise _value("tool_choice", 'expected {"type": "function", "function": {"name": ...}}.')
    else:
        raise _bad("tool_choice", "a string or an object", tc)
    if tc != "none" and not body.get("tools"):
        raise CallerError("'tool_choice' is only allowed when 'tools' are specified.", param="tool_choice")


def _check_messages(body: dict[str, Any], f: str) -> None:
    messages = body[f]
    if messages is None:
        return  # reported as missing once every field is checked
    if not isinstance(messages, list):
        raise _bad("messages", "an array", messages)
    if not messages:
        raise CallerError("Invalid 'messages': empty array. Expected an array with minimum length 1.", param="messages")
    for i, m in enumerate(messages):
        _check_message(m, i)


def _check_response_format(body: dict[str, Any], f: str) -> None:
    rf = body[f]
    if rf is None:
        return
    if not isinstance(rf, dict):
        raise _bad("response_format", "an object", rf)
    _check_str(rf.get("type"), "response_format.type", enum=_RESPONSE_FORMATS)
    if rf["type"] == "json_schema" and not isinstance(rf.get("json_schema"), dict):
        raise _missing("response_format.json_schema")


def _check_top_logprobs(body: dict[str, Any], f: str) -> None:
    _check_ranged_int(body, f)
    if body[f] is not None and body.get("logprobs") is not True:
        raise CallerError("'top_logprobs' is only allowed when 'logprobs' is true.", param="top_logprobs")


def _check_reasoning_effort(body: dict[str, Any], f: str) -> None:
    if body[f] is not None:
        _check_str(body[f], f, enum=_REASONING_EFFORTS)


def _check_object(body: dict[str, Any], f: str) -> None:
    v = body[f]
    if v is not None and not isinstance(v, dict):
        raise _bad(f, "an object", v)


_CHAT: dict[str, _Checker] = {
    **_COMMON,
    "messages": _check_messages,
    "response_format": _check_response_format,
    "tools": _check_tools,
    "tool_choice": _check_tool_choice,
    "parallel_tool_calls": _check_bool,
    "logprobs": _check_bool,
    "top_logprobs": _check_top_logprobs,
    "reasoning_effort": _check_reasoning_effort,
    "chat_template_kwargs": _check_object,
}


def check_chat(body: dict[str, Any]) -> None:
    _check_fields(body, _CHAT)
    if body.get("messages") is None:
        raise _missing("messages")


# ---------------------------------------------------------------------- completions / embeddings
def _token_array(v: list[Any]) -> bool:
    return all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t <= _INT32_MAX for t in v)


def _check_prompt(body: dict[str, Any], f: str) -> None:
    prompt = body[f]
    if prompt is None:
        return  # reported as missing once every field is checked
    if isinstance(prompt, list):
        if not prompt:
            raise _value("prompt", "empty array.")
        if not (
            all(isinstance(p, str) for p in prompt)
            or _token_array(prompt)
            or all(isinstance(p, list) and p and _token_array(p) for p in prompt)
        ):
            raise _bad("prompt", "a string, an array of strings, or token arrays", prompt)
    elif not isinstance(prompt, str):
        raise _bad("prompt", "a string or an array", prompt)


def _check_suffix(body: dict[str, Any], f: str) -> None:
    v = body[f]
    if v is not None and not isinstance(v, str):
        raise _bad("suffix", "a string", v)


_COMPLETIONS: dict[str, _Checker] = {
    **_COMMON,
    "prompt": _check_prompt,
    "echo": _check_bool,
    "logprobs": lambda body, f: _check_int(body, f, 0, 5),  # completions: how many, not a flag
    "best_of": lambda body, f: _check_int(body, f, 1, 20),
    "suffix": _check_suffix,
}


def check_completions(body: dict[str, Any]) -> None:
    _check_fields(body, _COMPLETIONS)
    if body.get("prompt") is None:
        raise _missing("prompt")


def check_embeddings(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model", "a string", model)
    inp = body.get("input")
    if inp is None:
        raise _missing("input")
    if isinstance(inp, str):
        if not inp:
            raise CallerError("Invalid 'input': must not be empty.", param="input")
    elif isinstance(inp, list):
        if not inp:
            raise CallerError("Invalid 'input': must not be empty.", param="input")
        if len(inp) > EMBEDDING_INPUTS_MAX:
            raise _value("input", f"{len(inp)} inputs given; at most {EMBEDDING_INPUTS_MAX} per request.")
        if all(isinstance(s, str) for s in inp):
            for i, s in enumerate(inp):
                if not s:
                    raise _value(f"input[{i}]", "must not be empty.")
        elif not (_token_array(inp) or all(isinstance(p, list) and p and _token_array(p) for p in inp)):
            raise _bad("input", "a string, an array of strings, or token arrays", inp)
    else:
        raise _bad("input", "a string or an array", inp)
    fmt = body.get("encoding_format")
    if fmt is not None:
        _check_str(fmt, "encoding_format", enum=_ENCODING_FORMATS)
    if "dimensions" in body:
        _check_int(body, "dimensions", 1, 65536)
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _bad("user", "a string", user)


def check_transcription_fields(fields: dict[str, str]) -> None:
    """The text fields of a transcription form (the file is checked with its duration)."""
    fmt = fields.get("response_format")
    if fmt is not None:
        _check_str(fmt, "response_format", enum=_TRANSCRIPTION_FORMATS)
    temp = fields.get("temperature")
    if temp is not None:
        try:
            v = float(temp)
        except ValueError:
            raise _bad("temperature", "a number", temp) from None
        if not 0.0 <= v <= 1.0:
            raise _value("temperature", f"{temp[:20]} is outside 0 to 1.")


def check_model_limits(body: dict[str, Any], model_id: str, max_output: int | None, context: int | None) -> None:
    """The catalog's per-model limits, tighter than the API's own (call once the route is known)."""
    # the smaller of the limits the catalog sets (0 or None: not set)
    cap = max_output if max_output and (not context or max_output <= context) else context
    if not cap:
        return
    for f in ("max_tokens", "max_completion_tokens"):
        v = body.get(f)
        if v is not None and isinstance(v, int) and not isinstance(v, bool) and v > cap:
            raise _value(f, f"{v} is too large: model {model_id!r} supports at most {cap} output tokens.")


def scan_parts(body: dict[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
    """(has an image part, the input_audio objects) of a chat body (already checked by ``check_chat``)."""
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
