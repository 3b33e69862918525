"""What the gateway answers when it cannot serve a request: the OpenAI error shape.

Every error is a ``GatewayError`` carrying its HTTP status and its telemetry ``ErrorClass``,
so the caller, the operator's panes and ``/metrics`` all tell the same story::

    GatewayError            500 gateway_error         a fault in forge itself
    ├── CallerError         400 caller_error          malformed JSON, wrong types, unreadable audio
    │   ├── Unauthorized    401 caller_error          missing or wrong API key / admin token
    │   ├── Forbidden       403 caller_error          a cross-site (browser) request to the admin API
    │   ├── UnsupportedMediaType 415 caller_error     an admin change not sent as application/json
    │   └── Conflict        409 caller_error          an admin change was refused
    ├── NotFound            404 not_found             unknown role, model or route
    ├── PayloadTooLarge     413 payload_too_large     body over max_body_mb, audio over the cap
    ├── Saturated           429 saturated             concurrency cap and wait queue full (Retry-After)
    ├── Unavailable         503 gateway_error         a gateway part is not running (e.g. hosts service)
    └── UpstreamFailure                               the backend's side; its own words are kept
        ├── UpstreamUnreachable  502 upstream_unreachable  connect failed, every placement down
        ├── UpstreamStartup      503 upstream_startup      still loading after its warmup timeout
        ├── UpstreamTimeout      504 upstream_timeout      accepted but did not answer in time
        └── UpstreamError        502 upstream_error        answered with an error (status kept for 4xx)
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

from ..telemetry.records import ErrorClass

__all__ = [
    "CallerError",
    "Conflict",
    "Forbidden",
    "GatewayBindError",
    "GatewayError",
    "NotFound",
    "PayloadTooLarge",
    "Saturated",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "UpstreamError",
    "UpstreamFailure",
    "UpstreamStartup",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "error_body",
    "new_request_id",
]

# Request ids: a per-process random prefix and a counter (unique, and cheaper than urandom per request).
_RID_PREFIX = os.urandom(4).hex()
_rid_counter = itertools.count(1)


def new_request_id() -> str:
    """A request id the gateway makes (never one a caller sent)."""
    return f"{_RID_PREFIX}{next(_rid_counter):08x}"


class GatewayBindError(OSError):
    """The gateway could not listen on the requested address (the message says why and what to do)."""


class GatewayError(Exception):
    status: int = 500
    error_class: ErrorClass = ErrorClass.GATEWAY_ERROR
    type: str = "server_error"
    code: str | None = "gateway_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        upstream: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        # The backend's own words (kept verbatim for the request record).
        self.upstream = upstream
        # The routing candidate that failed, when one was tried (for x-forge-route and the record).
        self.candidate: Any = None

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body_bytes(self) -> bytes:
        return json.dumps(self.body(), ensure_ascii=False).encode()


class CallerError(GatewayError):
    status = 400
    error_class = ErrorClass.CALLER_ERROR
    type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(CallerError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(CallerError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class UnsupportedMediaType(CallerError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class Conflict(CallerError):
    status = 409
    type = "conflict_error"
    code = "change_refused"


class NotFound(GatewayError):
    status = 404
    error_class = ErrorClass.NOT_FOUND
    type = "invalid_request_error"
    code = "model_not_found"


class PayloadTooLarge(GatewayError):
    status = 413
    error_class = ErrorClass.PAYLOAD_TOO_LARGE
    type = "invalid_request_error"
    code = "payload_too_large"


class Saturated(GatewayError):
    status = 429
    error_class = ErrorClass.SATURATED
    type = "rate_limit_error"
    code = "saturated"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = max(1, int(retry_after))
        self.headers.setdefault("Retry-After", str(self.retry_after))


class Unavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "unavailable"


class UpstreamFailure(GatewayError):
    status = 502
    error_class = ErrorClass.UPSTREAM_ERROR
    type = "upstream_error"
    code = "upstream_error"


class UpstreamUnreachable(UpstreamFailure):
    error_class = ErrorClass.UPSTREAM_UNREACHABLE
    type = "upstream_unreachable"
    code = "upstream_unreachable"


class UpstreamStartup(UpstreamFailure):
    status = 503
    error_class = ErrorClass.UPSTREAM_STARTUP
    type = "upstream_startup"
    code = "upstream_startup"


class UpstreamTimeout(UpstreamFailure):
    status = 504
    error_class = ErrorClass.UPSTREAM_TIMEOUT
    type = "upstream_timeout"
    code = "upstream_timeout"


class UpstreamError(UpstreamFailure):
    pass


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
