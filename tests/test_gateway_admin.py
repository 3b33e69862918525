"""The admin API: token rules (always a token; a generated 0600 token file when none is configured),
refusal of browser (cross-site) requests and of non-JSON changes, snapshot, audit, eligible models, swap / rollback /
trial rollback / deprecation through the operator service, preflight and jobs through the real
``HostsService`` (local transport), and the lead's ``RemoteControl`` client against it.

Backends are recording upstreams so each test can see which model a request reached."""

from __future__ import annotations

import datetime as dt
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from forge_tui import cli
from forge_tui.cli import gateway as cli_gateway
from forge_tui.control.remote import RemoteControl
from forge_tui.hosts import HostsService
from forge_tui.operator.admin_http import AdminHttp
from forge_tui.operator.admin_token import read_token_file
from forge_tui.schema import AuditInfo, ChangeResult, PreflightResult, Snapshot
from tests.support.gateway_harness import Harness, make_catalog, running_gateway
from tests.support.recording_upstream import RecordingUpstream

TOKEN = "s3cret-admin"
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def up() -> AsyncIterator[RecordingUpstream]:
    u = await RecordingUpstream("a").start()
    yield u
    await u.stop()


def _catalog(url: str, gguf: str | None = None):
    return make_catalog(
        backends={"a": {"base_url": url}},
        models={
            "gemma-4": {"placements": [{"backend": "a", "name": "g4"}]},
            "qwen3": {"placements": [{"backend": "a", "name": "q3"}], **({"gguf": gguf} if gguf else {})},
            "embedder": {"capabilities": ["embed"], "placements": [{"backend": "a"}]},
        },
        roles={
            "default-chat": {"model": "gemma-4", "previous": "qwen3", "trial": True},
            "priority-chat": {"model": "qwen3"},
        },
        trial={"name": "gemma4-trial", "rollback_by": "2031-01-31"},
    )


@pytest.fixture
async def gw(up: RecordingUpstream, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_gateway(
        _catalog(up.url), state_dir=tmp_path / "state", admin_token=TOKEN, config_path=str(tmp_path / "forge.yaml")
    ) as h:
        yield h


def _admin(h: Harness, token: str | None = TOKEN) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=h.url, headers=headers)


async def test_token_is_required(gw: Harness) -> None:
    async with _admin(gw, None) as c:
        r = await c.get("/admin/snapshot")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_token"
        r = await c.get("/admin/snapshot", headers={"authorization": "Bearer nope"})
        assert r.status_code == 401
        r = await c.get("/admin/snapshot", headers={"x-forge-admin-token": TOKEN})
        assert r.status_code == 200
    async with _admin(gw) as c:
        assert (await c.get("/admin/snapshot")).status_code == 200


