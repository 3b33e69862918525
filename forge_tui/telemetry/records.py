"""The request record: one per request the gateway answers, whatever the outcome."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["LIVE_ONLY_FIELDS", "ErrorClass", "RequestRecord"]

# The gateway's own number for each record: unique and increasing in this process, never taken from
# the caller (a caller's X-Request-Id may repeat; the console keys its rows by this).
_SEQ = itertools.count(1)
# Fields for the live view only: the history does not store them (a replayed record gets a new seq).
LIVE_ONLY_FIELDS: frozenset[str] = frozenset({"asked", "seq"})


class ErrorClass(str, Enum):
    """Whose failure it was. The point: tell gateway from backend from model from caller."""

    OK = "ok"
    CALLER_ERROR = "caller_error"  # malformed JSON, wrong types, bad auth, unreadable audio (4xx)
    CLIENT_GONE = "client_gone"  # the caller disconnected before the answer was complete (499, not its 4xx)
    NOT_FOUND = "not_found"  # unknown role / model / route (404)
    PAYLOAD_TOO_LARGE = "payload_too_large"  # body or audio over the cap (413)
    SATURATED = "saturated"  # concurrency cap and wait queue full (429)
    UPSTREAM_UNREACHABLE = "upstream_unreachable"  # every placement down / connect refused
    UPSTREAM_STARTUP = "upstream_startup"  # backend still loading past its warmup timeout
    UPSTREAM_TIMEOUT = "upstream_timeout"  # backend accepted but did not answer in time
    UPSTREAM_ERROR = "upstream_error"  # backend answered with an error (e.g. unknown model architecture)
    MODEL_OUTPUT = "model_output"  # thinking leak, empty or malformed output when a format was asked
    GATEWAY_ERROR = "gateway_error"  # a bug or fault in forge itself
    GATEWAY_SHUTDOWN = "gateway_shutdown"  # cut off by the gateway stopping (past its drain timeout), not the caller


@dataclass(slots=True)
class RequestRecord:
    time: float  # unix seconds at arrival
    request_id: str
    endpoint: str  # e.g. /v1/chat/completions
    role: str | None = None
    model: str | None = None
    host: str | None = None
    backend: str | None = None
    stream: bool = False
    status: int = 0
    error_class: ErrorClass = ErrorClass.OK
    error: str | None = None  # the upstream's own words when there are any
    latency_ms: float = 0.0
    ttft_ms: float | None = None  # time to first token (first content chunk) for streams
    tokens_in: int | None = None
    tokens_out: int | None = None
    tokens_per_s: float | None = None
    fallback: bool = False  # served by a fallback model or a second placement
    thinking_injected: bool = False
    thinking_leaked: bool = False
    image: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    source: str | None = None  # who sent it: x-forge-source header, else the API key's name (agent, job, smoke, bench)
    inflight: int | None = None  # other requests in flight on the serving backend at dispatch (load)
    cold_start: bool = False  # the request waited out a backend startup before being served
    structured: bool | None = None  # json_object/json_schema asked: True parsed, False did not; None not asked
    spill: bool = False  # served by another host than the first placement because that one was busy (resil)
    asked: str | None = field(default=None, compare=False)  # the model name the caller sent (cut to 200), for 404 rows
    seq: int = field(default_factory=_SEQ.__next__, compare=False)  # gateway-made, unique per process (see _SEQ)
