"""The operator service on its own: one preflight per swap (the one the operator was shown stands while
fresh), state writes off the event loop and one change at a time, the changed rows in the result, and
the admin API and ``LocalControl`` giving the same answers. Preflight runs on the real ``HostsService``
(local transport); the gateway is real, its backend a recording upstream."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from forge_tui.control.base import ControlError
from forge_tui.control.local import LocalControl
from forge_tui.hosts import HostsService
from forge_tui.operator.service import PREFLIGHT_FRESH_S, NotFound, OperatorService, Unavailable
from forge_tui.runtime import Runtime
from forge_tui.schema import PreflightResult
from forge_tui.state import RoutingState
from tests.support.gateway_harness import make_catalog, running_gateway
from tests.support.recording_upstream import RecordingUpstream

TOKEN = "op-token"


def _catalog(url: str, gguf: str):
    return make_catalog(
        backends={"a": {"base_url": url}},
        models={
            "gemma-4": {"placements": [{"backend": "a", "name": "g4"}]},
            "qwen3": {"placements": [{"backend": "a", "name": "q3"}], "gguf": gguf},
        },
        roles={"default-chat": {"model": "gemma-4"}, "priority-chat": {"model": "qwen3"}},
    )


class CountingHosts(HostsService):
    """The real hosts service, counting its preflights (each one reads the host over its transport)."""

    preflights = 0

    async def preflight(self, role: str, model: str, state: RoutingState) -> PreflightResult:
        self.preflights += 1
        return await super().preflight(role, model, state)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def up() -> AsyncIterator[RecordingUpstream]:
    u = await RecordingUpstream("a").start()
    yield u
    await u.stop()


@pytest.fixture
async def hosts(up: RecordingUpstream, tmp_path: Path) -> AsyncIterator[CountingHosts]:
    h = CountingHosts(
        _catalog(up.url, str(tmp_path / "absent" / "q.gguf")), state_dir=tmp_path / "st", probe_interval_s=60
    )
    await h.start()
    yield h
    await h.close()


async def test_a_swap_reuses_the_preflight_the_operator_was_shown_while_it_is_fresh(
    hosts: CountingHosts, tmp_path: Path
) -> None:
    state = RoutingState(hosts.catalog, tmp_path / "st")
    clock = Clock()
    svc = OperatorService(state, hosts=hosts, clock=clock)
    shown = await svc.preflight("default-chat", "qwen3")
    assert shown.id and shown.blocked and hosts.preflights == 1

    refused = await svc.swap("default-chat", "qwen3", preflight_id=shown.id)
    assert not refused.ok and "preflight failed" in refused.message and "q.gguf" in refused.message
    assert hosts.preflights == 1  # the shown result stood
    forced = await svc.swap("default-chat", "qwen3", force=True, preflight_id=shown.id)
    assert forced.ok and hosts.preflights == 1
    assert "q.gguf" in state.audit_log()[-1].note

    # Another role or model, an unknown id, or a stale result: the swap runs it again.
    await svc.swap("priority-chat", "gemma-4", preflight_id=shown.id)
    assert hosts.preflights == 2
    await svc.swap("default-chat", "qwen3", preflight_id="pf-nope")
    assert hosts.preflights == 3
    again = await svc.preflight("priority-chat", "qwen3")
    clock.now += PREFLIGHT_FRESH_S + 1
    await svc.swap("priority-chat", "qwen3", preflight_id=again.id)
    assert hosts.preflights == 5


async def test_changes_write_off_the_loop_one_at_a_time_and_return_their_rows(tmp_path: Path) -> None:
    cat = _catalog("http://127.0.0.1:9", str(tmp_path / "q.gguf"))
    state = RoutingState(cat, tmp_path / "st")
    writers: list[int] = []
    state.subscribe(lambda entry: writers.append(threading.get_ident()))
    svc = OperatorService(state)
    a, b = await asyncio.gather(svc.swap("default-chat", "qwen3"), svc.swap("priority-chat", "gemma-4"))
    assert a.ok and b.ok, (a.message, b.message)
    assert len(writers) == 2 and threading.get_ident() not in writers  # persisted (and fsynced) in a worker
    assert [r.name for r in a.roles] == ["default-chat"] and a.roles[0].model == "qwen3"
    assert [m.id for m in a.models] == ["gemma-4", "qwen3"]
    assert {m.id: m.roles for m in a.models} == {"gemma-4": [], "qwen3": ["default-chat", "priority-chat"]}
    assert {m.id: m.roles for m in b.models} == {"qwen3": ["default-chat"], "gemma-4": ["priority-chat"]}
    dep = await svc.set_deprecated("gemma-4", True)
    assert dep.ok and dep.roles == [] and dep.models[0].deprecated
    rb = await svc.rollback("default-chat")
    assert rb.ok and rb.roles[0].model == "gemma-4" and rb.roles[0].previous == "qwen3"
    assert [e.action for e in await svc.audit()] == ["swap", "swap", "deprecate", "rollback"]


async def test_both_adapters_give_the_same_answers(up: RecordingUpstream, tmp_path: Path) -> None:
    cat = _catalog(up.url, str(tmp_path / "q.gguf"))
    async with running_gateway(cat, state_dir=tmp_path / "st", admin_token=TOKEN) as h:
        svc = h.operator
        with pytest.raises(Unavailable, match="hosts service"):
            await svc.preflight("default-chat", "qwen3")
        with pytest.raises(NotFound, match="unknown role 'nope'"):
            svc.eligible_models("nope")
        async with httpx.AsyncClient(base_url=h.url, headers={"authorization": f"Bearer {TOKEN}"}) as c:
            r = await c.get("/admin/roles/nope/eligible")
            assert r.status_code == 404 and r.json()["error"]["code"] == "role_not_found"
            r = await c.get("/admin/jobs/x/log")
            assert r.status_code == 503 and "hosts service" in r.json()["error"]["message"]
            r = await c.post("/admin/roles/default-chat/swap", json={"model": "qwen3"})
            assert r.status_code == 200 and r.json()["roles"][0]["model"] == "qwen3"


async def test_local_control_maps_service_errors(tmp_path: Path) -> None:
    cat = _catalog("http://127.0.0.1:9", str(tmp_path / "q.gguf"))
    async with Runtime(
        tmp_path / "forge.yaml", catalog=cat, state_dir=tmp_path / "st", port=0, with_hosts=False, history=False
    ) as rt:
        ctl = LocalControl(rt)
        with pytest.raises(ControlError, match="hosts service is not running"):
            await ctl.start_job("verify", "local")
        with pytest.raises(ControlError, match="unknown role 'nope'"):
            await ctl.eligible_models("nope")
        assert sorted(await ctl.eligible_models("default-chat")) == ["gemma-4", "qwen3"]
        res = await ctl.swap("default-chat", "qwen3", actor="t")
        assert res.ok and res.roles[0].changed_by == "t"
        assert (await ctl.snapshot()).roles[0].model == "qwen3"
        assert rt.admin.token_path == tmp_path / "st" / "admin.token" and rt.admin.token_path.exists()
    assert not (tmp_path / "st" / "admin.token").exists()


async def test_a_failed_history_write_reaches_the_snapshot(tmp_path: Path) -> None:
    import sqlite3

    from forge_tui.telemetry import RequestRecord, Telemetry

    cat = _catalog("http://127.0.0.1:9", str(tmp_path / "q.gguf"))
    path = tmp_path / "h.sqlite3"
    tel = Telemetry(path, flush_interval_s=60)
    await tel.start()
    try:
        svc = OperatorService(RoutingState(cat, None), telemetry=tel)
        assert svc.snapshot().telemetry.history_error is None
        conn = sqlite3.connect(path)
        conn.execute("DROP TABLE requests")  # the file broken under a running gateway
        conn.commit()
        conn.close()
        tel.record(RequestRecord(time=1.0, request_id="r1", endpoint="/v1/chat/completions"))
        await tel.flush()
        err = svc.snapshot().telemetry.history_error
        assert err is not None and "no such table: requests" in err
    finally:
        await tel.close()


def test_route_table_rebuilds_carry_deprecation_times_instead_of_rereading_the_audit_log(tmp_path: Path) -> None:
    from forge_tui.gateway.routing import RouteTable

    cat = _catalog("http://127.0.0.1:9", str(tmp_path / "q.gguf"))
    state = RoutingState(cat, tmp_path / "st")
    state.set_deprecated("qwen3", True, actor="t")
    first = RouteTable(state)  # the first table reads the audit log once
    when = dict(first.model_headers["qwen3"])["Deprecation"]
    logged = int(dt.datetime.fromisoformat(state.audit_log()[-1].time).timestamp())
    assert when == f"@{logged}"
    assert state.audit_file is not None
    state.audit_file.write_text("")  # were it read again, the time would fall back to the start time
    state.swap_role("default-chat", "qwen3", actor="t")
    again = RouteTable(state, previous=first, started_at=1.0)
    assert dict(again.model_headers["qwen3"])["Deprecation"] == when
    assert "qwen3" in again.deprecated_at and "gemma-4" not in again.deprecated_at
