"""The trial end to end: real traffic through the gateway to the real llama.cpp server (swap a role,
traffic, roll back, traffic) and the exact scorecard, embedded and attached; the console's Trial
screen under Pilot (w, p, r, R); a snapshot of the screen over a fixed history."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from textual.app import App

from forge_tui.config.models import Catalog
from forge_tui.console import ForgeApp
from forge_tui.console.screens.confirm import ConfirmScreen
from forge_tui.console.screens.trial import TrialScreen
from forge_tui.control.local import LocalControl
from forge_tui.control.remote import RemoteControl
from forge_tui.operator.service import OperatorService
from forge_tui.runtime import Runtime
from forge_tui.state import AuditEntry, RoutingState
from forge_tui.telemetry import ErrorClass, Telemetry

from .console_support import ADMIN_TOKEN, console_catalog_data, console_runtime, running_runtime, wait_until
from .test_trial_scorecard import SWAP, T0, req, write

A, B = "gemma-a", "gemma-b"


def _catalog(url: str) -> Catalog:
    data = console_catalog_data(url)
    data["gateway"] = {"health_interval_s": 1, "history": True}
    return Catalog.model_validate(data)


@pytest.fixture
async def rt(llama_server, tmp_path: Path) -> AsyncIterator[Runtime]:  # type: ignore[no-untyped-def]
    async with running_runtime(_catalog(llama_server.url), tmp_path, name="trial.yaml", history=True) as runtime:
        yield runtime


async def _send(url: str, n: int, source: str = "agent", *, json_mode: bool = False) -> None:
    body: dict[str, object] = {
        "model": "default-chat",
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 4,
    }
    if json_mode:
        body["response_format"] = {"type": "json_object"}
        body["max_tokens"] = 24
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        for _ in range(n):
            resp = await c.post("/v1/chat/completions", json=body, headers={"x-forge-source": source})
            assert resp.status_code == 200, resp.text


async def _trial_traffic(rt: Runtime, control: LocalControl | RemoteControl) -> None:
    url = rt.url
    assert url is not None
    assert (await control.rollback("default-chat", actor="test")).ok  # to the baseline gemma-a
    await _send(url, 3)
    await _send(url, 1, source="smoke")
    assert (await control.swap("default-chat", B, actor="test")).ok
    await _send(url, 3)
    await _send(url, 1, json_mode=True)
    assert (await control.rollback("default-chat", actor="test")).ok
    await _send(url, 2, source="job")


@pytest.mark.parametrize("mode", ["embedded", "attached"])
async def test_real_traffic_gives_the_exact_scorecard(rt: Runtime, mode: str) -> None:
    control: LocalControl | RemoteControl = (
        LocalControl(rt) if mode == "embedded" else RemoteControl(rt.gateway.url, ADMIN_TOKEN)
    )
    try:
        await _trial_traffic(rt, control)
        sc = await control.trial_scorecard()
    finally:
        await control.close()
    assert [c.role for c in sc.roles] == ["default-chat", "prompt-enhance"]
    dc = sc.roles[0]
    assert (dc.trial_model, dc.baseline_model, dc.current_model, dc.status) == (B, A, A, "rolled-back")
    assert (dc.trial.requests, dc.baseline.requests) == (4, 5)
    assert [(s.source, s.model, s.requests, s.errors) for s in dc.excluded] == [("smoke", A, 1, 0)]
    assert [m.action for m in dc.marks] == ["rollback", "swap", "rollback"]
    assert dc.trial.structured.total == 1
    parsed = dc.trial.structured.count
    assert dc.trial.errors_by_class == ({} if parsed else {"model_output": 1})
    assert dc.baseline.errors.count == 0 and dc.baseline.errors_by_class == {}
    assert dc.trial.latency_ms.samples == 4 and dc.baseline.latency_ms.samples == 5
    assert dc.trial.tokens_per_s is not None and dc.trial.tokens_per_s > 0
    assert dc.trial.load.idle_samples + dc.trial.load.loaded_samples == 4
    assert (dc.verdict, dc.needs_trial_requests, dc.needs_baseline_requests) == ("not enough data", 196, 195)
    assert sc.exit_code == 2
    pe = sc.roles[1]
    assert (pe.trial.requests, pe.baseline.requests, pe.status) == (0, 0, "active")
    # the sources were stored per request
    recs = rt.telemetry.history(role="default-chat")
    assert sorted({r.source for r in recs}) == ["agent", "job", "smoke"]
    assert all(r.inflight is not None and r.inflight >= 0 and not r.cold_start for r in recs)


@pytest.mark.parametrize("mode", ["embedded", "attached"])
async def test_trial_screen_keys_act_on_the_selected_role(rt: Runtime, mode: str) -> None:
    control: LocalControl | RemoteControl = (
        LocalControl(rt) if mode == "embedded" else RemoteControl(rt.gateway.url, ADMIN_TOKEN)
    )
    await _trial_traffic(rt, control)
    app = ForgeApp(control, refresh_s=0.2, actor="test")
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None, what="first snapshot")
        await pilot.press("w")
        await wait_until(
            pilot,
            lambda: isinstance(app.screen, TrialScreen) and app.screen.scorecard is not None,
            what="the Trial screen's scorecard",
        )
        screen = app.screen
        assert isinstance(screen, TrialScreen)
        assert screen.selected().role == "default-chat"  # type: ignore[union-attr]
        # p on prompt-enhance: confirm, promote, audited
        await pilot.press("down")
        assert screen.selected().role == "prompt-enhance"  # type: ignore[union-attr]
        await pilot.press("p")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the promote confirmation")
        await pilot.press("y")
        await wait_until(
            pilot,
            lambda: rt.state.role("prompt-enhance").trial_status == "promoted",
            what="promote",  # type: ignore[union-attr]
        )
        assert rt.state.audit_log()[-1].action == "promote"
        # r on default-chat (on its baseline, previous gemma-b): back to the trial model
        await pilot.press("up")
        await pilot.press("r")
        await wait_until(pilot, lambda: rt.state.role("default-chat").model == B, what="rollback")  # type: ignore[union-attr]
        assert rt.state.role("default-chat").trial_status == "active"  # type: ignore[union-attr]
        # R: the whole trial back to its baselines (prompt-enhance is promoted: not part of it any more)
        await pilot.press("R")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the trial rollback confirmation")
        await pilot.press("y")
        await wait_until(pilot, lambda: rt.state.role("default-chat").model == A, what="trial rollback")  # type: ignore[union-attr]
        assert rt.state.role("prompt-enhance").model == B  # type: ignore[union-attr]
        assert rt.state.trial_status() == "rolled-back"
    await control.close()


# -- snapshot over a fixed history ----------------------------------------------------------------


def _fixed_history(tmp_path: Path) -> tuple[OperatorService, float, float]:
    from forge_tui.config import load_catalog

    from .test_trial_scorecard import DEMO
    from .test_trial_scorecard import A as DA
    from .test_trial_scorecard import B as DB

    recs = []
    for i in range(300):
        ec = ErrorClass.UPSTREAM_ERROR if i % 60 == 0 else ErrorClass.OK
        recs.append(req(T0 + i * 12, DA, lat=400.0 + (i % 50) * 8, ttft_ms=90.0, error_class=ec, tokens_per_s=30.0))
    for i in range(300):
        ec = ErrorClass.UPSTREAM_TIMEOUT if i % 12 == 0 else ErrorClass.OK
        recs.append(req(SWAP + i * 12, DB, lat=900.0 + (i % 50) * 20, ttft_ms=150.0, error_class=ec, tokens_per_s=22.0))
    recs.append(req(SWAP + 30, DB, source="smoke"))
    sdir = tmp_path / "state"
    write(sdir / "history.sqlite3", recs)
    when = dt.datetime.fromtimestamp(SWAP, dt.UTC).isoformat(timespec="seconds")
    entry = AuditEntry(when, "op", "swap", "default-chat", {"model": DA}, {"model": DB, "baseline": DA})
    (sdir / "audit.jsonl").write_text(entry.to_json() + "\n")
    service = OperatorService(RoutingState(load_catalog(DEMO), sdir), telemetry=Telemetry(sdir / "history.sqlite3"))
    return service, T0, T0 + 7200


def test_trial_screen_snapshot(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    service, since, until = _fixed_history(tmp_path)

    class _Host(App[None]):
        async def on_mount(self) -> None:
            await self.push_screen(TrialScreen(service, since=since, until=until))

    async def shown(pilot) -> None:  # type: ignore[no-untyped-def]
        await wait_until(
            pilot,
            lambda: isinstance(pilot.app.screen, TrialScreen) and pilot.app.screen.loads == 1,
            what="scorecard",
        )
        await pilot.wait_for_scheduled_animations()
        await pilot.pause(0.5)  # the chart replots once its size is known; let it settle before the picture
        await pilot.pause()

    assert snap_compare(_Host(), terminal_size=(140, 44), run_before=shown)


async def test_source_comes_from_the_header_or_the_named_api_key(llama_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = console_catalog_data(llama_server.url)
    data["gateway"] = {"health_interval_s": 1, "history": True, "named_api_keys": {"nightly-job": "k-job"}}
    runtime = console_runtime(Catalog.model_validate(data), tmp_path, name="t.yaml", history=True)
    await runtime.start()
    try:
        body = {"model": "default-chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        async with httpx.AsyncClient(base_url=runtime.url or "", timeout=120) as c:
            for headers, want in (
                ({"authorization": "Bearer k-job"}, 200),
                ({"authorization": "Bearer k-job", "x-forge-source": "UI"}, 200),
                ({"authorization": "Bearer k-job", "x-forge-source": "no spaces allowed"}, 200),
                ({"authorization": "Bearer wrong"}, 401),
            ):
                resp = await c.post("/v1/chat/completions", json=body, headers=headers)
                assert resp.status_code == want, resp.text
        await runtime.telemetry.flush()
        got = [(r.source, r.status) for r in runtime.telemetry.history()]
        assert got == [("nightly-job", 200), ("ui", 200), ("invalid", 200), (None, 401)]
    finally:
        await runtime.stop(drain_timeout=5)


async def test_attached_promote_and_a_gateway_without_history(rt: Runtime, llama_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from forge_tui.control.base import ControlError

    remote = RemoteControl(rt.gateway.url, ADMIN_TOKEN)
    try:
        res = await remote.promote("prompt-enhance", actor="test")
        assert res.ok and "promoted" in res.message
        assert rt.state.role("prompt-enhance").trial_status == "promoted"  # type: ignore[union-attr]
        again = await remote.promote("prompt-enhance", actor="test")
        assert not again.ok and "not in a trial" in again.message
    finally:
        await remote.close()
    bare = console_runtime(_catalog(llama_server.url), tmp_path, name="bare.yaml", state="bare-state")
    await bare.start()
    remote = RemoteControl(bare.gateway.url, ADMIN_TOKEN)
    try:
        with pytest.raises(ControlError, match="no request history"):
            await remote.trial_scorecard()
    finally:
        await remote.close()
        await bare.stop(drain_timeout=5)


async def test_a_request_that_waits_out_a_startup_is_a_cold_start(llama_server_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The backend's real llama.cpp server is started only after the request arrived."""
    import asyncio

    from forge_tui.launch import free_port

    port = free_port()
    data = console_catalog_data(f"http://127.0.0.1:{port}")
    data["gateway"] = {"health_interval_s": 1, "history": True}
    data["backends"]["local-chat"]["warmup_timeout_s"] = 120  # type: ignore[index]
    runtime = console_runtime(Catalog.model_validate(data), tmp_path, name="t.yaml", history=True)
    await runtime.start()
    try:
        first = asyncio.create_task(_send(runtime.url or "", 1))
        await asyncio.sleep(0.5)
        assert not first.done()  # waiting: nothing listens yet
        llama_server_factory(wait=False, port=port)
        await asyncio.wait_for(first, 180)
        await _send(runtime.url or "", 1)
        await runtime.telemetry.flush()
        recs = runtime.telemetry.history(role="default-chat")
        assert [r.cold_start for r in recs] == [True, False]
        sc = await LocalControl(runtime).trial_scorecard()
        dc = sc.roles[0]
        assert (dc.trial.cold_starts, dc.trial.latency_ms.samples, dc.trial.requests) == (1, 1, 2)
        assert dc.trial.cold_p50_ms is not None and dc.trial.cold_p50_ms > 400  # it arrived >= 0.5 s before the server
    finally:
        await runtime.stop(drain_timeout=5)
