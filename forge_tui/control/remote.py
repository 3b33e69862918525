"""Control of a headless ``forge-tui serve`` through its admin API (``forge-tui attach``).

Every change is a JSON body (``{}`` when there is nothing to say): the admin API refuses
changes that are not ``Content-Type: application/json`` (its guard against cross-site forms).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter, ValidationError

from ..errortext import error_message
from ..schema import AuditInfo, ChangeResult, JobInfo, PreflightResult, Snapshot
from ..trial.schema import Scorecard
from .base import ControlError

__all__ = ["RemoteControl"]

_audit_list = TypeAdapter(list[AuditInfo])
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class RemoteControl:
    """``token_file``: where the token came from; on a 401 the file is read again (a restarted
    ``forge-tui serve`` writes a new per-run token there) and the call is tried once more."""

    def __init__(
        self, url: str, token: str | None, *, timeout: float = 30.0, token_file: str | Path | None = None
    ) -> None:
        self._url = url.rstrip("/")
        self._token = token
        self._token_file = Path(token_file).expanduser() if token_file else None
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(base_url=self._url, headers=headers, timeout=timeout)

    def _reload_token(self) -> bool:
        """Read the token file again; True when it now holds another token (then it is used)."""
        if self._token_file is None:
            return False
        from ..operator.admin_token import read_token_file

        try:
            token = read_token_file(self._token_file)
        except ValueError:
            return False  # the gateway may be mid-restart; the next poll tries again
        if token == self._token:
            return False
        self._token = token
        self._client.headers["authorization"] = f"Bearer {token}"
        return True

    @property
    def gateway_url(self) -> str:
        return self._url

    @property
    def mode(self) -> str:
        return "attached"

    async def _call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None, change: bool = False
    ) -> Any:
        if json is None and method in _BODY_METHODS:
            json = {}  # httpx then sends Content-Type: application/json
        try:
            resp = await self._client.request(method, path, json=json, params=params)
            if resp.status_code == 401 and self._reload_token():
                resp = await self._client.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise ControlError(f"gateway at {self._url} unreachable: {exc.__class__.__name__}: {exc}") from None
        if change and resp.status_code == 409:
            return resp.json()  # a refused change is a result, not a transport failure
        if resp.status_code >= 400:
            msg = error_message(resp.text, limit=300)
            if resp.status_code == 401:
                msg = f"admin API refused the token: {msg}"
            elif resp.status_code == 403:
                msg = f"admin API refused the request: {msg}"
            raise ControlError(f"{method} {path}: HTTP {resp.status_code}: {msg}")
        return resp.json()

    def _change(self, data: Any) -> ChangeResult:
        if isinstance(data, dict) and "ok" in data:
            return ChangeResult.model_validate(data)
        try:
            return ChangeResult(ok=False, message=str(data["error"]["message"]))
        except (KeyError, TypeError):
            raise ControlError(f"unexpected admin API answer: {str(data)[:200]}") from None

    async def snapshot(self) -> Snapshot:
        data = await self._call("GET", "/admin/snapshot")
        try:
            return Snapshot.model_validate(data)
        except ValidationError as exc:
            raise ControlError(f"gateway sent an unexpected snapshot: {exc.errors()[0]['msg']}") from None

    async def eligible_models(self, role: str) -> list[str]:
        return list(await self._call("GET", f"/admin/roles/{quote(role, safe='')}/eligible"))

    async def swap(
        self, role: str, model: str, *, force: bool = False, actor: str = "operator", preflight_id: str | None = None
    ) -> ChangeResult:
        data = await self._call(
            "POST",
            f"/admin/roles/{quote(role, safe='')}/swap",
            json={"model": model, "force": force, "actor": actor, "preflight_id": preflight_id},
            change=True,
        )
        return self._change(data)

    async def rollback(self, role: str, *, actor: str = "operator") -> ChangeResult:
        data = await self._call(
            "POST", f"/admin/roles/{quote(role, safe='')}/rollback", json={"actor": actor}, change=True
        )
        return self._change(data)

    async def rollback_trial(self, *, actor: str = "operator") -> ChangeResult:
        return self._change(await self._call("POST", "/admin/trial/rollback", json={"actor": actor}, change=True))

    async def promote(self, role: str, *, actor: str = "operator") -> ChangeResult:
        data = await self._call(
            "POST", f"/admin/roles/{quote(role, safe='')}/promote", json={"actor": actor}, change=True
        )
        return self._change(data)

    async def trial_scorecard(self, since: float | None = None, until: float | None = None) -> Scorecard:
        params = {k: str(v) for k, v in (("since", since), ("until", until)) if v is not None}
        data = await self._call("GET", "/admin/trial/scorecard", params=params)
        try:
            return Scorecard.model_validate(data)
        except ValidationError as exc:
            raise ControlError(f"gateway sent an unexpected scorecard: {exc.errors()[0]['msg']}") from None

    async def set_deprecated(
        self, model: str, deprecated: bool, *, sunset: str | None = None, actor: str = "operator"
    ) -> ChangeResult:
        data = await self._call(
            "POST",
            f"/admin/models/{quote(model, safe='')}/deprecation",
            json={"deprecated": deprecated, "sunset": sunset, "actor": actor},
            change=True,
        )
        return self._change(data)

    async def audit(self, limit: int = 200) -> list[AuditInfo]:
        return _audit_list.validate_python(await self._call("GET", "/admin/audit", params={"limit": limit}))

    async def preflight(self, role: str, model: str) -> PreflightResult:
        return PreflightResult.model_validate(
            await self._call("GET", "/admin/preflight", params={"role": role, "model": model})
        )

    async def start_job(self, kind: str, host: str) -> JobInfo:
        return JobInfo.model_validate(await self._call("POST", "/admin/jobs", json={"kind": kind, "host": host}))

    async def job_log(self, job_id: str, since: int = 0) -> list[str]:
        data = await self._call("GET", f"/admin/jobs/{quote(job_id, safe='')}/log", params={"since": since})
        return list(data.get("lines", []))

    async def cancel_job(self, job_id: str) -> JobInfo:
        return JobInfo.model_validate(await self._call("POST", f"/admin/jobs/{quote(job_id, safe='')}/cancel"))

    async def close(self) -> None:
        await self._client.aclose()
