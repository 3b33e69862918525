"""Every console key, driven with Pilot against a real gateway and the real llama.cpp server.

Each test runs twice: embedded (``LocalControl``, gateway in this process) and attached
(``RemoteControl`` over the admin API of the same kind of gateway, as ``forge-tui attach`` does).
Effects are checked where an agent would see them: the ``x-forge-route`` and Deprecation
headers of real HTTP requests, the state file and the audit log.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import ProgressBar

from forge_tui.config.models import Catalog
from forge_tui.console import ForgeApp
from forge_tui.console.screens.audit import AuditScreen
from forge_tui.console.screens.confirm import ConfirmScreen
from forge_tui.console.screens.deprecate import DeprecateScreen
from forge_tui.console.screens.detail import DetailScreen
from forge_tui.console.screens.help import HelpScreen
from forge_tui.console.screens.job import JobScreen
from forge_tui.console.screens.main import MainScreen
from forge_tui.console.screens.smoke import SmokeScreen
from forge_tui.console.screens.swap import SwapScreen
from forge_tui.console.widgets import HostsList, ModelsTable, RequestsPane, RolesTable
from forge_tui.control.base import Control
from forge_tui.control.local import LocalControl
from forge_tui.control.remote import RemoteControl
from forge_tui.runtime import Runtime

from .console_support import ADMIN_TOKEN, console_catalog, console_runtime, screen_text, wait_until, widget_text
from .support.fake_llama_build import FakeLlamaRepo, lab_catalog_data, make_repo
from .support.gguf_files import lab_models_dir
from .support.sshd import Sshd, sshd_available, start_sshd

pytestmark = [pytest.mark.llama, pytest.mark.timeout(240)]

SIZE = (160, 48)


@dataclass
class Forge:
    runtime: Runtime
    control: Control

    @property
    def url(self) -> str:
        return self.runtime.gateway.url

    @property
    def state_file(self) -> Path:
        f = self.runtime.state.state_file
        assert f is not None
        return f

    def state(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def audit(self) -> list[tuple[str, str]]:
        return [(e.action, e.target) for e in self.runtime.state.audit_log()]

    async def route(self, model: str) -> httpx.Response:
        """One real chat request through the gateway, as an agent sends it."""
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as client:
            resp = await client.post(
                "/v1/chat/completions",
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": "Say hi."}],
                    "max_tokens": 4,
                },
            )
        assert resp.status_code == 200, resp.text
        return resp


async def _start(catalog: Catalog, tmp_path: Path, mode: str) -> tuple[Runtime, Control]:
    rt = console_runtime(catalog, tmp_path, with_hosts=True)
    await rt.start()
    control: Control = LocalControl(rt) if mode == "embedded" else RemoteControl(rt.gateway.url, ADMIN_TOKEN)
    return rt, control


@pytest.fixture(params=["embedded", "attached"])
async def forge(request: pytest.FixtureRequest, llama_server, tmp_path: Path) -> AsyncIterator[Forge]:  # type: ignore[no-untyped-def]
    rt, control = await _start(console_catalog(llama_server.url), tmp_path, request.param)
    try:
        yield Forge(rt, control)
    finally:
        await control.close()
        await rt.stop(drain_timeout=5)


def _app(forge: Forge) -> ForgeApp:
    return ForgeApp(forge.control, refresh_s=0.2)


def _model_of(resp: httpx.Response) -> str:
    route = dict(part.strip().split("=", 1) for part in resp.headers["x-forge-route"].split(";"))
    return route["model"]


async def _ready(pilot, app: ForgeApp) -> MainScreen:  # type: ignore[no-untyped-def]
    await wait_until(
        pilot,
        lambda: (
            app.snapshot is not None
            and pilot.app.screen.query(RolesTable)
            and pilot.app.screen.query_one(RolesTable).row_count > 0
        ),
        what="the roles table",
    )
    screen = app.screen
    assert isinstance(screen, MainScreen)
    return screen


async def _open_swap(pilot, app: ForgeApp, screen: MainScreen, role: str) -> SwapScreen:  # type: ignore[no-untyped-def]
    """Select ``role`` in the Roles pane, press s, wait for the swap dialog."""
    await _select_role(pilot, screen, role)
    await pilot.press("s")
    await wait_until(pilot, lambda: isinstance(app.screen, SwapScreen), what="the swap dialog")
    dialog = app.screen
    assert isinstance(dialog, SwapScreen)
    return dialog


async def _select_role(pilot, screen: MainScreen, role: str) -> None:  # type: ignore[no-untyped-def]
    table = screen.query_one(RolesTable)
    table.focus()
    while table.selected_role != role:
        assert table.cursor_row < table.row_count - 1, f"role {role} not in the table"
        await pilot.press("down")


async def _roles_show(pilot, app: ForgeApp, role: str, model: str) -> None:  # type: ignore[no-untyped-def]
    def shown() -> bool:
        table = app.screen.query_one(RolesTable)
        return str(table.get_cell(role, "Model")) == model

    await wait_until(pilot, shown, what=f"Roles pane showing {role} -> {model}")


# ---------------------------------------------------------------------------------------- s


async def test_s_swaps_the_selected_role_and_the_next_request_follows(forge: Forge) -> None:
    assert _model_of(await forge.route("default-chat")) == "gemma-b"
    app = _app(forge)
    # The swap is handed the preflight the dialog showed, so the service does not run it a second time.
    sent: list[str | None] = []
    real_swap = forge.control.swap

    async def swap(*args: Any, **kw: Any) -> Any:
        sent.append(kw.get("preflight_id"))
        return await real_swap(*args, **kw)

    forge.control.swap = swap  # type: ignore[method-assign]  # a spy on the real control
    async with app.run_test(size=SIZE) as pilot:
        screen = await _ready(pilot, app)
        dialog = await _open_swap(pilot, app, screen, "default-chat")
        options = dialog.query_one("#swap-models")
        enabled = [
            options.get_option_at_index(i).id
            for i in range(options.option_count)
            if not options.get_option_at_index(i).disabled
        ]
        # Only models that fit the role are offered; the current one and the embed-only one are not.
        assert enabled == ["gemma-a", "gemma-missing"]
        assert options.get_option("gemma-embed").disabled
        await pilot.press("enter")  # pick gemma-a: runs its preflight
        await wait_until(pilot, lambda: dialog.preflight_result is not None, what="the preflight")
        await pilot.press("enter")  # the Swap button has the focus once the preflight allows it
        await wait_until(pilot, lambda: app.last_change is not None, what="the swap result")
        assert app.last_change is not None and app.last_change.ok, app.last_change
        shown = dialog.preflight_result
        assert shown is not None and shown.id and sent == [shown.id]
        await _roles_show(pilot, app, "default-chat", "gemma-a")
    assert _model_of(await forge.route("default-chat")) == "gemma-a"
    role = forge.state()["roles"]["default-chat"]
    assert (role["model"], role["previous"], role["actor"]) == ("gemma-a", "gemma-b", "operator")
    assert forge.audit() == [("swap", "default-chat")]


async def test_s_cancelled_changes_nothing(forge: Forge) -> None:
    app = _app(forge)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _ready(pilot, app)
        await _select_role(pilot, screen, "priority-chat")
        await pilot.press("s")
        await wait_until(pilot, lambda: isinstance(app.screen, SwapScreen), what="the swap dialog")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), what="the dialog to close")
        await app.workers.wait_for_complete()
    assert _model_of(await forge.route("priority-chat")) == "gemma-a"
    assert not forge.state_file.exists() and forge.audit() == []


async def test_invalid_swap_is_refused_and_changes_nothing(forge: Forge) -> None:
    app = _app(forge)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        result = await app.apply_swap("default-chat", "gemma-embed")
        assert not result.ok
        assert "gemma-embed" in result.message and "needs chat" in result.message
        notice = app.notices[-1]
        assert notice.severity == "error" and notice.message == result.message
        # Force only overrides a failed preflight, never the role's capabilities.
        result = await app.apply_swap("default-chat", "gemma-embed", force=True)
        assert not result.ok and "missing capability chat" in result.message
        result = await app.apply_swap("no-such-role", "gemma-a")
        assert not result.ok and "unknown role" in result.message
    assert _model_of(await forge.route("default-chat")) == "gemma-b"
    assert not forge.state_file.exists() and forge.audit() == []


# ---------------------------------------------------------------------------------------- r / R


async def test_r_rolls_the_selected_role_back(forge: Forge) -> None:
    app = _app(forge)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _ready(pilot, app)
        await _select_role(pilot, screen, "default-chat")
        await pilot.press("r")
        await wait_until(pilot, lambda: app.last_change is not None, what="the rollback")
        assert app.last_change is not None and app.last_change.ok
        await _roles_show(pilot, app, "default-chat", "gemma-a")
        assert _model_of(await forge.route("default-chat")) == "gemma-a"
        # priority-chat has no previous model: refused, with the reason, nothing changes.
        app.last_change = None
        await _select_role(pilot, screen, "priority-chat")
        await pilot.press("r")
        await wait_until(pilot, lambda: app.last_change is not None, what="the refusal")
        assert app.last_change is not None and not app.last_change.ok
        assert "no previous model" in app.notices[-1].message
    assert _model_of(await forge.route("priority-chat")) == "gemma-a"
    assert forge.state()["roles"]["default-chat"]["model"] == "gemma-a"
    assert forge.audit() == [("rollback", "default-chat")]


async def test_R_rolls_back_the_whole_trial_after_confirmation(forge: Forge) -> None:
    app = _app(forge)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        await pilot.press("R")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("n")  # declined: nothing happens
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), what="the dialog to close")
        await app.workers.wait_for_complete()
        assert app.last_change is None and forge.audit() == []
        await pilot.press("R")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        await wait_until(pilot, lambda: app.last_change is not None, what="the trial rollback")
        assert app.last_change is not None and app.last_change.ok
        await _roles_show(pilot, app, "prompt-enhance", "gemma-a")
    for role in ("default-chat", "prompt-enhance"):
        assert _model_of(await forge.route(role)) == "gemma-a"
    assert sorted(forge.audit()) == [("rollback-trial", "default-chat"), ("rollback-trial", "prompt-enhance")]
    # Nothing left in the trial: a second R is refused without a dialog.
    app2 = _app(forge)
    async with app2.run_test(size=SIZE) as pilot:
        await _ready(pilot, app2)
        await pilot.press("R")
        await wait_until(pilot, lambda: bool(app2.notices), what="the refusal")
        assert "the trial is already rolled back" in app2.notices[-1].message
        assert "rolled back" in widget_text(app2.screen.query_one("#status"))  # the header says so too
        assert isinstance(app2.screen, MainScreen)


# ---------------------------------------------------------------------------------------- d


async def test_d_toggles_deprecation_headers(forge: Forge) -> None:
    assert "Deprecation" not in (await forge.route("default-chat")).headers
    app = _app(forge)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _ready(pilot, app)
        models = screen.query_one(ModelsTable)
        models.focus()
        assert models.select_key("gemma-b")
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, DeprecateScreen), what="the date dialog")
        dialog = app.screen
        box = dialog.query_one("#sunset")
        assert box.value == "2030-01-01"  # the trial's rollback date is the default
        box.value = ""
        await pilot.press(*"2020-01-01", "enter")  # in the past: refused in the dialog
        await pilot.pause()
        assert isinstance(app.screen, DeprecateScreen)
        assert "in the past" in widget_text(dialog.query_one("#sunset-error"))
        box.value = ""
        await pilot.press(*"2031-05-01", "enter")
        await wait_until(pilot, lambda: app.last_change is not None, what="the deprecation")
        assert app.last_change is not None and app.last_change.ok
        resp = await forge.route("default-chat")
        assert "Deprecation" in resp.headers
        assert "2031" in resp.headers["Sunset"]
        await wait_until(
            pilot,
            lambda: "deprecated" in str(models.get_cell("gemma-b", "State")),
            what="Models pane showing the deprecation",
        )
        # d again on a deprecated model: asks, then removes it.
        app.last_change = None
        models.focus()
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        await wait_until(pilot, lambda: app.last_change is not None, what="the undeprecation")
    resp = await forge.route("default-chat")
    assert "Deprecation" not in resp.headers and "Sunset" not in resp.headers
    assert forge.audit() == [("deprecate", "gemma-b"), ("undeprecate", "gemma-b")]
    assert forge.state()["models"]["gemma-b"]["deprecated"] is False


# ---------------------------------------------------------------------------------------- t / T


async def _shows_verdict(pilot, app: ForgeApp, result: object) -> None:  # type: ignore[no-untyped-def]
    """The smoke dialog shows the smoke module's own verdict for the role: PASS, or FAIL with its reason.
    (Whether a reply passes is the smoke checks' call: the session's llama.cpp server runs the GGUF's
    ChatML template, whose <|im_end|> leak those checks flag; the console must show that, not hide it.)"""
    if result.ok:  # type: ignore[attr-defined]
        return
    box = app.screen.query_one("#smoke-reasons")
    await wait_until(
        pilot,
        lambda: result.reason[:30] in " ".join(widget_text(box).split()),  # type: ignore[attr-defined]
        what=f"the smoke's reason for {result.role} in the dialog",  # type: ignore[attr-defined]
    )


async def test_t_and_T_smoke_through_the_real_port(forge: Forge) -> None:
    app = _app(forge)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _ready(pilot, app)
        await _select_role(pilot, screen, "priority-chat")
        await pilot.press("t")
        await wait_until(pilot, lambda: app.last_smoke is not None, timeout=120, what="the smoke of one role")
        assert isinstance(app.screen, SmokeScreen)
        [one] = app.last_smoke or []
        assert one.role == "priority-chat" and one.status == 200 and "model=gemma-a" in one.route
        await _shows_verdict(pilot, app, one)
        await pilot.press("escape")
        app.last_smoke = None
        await pilot.press("T")
        await wait_until(pilot, lambda: app.last_smoke is not None, timeout=180, what="the smoke of every role")
        results = {r.role: r for r in app.last_smoke or []}
        assert set(results) == {"default-chat", "priority-chat", "prompt-enhance"}
        assert all(r.status == 200 for r in results.values()), results  # every role reached its model
        for r in results.values():
            await _shows_verdict(pilot, app, r)
        assert "model=gemma-b" in results["prompt-enhance"].route
        table = app.screen.query_one("#smoke-table")
        assert table.row_count == 3
        # The smoke requests went through the gateway: they are in its telemetry.
        await wait_until(
            pilot,
            lambda: app.snapshot is not None and app.snapshot.telemetry.total >= 4,
            what="the smoke requests in telemetry",
        )


@pytest.mark.parametrize("mode", ["embedded", "attached"])
async def test_t_fails_with_the_reason_when_the_backend_is_down(
    mode: str,
    llama_server,
    llama_server_factory,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """A role on a real server of its own (not the shared one) that is then killed: the smoke
    fails and says why, embedded and attached alike."""
    spare = llama_server_factory()
    rt, control = await _start(console_catalog(llama_server.url, spare_url=spare.url), tmp_path, mode)
    try:
        app = ForgeApp(control, refresh_s=0.2)
        async with app.run_test(size=SIZE) as pilot:
            screen = await _ready(pilot, app)
            result = await app.apply_swap("priority-chat", "gemma-spare")
            assert result.ok, result
            await _select_role(pilot, screen, "priority-chat")
            await pilot.press("t")
            await wait_until(pilot, lambda: app.last_smoke is not None, timeout=120, what="the smoke")
            assert (app.last_smoke or [])[0].status == 200  # the spare server answered
            await pilot.press("escape")
            spare.kill()
            app.last_smoke = None
            await pilot.press("t")
            await wait_until(pilot, lambda: app.last_smoke is not None, timeout=120, what="the failing smoke")
            [failed] = app.last_smoke or []
            assert not failed.ok
            assert failed.reason, failed
            assert failed.status >= 500 or failed.status == 0
            reasons = app.screen.query_one("#smoke-reasons")
            await wait_until(pilot, lambda: "priority-chat" in widget_text(reasons), what="the reason shown")
            assert failed.reason[:30] in " ".join(widget_text(reasons).split())
            assert any(n.severity == "error" and "priority-chat" in n.message for n in app.notices)
    finally:
        await control.close()
        await rt.stop(drain_timeout=5)


# ---------------------------------------------------------------------------------------- a ? / q


async def test_a_shows_the_audit_log(forge: Forge) -> None:
    app = _app(forge)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        assert (await app.apply_swap("priority-chat", "gemma-b")).ok
        await pilot.press("a")
        await wait_until(
            pilot,
            lambda: isinstance(app.screen, AuditScreen) and app.screen.entries is not None,
            what="the audit screen",
        )
        audit = app.screen
        assert isinstance(audit, AuditScreen) and audit.entries is not None
        [entry] = audit.entries
        assert (entry.action, entry.target, entry.actor) == ("swap", "priority-chat", "operator")
        table = audit.query_one("#audit-table")
        assert table.row_count == 1
        assert "model=gemma-a" in str(table.get_row_at(0)[4])  # one short line: before → after
        await pilot.press("enter")  # the change whole, no sideways scrolling
        await wait_until(pilot, lambda: isinstance(app.screen, DetailScreen), what="the change's detail view")
        fields = {name: str(value) for name, value in app.screen.fields}
        assert "model=gemma-a" in fields["before"] and "model=gemma-b" in fields["after"]
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, AuditScreen), what="back to the audit log")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), what="back to the main screen")
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help screen")
        await pilot.press("escape")


async def test_q_asks_while_a_request_is_in_flight(forge: Forge) -> None:
    app = _app(forge)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        first_chunk = asyncio.Event()

        async def long_stream() -> None:
            async with (
                httpx.AsyncClient(base_url=forge.url, timeout=120) as client,
                client.stream(
                    "POST",
                    "/v1/chat/completions",
                    json={
                        "model": "default-chat",
                        "stream": True,
                        "max_tokens": 160,
                        "temperature": 0,
                        "ignore_eos": True,
                        "messages": [{"role": "user", "content": "Count slowly to a thousand."}],
                    },
                ) as resp,
            ):
                async for _ in resp.aiter_lines():
                    first_chunk.set()

        stream = asyncio.create_task(long_stream())
        await asyncio.wait_for(first_chunk.wait(), 60)
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the quit confirmation")
        body = widget_text(app.screen.query_one(".dialog-body"))
        assert "in flight" in body
        await pilot.press("n")
        await pilot.pause()
        assert app.is_running and app.return_code is None
        await asyncio.wait_for(stream, 120)
        await pilot.press("q")  # nothing in flight now: quits at once
        await wait_until(pilot, lambda: app.return_code is not None, what="the app to exit")


# ---------------------------------------------------------------------------------------- b / v / j


async def test_b_refused_without_build_settings_v_streams_a_verify_job(forge: Forge) -> None:
    """The local host has no ``build:`` section: b says so; v verifies its xllamacpp stack for real."""
    app = _app(forge)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _ready(pilot, app)
        await wait_until(pilot, lambda: screen.selected_host == "local", what="the local host")
        before = len(app.notices)
        await pilot.press("b")
        await wait_until(pilot, lambda: len(app.notices) > before, what="the answer to b")
        notice = app.notices[-1]
        assert notice.severity == "error" and "no build settings" in notice.message, notice
        assert isinstance(app.screen, MainScreen)
        await pilot.press("v")
        await wait_until(pilot, lambda: isinstance(app.screen, JobScreen), what="the job screen")
        job_screen = app.screen
        assert isinstance(job_screen, JobScreen)
        assert (job_screen.job.kind, job_screen.job.host) == ("verify", "local")
        await wait_until(
            pilot,
            lambda: job_screen.finished and job_screen.lines and not job_screen.workers,
            timeout=180,
            what="the verify job to finish with its log",
        )
        assert job_screen.job.state == "succeeded", job_screen.lines[-6:]
        assert job_screen.job.steps_total == 4
        assert any("verify local" in line for line in job_screen.lines)
        bar = job_screen.query_one(ProgressBar)
        assert bar.total == 4
        title = widget_text(job_screen.query_one("#job-title"))
        assert job_screen.job.state in title and "running" not in title  # the header agrees with the log
        shown = screen_text(app)
        assert "job keeps running" not in shown and "Cancel job" not in shown  # the footer knows it ended
        await pilot.press("c")  # nothing to cancel: it says so instead of offering to
        await pilot.pause()
        assert isinstance(app.screen, JobScreen) and "nothing to cancel" in app.notices[-1].message
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), what="the main screen")
        await pilot.press("j")  # the latest job of the selected host, again
        await wait_until(pilot, lambda: isinstance(app.screen, JobScreen), what="the job log again")
        assert app.screen.job.id == job_screen.job.id  # type: ignore[attr-defined]


async def test_c_cancels_a_running_job_after_confirmation(forge: Forge) -> None:
    app = _app(forge)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _ready(pilot, app)
        await wait_until(pilot, lambda: screen.selected_host == "local", what="the local host")
        await pilot.press("v")
        await wait_until(pilot, lambda: isinstance(app.screen, JobScreen), what="the job screen")
        job_screen = app.screen
        assert isinstance(job_screen, JobScreen) and not job_screen.finished
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the cancel confirmation")
        await pilot.press("y")
        await wait_until(pilot, lambda: job_screen.finished, timeout=60, what="the job to stop")
        assert job_screen.job.state == "cancelled", job_screen.job
        await wait_until(pilot, lambda: not job_screen.workers, what="the log to drain")
        assert "cancelled" in widget_text(job_screen.query_one("#job-title"))


async def test_failed_preflight_blocks_until_forced(forge: Forge) -> None:
    app = _app(forge)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _ready(pilot, app)
        dialog = await _open_swap(pilot, app, screen, "priority-chat")
        options = dialog.query_one("#swap-models")
        options.highlighted = options.get_option_index("gemma-missing")
        await pilot.press("enter")
        await wait_until(pilot, lambda: dialog.preflight_result is not None, what="the preflight")
        result = dialog.preflight_result
        assert result is not None and result.blocked
        assert any(c.name == "weights" and c.outcome == "fail" for c in result.checks)
        assert dialog.query_one("#swap").disabled and not dialog.query_one("#force").disabled
        await pilot.press("enter")  # focus is on Cancel, not on Swap: Enter does not swap
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), what="the dialog to close")
        await app.workers.wait_for_complete()
        assert app.last_change is None and forge.audit() == []
        await pilot.press("s")
        await wait_until(pilot, lambda: isinstance(app.screen, SwapScreen), what="the swap dialog")
        dialog = app.screen
        options = dialog.query_one("#swap-models")
        options.highlighted = options.get_option_index("gemma-missing")
        await pilot.press("enter")
        await wait_until(pilot, lambda: dialog.preflight_result is not None, what="the preflight")
        await pilot.press("f")
        await wait_until(pilot, lambda: app.last_change is not None, what="the forced swap")
        assert app.last_change is not None and app.last_change.ok, app.last_change
    [entry] = forge.runtime.state.audit_log()
    assert (entry.action, entry.target, entry.after["model"]) == ("swap", "priority-chat", "gemma-missing")
    assert "forced" in entry.note and "weights" in entry.note


# ---------------------------------------------------------------------------------------- panes


async def test_panes_follow_live_traffic_and_filter(forge: Forge) -> None:
    app = _app(forge)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _ready(pilot, app)
        await forge.route("default-chat")
        await forge.route("priority-chat")
        async with httpx.AsyncClient(base_url=forge.url) as client:
            missing = await client.post(
                "/v1/chat/completions", json={"model": "no-such-role", "messages": [{"role": "user", "content": "hi"}]}
            )
        assert missing.status_code == 404
        table = screen.query_one("#requests-table")
        await wait_until(pilot, lambda: table.row_count >= 3, what="three requests in the tail")
        assert screen.pane == "hosts"
        await pilot.press("slash")
        assert screen.pane == "requests"
        await pilot.press(*"priority", "enter")
        await wait_until(pilot, lambda: table.row_count == 1, what="the filter")
        assert screen.query_one(RequestsPane).filter_text == "priority"
        await pilot.press("escape")  # clears the filter
        await wait_until(pilot, lambda: table.row_count >= 3, what="the filter to clear")
        await pilot.press("left_square_bracket")
        assert screen.pane == "errors"
        await pilot.pause()
        errors = widget_text(screen.query_one("#errors-body"))
        assert "not_found" in errors and "no-such-role" in errors


async def test_polls_never_overlap_and_skip_drawing_under_a_dialog(forge: Forge) -> None:
    """A slow gateway must not pile up polls; a dialog pauses drawing but not polling."""
    inner = forge.control
    concurrent = 0
    peak = 0

    class Slow:
        def __getattr__(self, name: str) -> object:
            return getattr(inner, name)

        async def snapshot(self):  # type: ignore[no-untyped-def]
            nonlocal concurrent, peak
            concurrent += 1
            peak = max(peak, concurrent)
            try:
                await asyncio.sleep(0.3)  # slower than the refresh interval
                return await inner.snapshot()
            finally:
                concurrent -= 1

    delivered: list[str] = []
    app = ForgeApp(Slow(), refresh_s=0.1)  # type: ignore[arg-type]

    def hook(message: object) -> None:
        if type(message).__name__ == "SnapshotReady":
            delivered.append(type(app.screen).__name__)

    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        await _ready(pilot, app)
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen), what="the help screen")
        polls = app.polls
        await wait_until(pilot, lambda: app.polls >= polls + 3, what="polls under the dialog")
        assert "HelpScreen" not in delivered
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), what="the main screen")
    assert peak == 1


async def test_command_palette_runs_actions(forge: Forge) -> None:
    app = _app(forge)
    async with app.run_test(size=SIZE) as pilot:
        await _ready(pilot, app)
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(app.screen, CommandPalette), what="the command palette")
        await pilot.press(*"Roll back role default-chat")
        palette = app.screen
        await wait_until(pilot, lambda: palette.query_one(CommandList).option_count > 0, what="matching commands")
        first = palette.query_one(CommandList).get_option_at_index(0)
        assert "Roll back role default-chat" in str(first.prompt)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.last_change is not None, what="the rollback from the palette")
        assert app.last_change is not None and app.last_change.ok
    assert _model_of(await forge.route("default-chat")) == "gemma-a"


async def test_keys_can_be_remapped_by_binding_id(forge: Forge) -> None:
    app = ForgeApp(forge.control, refresh_s=0.2, keymap={"forge.swap": "ctrl+s", "forge.smoke": "ctrl+t"})
    async with app.run_test(size=SIZE) as pilot:
        screen = await _ready(pilot, app)
        await _select_role(pilot, screen, "default-chat")
        await pilot.press("s")  # no longer bound
        await pilot.pause(0.3)
        assert isinstance(app.screen, MainScreen)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, SwapScreen), what="the swap dialog on ctrl+s")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), what="the main screen")
        footer_keys = {(k.key, k.description) for k in screen.query("FooterKey")}  # type: ignore[attr-defined]
        assert ("ctrl+s", "Swap") in footer_keys and ("s", "Swap") not in footer_keys


# ---------------------------------------------------------------------------------------- sshd host
# The host "box" is a real OpenSSH sshd on loopback (tests/support/sshd.py); its llama.cpp tree is
# the small CMake stand-in of tests/support/fake_llama_build.py (the real build is too long for CI;
# the job runs the real commands it derives for a cpu backend); its backend is the real llama.cpp
# server, so the jobs' regression and smoke steps go through the gateway for real.


@pytest.fixture
def box_sshd(tmp_path: Path) -> Iterator[Sshd]:
    reason = sshd_available()
    if reason:
        pytest.skip(reason)
    server = start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def box_models(tmp_path_factory: pytest.TempPathFactory, unknown_arch_gguf: Path) -> Path:
    return lab_models_dir(tmp_path_factory.mktemp("box-models"), unknown_arch_gguf)


@pytest.fixture
def box_repo(tmp_path: Path) -> FakeLlamaRepo:
    if shutil.which("cmake") is None or shutil.which("cc") is None:
        pytest.skip("cmake and a C compiler are needed for the stand-in llama.cpp tree")
    return make_repo(tmp_path / "llama")


async def _box_forge(
    sshd: Sshd,
    repo: FakeLlamaRepo | None,
    models: Path,
    llama_url: str,
    tmp_path: Path,
    *,
    build: str | None = None,
    probe_interval_s: float | None = None,
) -> Forge:
    data = lab_catalog_data(
        sshd,
        repo,
        models,
        llama_url,
        tmp_path / "restarts.log",
        build=build,
        gateway={"health_interval_s": 1, "history": False},
    )
    rt = console_runtime(
        Catalog.model_validate(data),
        tmp_path,
        name="box.yaml",
        with_hosts=True,
        probe_interval_s=probe_interval_s or 15.0,
    )
    await rt.start()
    return Forge(rt, LocalControl(rt))


async def _close(forge: Forge) -> None:
    await forge.control.close()
    await forge.runtime.stop(drain_timeout=5)


async def _open_job(pilot, app: ForgeApp, key: str) -> JobScreen:  # type: ignore[no-untyped-def]
    """Press ``key`` on the selected host (b and v start at once, no question); the job screen opens."""
    await pilot.press(key)
    await wait_until(pilot, lambda: isinstance(app.screen, JobScreen), what="the job screen")
    screen = app.screen
    assert isinstance(screen, JobScreen)
    return screen


def _binary_version(repo: FakeLlamaRepo) -> str:
    out = subprocess.run([str(repo.binary()), "--version"], capture_output=True, text=True, timeout=30)
    return out.stderr.splitlines()[0]


@pytest.mark.sshd
async def test_b_rebuilds_an_sshd_host_with_a_live_log_and_history(
    box_sshd: Sshd,
    box_repo: FakeLlamaRepo,
    box_models: Path,
    llama_server,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    forge = await _box_forge(box_sshd, box_repo, box_models, llama_server.url, tmp_path)
    before = _binary_version(box_repo)
    try:
        app = _app(forge)
        async with app.run_test(size=SIZE) as pilot:
            screen = await _ready(pilot, app)
            await wait_until(pilot, lambda: screen.selected_host == "box", what="the box host")
            job_screen = await _open_job(pilot, app, "b")
            assert (job_screen.job.kind, job_screen.job.host) == ("rebuild", "box")
            # Streamed: log lines arrive while the job still runs, and more follow.
            seen: list[tuple[bool, int]] = []

            def done() -> bool:
                seen.append((job_screen.finished, len(job_screen.lines)))
                return job_screen.finished and bool(job_screen.lines) and not job_screen.workers

            await wait_until(pilot, done, timeout=200, what="the rebuild to finish with its log")
            running = [n for finished, n in seen if not finished and n > 0]
            assert running and seen[-1][1] > running[0], "the log did not stream while the job ran"
            job = job_screen.job
            assert job.state == "succeeded", job_screen.lines[-10:]
            assert job.steps_done == job.steps_total == 11
            assert job_screen.query_one(ProgressBar).progress == job.steps_total
            log = "\n".join(job_screen.lines)
            assert "   $ cmake --build build --config Release -j" in log and "Built target llama-server" in log
            assert "succeeded" in widget_text(job_screen.query_one("#job-title"))
            await wait_until(
                pilot,
                lambda: (
                    app.snapshot is not None
                    and any(j.id == job.id and j.state == "succeeded" for j in app.snapshot.jobs)
                ),
                what="the finished job in the snapshot",
            )
        assert _binary_version(box_repo) != before
        assert _binary_version(box_repo).endswith(f"commit {box_repo.commits['v2'][:9]})")
        history = forge.runtime.state_dir / "jobs" / "history.jsonl"
        rec = json.loads(history.read_text().splitlines()[-1])
        assert (rec["id"], rec["kind"], rec["host"], rec["state"]) == (job.id, "rebuild", "box", "succeeded")
    finally:
        await _close(forge)


def _sleeping(tag: str) -> bool:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if f"sleep {tag}" in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    return True
            except OSError:
                continue
    return False


@pytest.mark.sshd
async def test_q_asks_while_a_job_runs(
    box_sshd: Sshd,
    box_repo: FakeLlamaRepo,
    box_models: Path,
    llama_server,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """A rebuild whose build step sleeps (bounded; the cancel at the end kills it): q must ask."""
    tag = f"{50 + os.getpid() % 1000}.75"  # a sleep nobody else runs
    forge = await _box_forge(
        box_sshd,
        box_repo,
        box_models,
        llama_server.url,
        tmp_path,
        build=f"sleep {tag} && cmake --build build --target llama-server",
    )
    before = _binary_version(box_repo)
    try:
        app = _app(forge)
        async with app.run_test(size=SIZE) as pilot:
            screen = await _ready(pilot, app)
            await wait_until(pilot, lambda: screen.selected_host == "box", what="the box host")
            job_screen = await _open_job(pilot, app, "b")

            def building() -> bool:
                job = next((j for j in (app.snapshot.jobs if app.snapshot else []) if j.id == job_screen.job.id), None)
                assert job is None or job.state == "running", (job, job_screen.lines[-10:])
                return job is not None and job.step == "build"

            await wait_until(pilot, building, timeout=60, what="the rebuild to reach its (sleeping) build step")
            await pilot.press("q")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the quit confirmation")
            body = widget_text(app.screen.query_one(".dialog-body"))
            assert "jobs running: rebuild box" in " ".join(body.split())
            assert app.is_running and app.return_code is None
            await pilot.press("n")
            await wait_until(pilot, lambda: app.screen is job_screen, what="back to the job screen")
            await pilot.pause(0.3)
            assert app.is_running and app.return_code is None and not job_screen.finished
            # The job went on; now cancel it (which restores the old build).
            await pilot.press("c")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the cancel confirmation")
            await pilot.press("y")
            await wait_until(pilot, lambda: job_screen.finished, timeout=60, what="the job to stop")
            assert job_screen.job.state == "cancelled", job_screen.job
        deadline = time.monotonic() + 10
        while _sleeping(tag) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert not _sleeping(tag), "the remote build kept running after the cancel"
        assert _binary_version(box_repo) == before
    finally:
        await _close(forge)


def _meminfo_total_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024 / 2**30
    raise AssertionError("no MemTotal in /proc/meminfo")


@pytest.mark.sshd
async def test_hosts_pane_shows_sshd_probe_data_then_unreachable(
    box_sshd: Sshd,
    box_models: Path,
    llama_server,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """Real probes over the real sshd fill the Hosts pane; stopping sshd turns the host unreachable."""
    forge = await _box_forge(box_sshd, None, box_models, llama_server.url, tmp_path, probe_interval_s=0.5)
    total = f"/{round(_meminfo_total_gb(), 2):.1f}G"
    try:
        app = _app(forge)
        async with app.run_test(size=SIZE) as pilot:
            screen = await _ready(pilot, app)
            pane = screen.query_one(HostsList)

            def box_line() -> str:
                text = widget_text(pane)
                return next((line for line in text.splitlines() if line.strip("│ ").startswith("box ")), "")

            await wait_until(
                pilot,
                lambda: "● up" in box_line() and "/proc/meminfo" in box_line(),
                timeout=60,
                what="the box host up with its memory reading",
            )
            line = box_line()
            assert total in line, (total, line)
            assert "█" in line or "░" in line  # the bar
            assert "unreachable" not in widget_text(pane)

            box_sshd.stop()
            await wait_until(
                pilot, lambda: "✖ unreachable" in box_line(), timeout=60, what="the box host unreachable in the pane"
            )
            text = " ".join(widget_text(pane).split())
            assert "cannot reach" in text or "no SSH answer" in text or "SSH to" in text, text
    finally:
        await _close(forge)
