"""The admin API (``forge-tui attach`` drives a headless gateway through it).

Always protected by a token (``Authorization: Bearer <token>`` or ``x-forge-admin-token``):
the configured one, else a per-run one the gateway generates (see ``admin_token``). Being on
loopback is not enough: a web page in a local browser is on loopback too. Browser requests
are refused outright (an ``Origin`` header, or ``Sec-Fetch-Site`` other than ``none`` /
``same-origin``), and changes must be ``Content-Type: application/json``, which a cross-site
form or a no-CORS fetch cannot send. Changes go through ``forge_tui.operations``, the same
code the embedded console calls.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from .. import operations
from ..schema import ChangeResult, DeprecateRequest, SwapRequest
from ..state import ChangeRefused
from .errors import (
    CallerError,
    Conflict,
    Forbidden,
    GatewayError,
    NotFound,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)

if TYPE_CHECKING:
    from .app import Gateway
    from .protocols import HostsLike

__all__ = ["AdminApi"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# What a browser sends for a request the user typed or bookmarked, or one from the same origin.
_FETCH_SITES_OK = frozenset({"none", "same-origin"})


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), content_type="application/json")


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


class AdminApi:
    def __init__(self, gw: Gateway, token: str) -> None:
        if not token:
            raise ValueError("the admin API needs a token (the gateway generates one when none is configured)")
        self.gw = gw
        self._tokens = (f"Bearer {token}".encode(), token.encode())

    def routes(self) -> list[web.RouteDef]:
        w = self._wrap
        return [
            web.get("/admin/snapshot", w(self.snapshot)),
            web.get("/admin/audit", w(self.audit)),
            web.get("/admin/roles/{role}/eligible", w(self.eligible)),
            web.post("/admin/roles/{role}/swap", w(self.swap)),
            web.post("/admin/roles/{role}/rollback", w(self.rollback)),
            web.post("/admin/trial/rollback", w(self.rollback_trial)),
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
                return await impl(request)
            except GatewayError as exc:
                return web.Response(
                    status=exc.status, body=exc.body_bytes(), content_type="application/json", headers=exc.headers
                )
            except ChangeRefused as exc:
                c = Conflict(str(exc))
                return web.Response(status=c.status, body=c.body_bytes(), content_type="application/json")

        return handler

    async def _body(self, request: web.Request, model: type[BaseModel]) -> Any:
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

    def _hosts(self) -> HostsLike:
        if self.gw.hosts is None:
            raise Unavailable("the hosts service is not running in this gateway (preflight and jobs need it)")
        return self.gw.hosts

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

    # ------------------------------------------------------------------ state
    async def snapshot(self, request: web.Request) -> web.Response:
        return _json(_dump(self.gw.snapshot()))

    async def audit(self, request: web.Request) -> web.Response:
        limit = self._int(request, "limit", 200)
        infos = operations.audit_infos(self.gw.state.audit_log(limit))
        return _json([_dump(a) for a in infos])

    async def eligible(self, request: web.Request) -> web.Response:
        role = request.match_info["role"]
        if self.gw.state.role(role) is None:
            raise NotFound(
                f"unknown role {role!r} (roles: {', '.join(sorted(self.gw.state.roles()))})",
                code="role_not_found",
                param="role",
            )
        return _json([m.id for m in self.gw.state.eligible_models(role)])

    # ------------------------------------------------------------------ changes
    async def swap(self, request: web.Request) -> web.Response:
        req: SwapRequest = await self._body(request, SwapRequest)
        result = await operations.swap(
            self.gw.state, self.gw.hosts, request.match_info["role"], req.model, force=req.force, actor=req.actor
        )
        return self._change(result)

    async def rollback(self, request: web.Request) -> web.Response:
        req: _Actor = await self._body(request, _Actor)
        return self._change(operations.rollback(self.gw.state, request.match_info["role"], actor=req.actor))

    async def rollback_trial(self, request: web.Request) -> web.Response:
        req: _Actor = await self._body(request, _Actor)
        return self._change(operations.rollback_trial(self.gw.state, actor=req.actor))

    async def deprecation(self, request: web.Request) -> web.Response:
        req: DeprecateRequest = await self._body(request, DeprecateRequest)
        return self._change(
            operations.set_deprecated(
                self.gw.state, request.match_info["model"], req.deprecated, sunset=req.sunset, actor=req.actor
            )
        )

    # ------------------------------------------------------------------ hosts
    async def preflight(self, request: web.Request) -> web.Response:
        role, model = request.query.get("role"), request.query.get("model")
        if not role or not model:
            raise CallerError("preflight needs both ?role= and ?model=", param="role" if not role else "model")
        result = await self._hosts().preflight(role, model, self.gw.state)
        return _json(_dump(result))

    async def start_job(self, request: web.Request) -> web.Response:
        req: _JobRequest = await self._body(request, _JobRequest)
        try:
            job = self._hosts().start_job(req.kind, req.host)
        except ValueError as exc:
            raise CallerError(str(exc)) from None
        return _json(_dump(job))

    async def jobs(self, request: web.Request) -> web.Response:
        return _json([_dump(j) for j in self._hosts().jobs()])

    async def job_log(self, request: web.Request) -> web.Response:
        since = self._int(request, "since", 0)
        job = request.match_info["job"]
        try:
            lines = self._hosts().job_log(job, since)
        except (KeyError, ValueError):
            raise NotFound(f"unknown job {job!r}", code="job_not_found") from None
        return _json({"lines": lines, "next": since + len(lines)})

    async def cancel_job(self, request: web.Request) -> web.Response:
        job = request.match_info["job"]
        try:
            info = await self._hosts().cancel_job(job)
        except (KeyError, ValueError):
            raise NotFound(f"unknown job {job!r}", code="job_not_found") from None
        return _json(_dump(info))


class _Actor(BaseModel):
    actor: str = "operator"


class _JobRequest(BaseModel):
    kind: str
    host: str
