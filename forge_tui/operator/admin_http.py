"""The admin HTTP API: a thin adapter over ``OperatorService`` (``forge-tui attach`` drives a gateway through it).

Mounted on the gateway's aiohttp app by the runtime (``gateway.mount(admin)``); the gateway
never imports it. Every handler parses the request, calls one service method and maps the
answer: a ``ChangeResult`` is 200 (ok) or 409 (refused); an ``OperatorError`` is 503
(``Unavailable``), 404 (``NotFound``) or 400 (``Invalid``), all in the OpenAI error shape.

Always protected by a token (``Authorization: Bearer <token>`` or ``x-forge-admin-token``):
the configured one, else a per-run one generated here and written, once the gateway's port is
bound, to ``<state_dir>/admin.token`` (mode 0600; removed on stop; see ``admin_token``). Being
on loopback is not enough: a web page in a local browser is on loopback too. Browser requests
are refused outright (an ``Origin`` header, or ``Sec-Fetch-Site`` other than ``none`` /
``same-origin``), and changes must be ``Content-Type: application/json``, which a cross-site
form or a no-CORS fetch cannot send.

To add a route: one line in ``routes()`` (``web.get|post(path, w(self.handler))``) and a handler
that reads its input (``self._body(request, Model)``, ``self._int(request, name, default)``),
calls the service and returns ``_json(...)`` (or ``self._change(result)`` for a change).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..gateway.errors import (
    CallerError,
    Conflict,
    Forbidden,
    GatewayError,
    NotFound,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from ..schema import ChangeResult, DeprecateRequest, SwapRequest
from . import service as svc
from .admin_token import TOKEN_FILE_NAME, new_token, remove_token_file, write_token_file
from .service import OperatorService

__all__ = ["AdminHttp"]

log = logging.getLogger("forge_tui.operator.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# What a browser sends for a request the user typed or bookmarked, or one from the same origin.
_FETCH_SITES_OK = frozenset({"none", "same-origin"})


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json")


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def _http_error(exc: svc.OperatorError) -> GatewayError:
    if isinstance(exc, svc.Unavailable):
        return Unavailable(str(exc))
    if isinstance(exc, svc.NotFound):
        return NotFound(str(exc), code=exc.code, param=exc.param)
    return CallerError(str(exc))


class AdminHttp:
    """The admin routes plus their token; ``gateway.mount(admin)`` serves them on the gateway's port."""

    def __init__(self, service: OperatorService, token: str, *, token_path: Path | None = None) -> None:
        if not token:
            raise ValueError("the admin API needs a token (for_run() generates one when none is configured)")
        self.service = service
        self.token = token
        # Where the token is published once the port is bound (None: memory only). Written late,
        # so a gateway that fails to bind never clobbers a running one's file.
        self.token_path = token_path
        self._tokens = (f"Bearer {token}".encode(), token.encode())

    @classmethod
    def for_run(cls, service: OperatorService, configured: str | None, state_dir: Path | None) -> AdminHttp:
        """The configured token; else (an empty one counts as none) a per-run token, published to
        ``<state_dir>/admin.token`` when there is a state dir. The admin API is never open."""
        if configured:
            return cls(service, configured)
        return cls(service, new_token(), token_path=state_dir / TOKEN_FILE_NAME if state_dir is not None else None)

    # ------------------------------------------------------------------ the gateway's mount hook
    def listening(self, url: str) -> None:
        """The port is bound: publish a generated token for ``forge-tui attach --token-file``."""
        if self.token_path is None:
            return
        try:
            write_token_file(self.token_path, self.token)
        except OSError as exc:
            log.warning(
                "cannot write the admin token to %s (%s); it stays in memory only: set FORGE_ADMIN_TOKEN to choose one",
                self.token_path,
                exc.strerror or exc,
            )
            self.token_path = None

    def stopped(self) -> None:
        if self.token_path is not None:
            remove_token_file(self.token_path, self.token)

    def routes(self) -> list[web.RouteDef]:
        w = self._wrap
        return [
            web.get("/admin/snapshot", w(self.snapshot)),
            web.get("/admin/audit", w(self.audit)),
            web.get("/admin/roles/{role}/eligible", w(self.eligible)),
            web.post("/admin/roles/{role}/swap", w(self.swap)),
            web.post("/admin/roles/{role}/rollback", w(self.rollback)),
            web.post("/admin/trial/rollback", w(self.rollback_trial)),
            web.post("/admin/roles/{role}/promote", w(self.promote)),
            web.get("/admin/trial/scorecard", w(self.trial_scorecard)),
            web.post("/admin/models/{model}/deprecation", w(self.deprecation)),
            web.get("/admin/preflight", w(self.preflight)),
            web.post("/admin/jobs", w(self.start_job)),
            web.get("/admin/jobs", w(self.jobs)),
            web.get("/admin/jobs/{job}/log", w(self.job_log)),
            web.post("/admin/jobs/{job}/cancel", w(self.cancel_job)),
        ]

    def _authorize(self, request: web.Request) -> None:
        """Refuse browsers (403), then a missing or wrong token (401), then a non-JSON change (415)."""
        h = request.headers
        if "Origin" in h:
            raise Forbidden(
                f"the admin API refuses requests sent by a web page (Origin: {h['Origin'][:100]})",
                code="cross_site_refused",
            )
        site = h.get("Sec-Fetch-Site")
        if site is not None and site.lower() not in _FETCH_SITES_OK:
            raise Forbidden(
                f"the admin API refuses requests sent by a web page (Sec-Fetch-Site: {site[:40]})",
                code="cross_site_refused",
            )
        bearer, raw = self._tokens
        got_bearer = h.get("Authorization", "").encode("utf-8", "replace")
        got_header = h.get("x-forge-admin-token", "").encode("utf-8", "replace")
        # Both comparisons always run: the time taken says nothing about which header was close.
        ok_bearer = hmac.compare_digest(got_bearer, bearer)
        ok_header = hmac.compare_digest(got_header, raw)
        if not (ok_bearer or ok_header):
            raise Unauthorized(
                "missing or wrong admin token (Authorization: Bearer <token> or x-forge-admin-token); "
                "without a configured token the gateway generates one per run and writes it to admin.token "
                "in its state directory (forge-tui attach --token-file)",
                code="invalid_admin_token",
            )
        if request.method in _BODY_METHODS and request.content_type != "application/json":
            got = h.get("Content-Type") or "none"
            raise UnsupportedMediaType(
                f"admin changes must be sent as Content-Type: application/json (got {got[:80]}); "
                f"send {{}} when there is nothing to say"
            )

    def _wrap(self, impl: Handler) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            try:
                self._authorize(request)
                try:
                    return await impl(request)
                except svc.OperatorError as exc:
                    raise _http_error(exc) from None
            except GatewayError as exc:
                return web.Response(
                    status=exc.status, body=exc.body_bytes(), content_type="application/json", headers=exc.headers
                )

        return handler

    async def _body(self, request: web.Request, model: type[M]) -> M:
        raw = await request.read()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise CallerError(f"request body is not valid JSON: {exc}") from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            e = exc.errors()[0]
            where = ".".join(str(p) for p in e["loc"]) or "(body)"
            raise CallerError(f"invalid {model.__name__}: {where}: {e['msg']}", param=where) from None

    @staticmethod
    def _change(result: ChangeResult) -> web.Response:
        if not result.ok:
            c = Conflict(result.message)
            return web.Response(status=c.status, body=c.body_bytes(), content_type="application/json")
        return _json(_dump(result))

    @staticmethod
    def _int(request: web.Request, name: str, default: int) -> int:
        v = request.query.get(name)
        if v is None or v == "":
            return default
        try:
            n = int(v)
        except ValueError:
            raise CallerError(f"query parameter {name!r} must be an integer, got {v!r}", param=name) from None
        if n < 0:
            raise CallerError(f"query parameter {name!r} must be >= 0", param=name)
        return n

    # ------------------------------------------------------------------ views
    async def snapshot(self, request: web.Request) -> web.Response:
        return _json(_dump(self.service.snapshot()))

    async def audit(self, request: web.Request) -> web.Response:
        infos = await self.service.audit(self._int(request, "limit", 200))
        return _json([_dump(a) for a in infos])

    async def eligible(self, request: web.Request) -> web.Response:
        return _json(self.service.eligible_models(request.match_info["role"]))

    # ------------------------------------------------------------------ changes
    async def swap(self, request: web.Request) -> web.Response:
        req = await self._body(request, SwapRequest)
        result = await self.service.swap(
            request.match_info["role"], req.model, force=req.force, actor=req.actor, preflight_id=req.preflight_id
        )
        return self._change(result)

    async def rollback(self, request: web.Request) -> web.Response:
        req = await self._body(request, _Actor)
        return self._change(await self.service.rollback(request.match_info["role"], actor=req.actor))

    async def rollback_trial(self, request: web.Request) -> web.Response:
        req = await self._body(request, _Actor)
        return self._change(await self.service.rollback_trial(actor=req.actor))

    async def promote(self, request: web.Request) -> web.Response:
        req = await self._body(request, _Actor)
        return self._change(await self.service.promote(request.match_info["role"], actor=req.actor))

    async def trial_scorecard(self, request: web.Request) -> web.Response:
        window: dict[str, float | None] = {}
        for name in ("since", "until"):
            v = request.query.get(name)
            try:
                window[name] = float(v) if v else None
            except ValueError:
                raise CallerError(f"query parameter {name!r} must be unix seconds, got {v!r}", param=name) from None
        sc = await self.service.trial_scorecard(window["since"], window["until"])
        return web.Response(body=sc.model_dump_json(), content_type="application/json")

    async def deprecation(self, request: web.Request) -> web.Response:
        req = await self._body(request, DeprecateRequest)
        result = await self.service.set_deprecated(
            request.match_info["model"], req.deprecated, sunset=req.sunset, actor=req.actor
        )
        return self._change(result)

    # ------------------------------------------------------------------ hosts
    async def preflight(self, request: web.Request) -> web.Response:
        role, model = request.query.get("role"), request.query.get("model")
        if not role or not model:
            raise CallerError("preflight needs both ?role= and ?model=", param="role" if not role else "model")
        return _json(_dump(await self.service.preflight(role, model)))

    async def start_job(self, request: web.Request) -> web.Response:
        req = await self._body(request, _JobRequest)
        return _json(_dump(self.service.start_job(req.kind, req.host)))

    async def jobs(self, request: web.Request) -> web.Response:
        return _json([_dump(j) for j in self.service.jobs()])

    async def job_log(self, request: web.Request) -> web.Response:
        since = self._int(request, "since", 0)
        lines = self.service.job_log(request.match_info["job"], since)
        return _json({"lines": lines, "next": since + len(lines)})

    async def cancel_job(self, request: web.Request) -> web.Response:
        return _json(_dump(await self.service.cancel_job(request.match_info["job"])))


class _Actor(BaseModel):
    actor: str = "operator"


class _JobRequest(BaseModel):
    kind: str
    host: str