async def test_without_a_configured_token_the_gateway_writes_a_0600_token_file(
    up: RecordingUpstream, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    async with running_gateway(_catalog(up.url), state_dir=state_dir) as h:
        path = h.admin.token_path
        assert path == state_dir / "admin.token" and path.is_file()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        token = read_token_file(path)
        assert token == h.admin.token and len(token) >= 32
        assert [p.name for p in state_dir.iterdir() if p.name.startswith(".admin.token")] == []  # no temp left
        async with _admin(h, None) as c:
            r = await c.get("/admin/snapshot")  # we are on 127.0.0.1: loopback alone is not enough
            assert r.status_code == 401 and "admin.token" in r.json()["error"]["message"]
            r = await c.post("/admin/trial/rollback", json={})
            assert r.status_code == 401
        assert h.state.audit_log(10) == [] and h.state.role("default-chat").model == "gemma-4"
        async with _admin(h, token) as c:
            assert (await c.get("/admin/snapshot")).status_code == 200
        rc = RemoteControl(h.url, read_token_file(path))
        try:
            assert (await rc.rollback_trial(actor="ops")).ok
        finally:
            await rc.close()
    assert not path.exists()  # the token dies with the run


async def test_each_run_gets_its_own_token_and_no_state_dir_keeps_it_in_memory(up: RecordingUpstream) -> None:
    async with running_gateway(_catalog(up.url)) as h1:
        assert h1.admin.token_path is None
        async with _admin(h1, None) as c:
            assert (await c.get("/admin/snapshot")).status_code == 401
        async with _admin(h1, h1.admin.token) as c:
            assert (await c.get("/admin/snapshot")).status_code == 200
        async with running_gateway(_catalog(up.url)) as h2:
            assert h2.admin.token != h1.admin.token
            async with _admin(h2, h1.admin.token) as c:
                assert (await c.get("/admin/snapshot")).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
    ids=["origin", "origin-null", "fetch-cross-site", "fetch-same-site"],
)
async def test_browser_requests_are_refused_even_with_the_token(gw: Harness, headers: dict[str, str]) -> None:
    async with _admin(gw) as c:
        r = await c.post("/admin/trial/rollback", json={"actor": "evil"}, headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_site_refused"
        r = await c.post("/admin/roles/default-chat/swap", json={"model": "qwen3"}, headers=headers)
        assert r.status_code == 403
        assert (await c.get("/admin/snapshot", headers=headers)).status_code == 403
        assert (await c.get("/admin/audit")).json() == []  # nothing changed
        assert gw.state.role("default-chat").model == "gemma-4"
        # What a browser sends for a typed URL or a same-origin request still passes (with the token).
        for ok in ("none", "same-origin"):
            assert (await c.get("/admin/snapshot", headers={"Sec-Fetch-Site": ok})).status_code == 200


async def test_changes_must_be_json(gw: Harness) -> None:
    async with _admin(gw) as c:
        for headers, body in (
            ({"Content-Type": "text/plain"}, b'{"actor": "evil"}'),
            ({"Content-Type": "application/x-www-form-urlencoded"}, b"actor=evil"),
            ({"Content-Type": "multipart/form-data; boundary=x"}, b"--x--"),
            ({}, b""),
        ):
            r = await c.post("/admin/trial/rollback", content=body, headers=headers)
            assert r.status_code == 415, (headers, r.text)
            assert r.json()["error"]["code"] == "unsupported_media_type"
        assert (await c.get("/admin/audit")).json() == []
        assert gw.state.role("default-chat").model == "gemma-4"
        # The same change as JSON goes through (charset parameters are fine).
        r = await c.post(
            "/admin/trial/rollback", content=b"{}", headers={"Content-Type": "application/json; charset=utf-8"}
        )
        assert r.status_code == 200 and r.json()["ok"]
        assert len((await c.get("/admin/audit")).json()) == 1


async def test_no_job_starts_from_a_refused_request(up: RecordingUpstream, tmp_path: Path) -> None:
    cat = _catalog(up.url)
    hosts = HostsService(cat, state_dir=tmp_path / "state", probe_interval_s=60)
    await hosts.start()
    try:
        async with running_gateway(cat, state_dir=tmp_path / "state", admin_token=TOKEN, hosts=hosts) as h:
            async with _admin(h) as c:
                job = {"kind": "verify", "host": "local"}
                r = await c.post("/admin/jobs", json=job, headers={"Origin": "http://localhost:3000"})
                assert r.status_code == 403
                r = await c.post(
                    "/admin/jobs",
                    content=b'{"kind": "verify", "host": "local"}',
                    headers={"Content-Type": "text/plain"},
                )
                assert r.status_code == 415
            async with _admin(h, None) as c:
                assert (await c.post("/admin/jobs", json=job)).status_code == 401
            assert hosts.jobs() == []
            async with _admin(h) as c:  # a well-formed request does reach the jobs handler
                r = await c.post("/admin/jobs", json={"kind": "dance", "host": "local"})
                assert r.status_code == 400 and "unknown job kind" in r.json()["error"]["message"]
            assert hosts.jobs() == []
    finally:
        await hosts.close()


def test_admin_api_refuses_to_run_without_a_token() -> None:
    with pytest.raises(ValueError, match="needs a token"):
        AdminHttp(None, "")  # type: ignore[arg-type]


async def test_attach_finds_its_token(
    tmp_path: Path, gw: Harness, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FORGE_ADMIN_TOKEN", raising=False)
    parse = cli.build_parser().parse_args
    assert await cli_gateway._attach(parse(["attach", gw.url])) == 2
    err = capsys.readouterr().err
    assert "--token-file" in err and "$FORGE_ADMIN_TOKEN" in err and "admin.token" in err

    assert await cli_gateway._attach(parse(["attach", gw.url, "--token-file", str(tmp_path / "nope")])) == 2
    assert "does not exist" in capsys.readouterr().err

    wrong = tmp_path / "wrong.token"
    wrong.write_text("not-the-token\n")
    assert await cli_gateway._attach(parse(["attach", gw.url, "--token-file", str(wrong)])) == 2
    assert "HTTP 401" in capsys.readouterr().err  # the file was read and its token sent
    # --token wins over the file, $FORGE_ADMIN_TOKEN too: a wrong one there is what gets sent.
    monkeypatch.setenv("FORGE_ADMIN_TOKEN", "also-wrong")
    good = tmp_path / "good.token"
    good.write_text(TOKEN + "\n")
    assert await cli_gateway._attach(parse(["attach", gw.url, "--token-file", str(good)])) == 2
    assert "HTTP 401" in capsys.readouterr().err


async def test_snapshot_audit_and_eligible(gw: Harness) -> None:
    async with _admin(gw) as c:
        snap = Snapshot.model_validate((await c.get("/admin/snapshot")).json())
        assert snap.gateway_url == gw.url and snap.trial == "gemma4-trial" and snap.trial_rollback_by == "2031-01-31"
        assert snap.config_path and snap.config_path.endswith("forge.yaml")
        roles = {r.name: r for r in snap.roles}
        assert roles["default-chat"].model == "gemma-4" and roles["default-chat"].in_trial
        assert sorted((await c.get("/admin/roles/default-chat/eligible")).json()) == ["gemma-4", "qwen3"]
        r = await c.get("/admin/roles/nope/eligible")
        assert r.status_code == 404 and "unknown role" in r.json()["error"]["message"]
        assert (await c.get("/admin/audit")).json() == []
        r = await c.get("/admin/audit", params={"limit": "x"})
        assert r.status_code == 400


async def test_swap_rollback_and_audit(gw: Harness, up: RecordingUpstream) -> None:
    async with _admin(gw) as c:
        r = await c.post("/admin/roles/default-chat/swap", json={"model": "qwen3", "actor": "ops"})
        res = ChangeResult.model_validate(r.json())
        assert r.status_code == 200 and res.ok and res.message == "default-chat: gemma-4 -> qwen3"
        raw = await gw.client().chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
        assert "model=qwen3" in raw.headers["x-forge-route"] and up.bodies()[-1]["model"] == "q3"

        r = await c.post("/admin/roles/default-chat/swap", json={"model": "embedder"})
        assert r.status_code == 409 and "missing capability chat" in r.json()["error"]["message"]
        r = await c.post("/admin/roles/default-chat/swap", json={"modle": "x"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "model"

        r = await c.post("/admin/roles/default-chat/rollback", json={"actor": "ops"})
        assert r.status_code == 200 and r.json()["ok"]
        raw = await gw.client().chat.completions.with_raw_response.create(model="default-chat", messages=MSG)
        assert "model=gemma-4" in raw.headers["x-forge-route"]

        audit = [AuditInfo.model_validate(a) for a in (await c.get("/admin/audit", params={"limit": 10})).json()]
        assert [(a.action, a.target, a.actor) for a in audit] == [
            ("swap", "default-chat", "ops"),
            ("rollback", "default-chat", "ops"),
        ]


async def test_trial_rollback_and_deprecation(gw: Harness) -> None:
    async with _admin(gw) as c:
        r = await c.post("/admin/trial/rollback", json={"actor": "ops"})
        assert r.status_code == 200 and "default-chat -> qwen3" in r.json()["message"]
        r = await c.post("/admin/trial/rollback", json={})
        assert r.status_code == 409  # nothing left in the trial

        sunset = (dt.date.today() + dt.timedelta(days=30)).isoformat()
        r = await c.post("/admin/models/gemma-4/deprecation", json={"deprecated": True, "sunset": sunset})
        assert r.status_code == 200 and r.json()["ok"]
        raw = await gw.client().chat.completions.with_raw_response.create(model="gemma-4", messages=MSG)
        assert raw.headers["Deprecation"].startswith("@") and raw.headers["Sunset"].endswith("GMT")
        models = {m.id: m.model_dump() for m in (await gw.client().models.list()).data}
        assert models["gemma-4"]["forge"]["deprecated"] is True and models["gemma-4"]["forge"]["sunset"] == sunset
        r = await c.post("/admin/models/gemma-4/deprecation", json={"deprecated": True, "sunset": "2001-01-01"})
        assert r.status_code == 409 and "in the past" in r.json()["error"]["message"]
        r = await c.post("/admin/models/gemma-4/deprecation", json={"deprecated": False})
        assert r.status_code == 200
        raw = await gw.client().chat.completions.with_raw_response.create(model="gemma-4", messages=MSG)
        assert "Deprecation" not in raw.headers


async def test_preflight_and_jobs_need_the_hosts_service(gw: Harness) -> None:
    async with _admin(gw) as c:
        for method, path in (
            ("GET", "/admin/preflight?role=default-chat&model=qwen3"),
            ("GET", "/admin/jobs"),
            ("POST", "/admin/jobs"),
        ):
            r = await c.request(method, path, json={"kind": "verify", "host": "local"} if method == "POST" else None)
            assert r.status_code == 503 and "hosts service" in r.json()["error"]["message"]


async def test_preflight_blocks_a_swap_unless_forced(up: RecordingUpstream, tmp_path: Path) -> None:
    cat = _catalog(up.url, gguf=str(tmp_path / "missing" / "qwen3.gguf"))
    hosts = HostsService(cat, state_dir=tmp_path / "state", probe_interval_s=60)
    await hosts.start()
    try:
        async with (
            running_gateway(cat, state_dir=tmp_path / "state", admin_token=TOKEN, hosts=hosts) as h,
            _admin(h) as c,
        ):
            r = await c.get("/admin/preflight", params={"role": "default-chat", "model": "qwen3"})
            pf = PreflightResult.model_validate(r.json())
            assert r.status_code == 200 and pf.blocked
            weights = next(ch for ch in pf.checks if ch.name == "weights")
            assert weights.outcome == "fail" and "qwen3.gguf" in weights.evidence

            r = await c.post("/admin/roles/default-chat/swap", json={"model": "qwen3"})
            assert r.status_code == 409 and "preflight failed" in r.json()["error"]["message"]
            assert h.state.role("default-chat").model == "gemma-4"

            r = await c.post("/admin/roles/default-chat/swap", json={"model": "qwen3", "force": True})
            assert r.status_code == 200 and "forced" in r.json()["message"]
            note = r.json()["audit"][0]["note"]
            assert note.startswith("forced past failed preflight: ") and "qwen3.gguf" in note

            assert (await c.get("/admin/jobs")).json() == []
            r = await c.post("/admin/jobs", json={"kind": "dance", "host": "local"})
            assert r.status_code == 400 and "unknown job kind" in r.json()["error"]["message"]
            assert (await c.get("/admin/jobs/nope/log")).status_code == 404
            assert (await c.post("/admin/jobs/nope/cancel", json={})).status_code == 404
            snap = Snapshot.model_validate((await c.get("/admin/snapshot")).json())
            assert [hi.name for hi in snap.hosts] == ["local"]
    finally:
        await hosts.close()


async def test_remote_control_drives_the_admin_api(gw: Harness) -> None:
    rc = RemoteControl(gw.url, TOKEN)
    try:
        snap = await rc.snapshot()
        assert {r.name for r in snap.roles} == {"default-chat", "priority-chat"}
        res = await rc.swap("priority-chat", "gemma-4", actor="remote")
        assert res.ok
        refused = await rc.swap("priority-chat", "embedder")
        assert not refused.ok and "missing capability" in refused.message
        assert [a.action for a in await rc.audit()] == ["swap"]
        assert sorted(await rc.eligible_models("priority-chat")) == ["gemma-4", "qwen3"]
        assert (await rc.rollback("priority-chat")).ok
    finally:
        await rc.close()
