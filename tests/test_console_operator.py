"""Issue 11: the console under an operator's hands, against the real embedded gateway and llama.cpp.

Bursts of pane keys leave the app idle (no loop between the tab strip and the screen); ``/`` shows
the Requests pane and its filter takes every typed key; keys act on the focused, shown pane and
their dialogs say where the target was picked; R after s then r covers the swapped role and the
header then says the trial is rolled back; the tail keeps its newest row in view and counts what
came while the operator looked away; with every backend down the console and the serve log say so.
"""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from textual import events
from textual.widgets import Input, Label, Tabs

from forge_tui.config.models import Catalog
from forge_tui.console import ForgeApp
from forge_tui.console.screens.audit import AuditScreen
from forge_tui.console.screens.confirm import ConfirmScreen
from forge_tui.console.screens.deprecate import DeprecateScreen
from forge_tui.console.screens.help import HelpScreen
from forge_tui.console.screens.main import MainScreen
from forge_tui.console.screens.smoke import SmokeScreen
from forge_tui.console.widgets import HostsList, ModelsTable, RequestsPane, RolesTable
from forge_tui.console.widgets.requests import RequestsTable
from forge_tui.control.local import LocalControl
from forge_tui.runtime import Runtime

from .console_support import (
    ADMIN_TOKEN,
    console_catalog,
    console_catalog_data,
    console_runtime,
    wait_until,
    widget_text,
)

pytestmark = [pytest.mark.llama, pytest.mark.timeout(240)]


async def _runtime(catalog: Catalog, tmp_path: Path) -> Runtime:
    rt = console_runtime(catalog, tmp_path)
    await rt.start()
    return rt


@pytest.fixture
async def runtime(llama_server, tmp_path: Path) -> AsyncIterator[Runtime]:  # type: ignore[no-untyped-def]
    rt = await _runtime(console_catalog(llama_server.url), tmp_path)
    try:
        yield rt
    finally:
        await rt.stop(drain_timeout=5)


def _app(rt: Runtime) -> ForgeApp:
    return ForgeApp(LocalControl(rt), refresh_s=0.2)


async def _ready(pilot, app: ForgeApp) -> MainScreen:  # type: ignore[no-untyped-def]
    await wait_until(
        pilot,
        lambda: app.snapshot is not None and app.screen.query_one(RolesTable).row_count > 0,
        what="the roles table",
    )
    screen = app.screen
    assert isinstance(screen, MainScreen)
    return screen


async def _select_role(pilot, screen: MainScreen, role: str) -> None:  # type: ignore[no-untyped-def]
    table = screen.query_one(RolesTable)
    table.focus()
    for _ in range(table.row_count):  # bounded: one pass over the rows
        if table.selected_role == role:
            return
        await pilot.press("down")
    assert table.selected_role == role, f"role {role} not in the table"


async def _not_found(url: str, n: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for i in range(n):
            resp = await client.post(
                "/v1/chat/completions", json={"model": f"nope-{i}", "messages": [{"role": "user", "content": "hi"}]}
            )
            assert resp.status_code == 404


# ---------------------------------------------------------------------------------- item 1


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_bursts_of_pane_keys_settle_and_the_app_goes_idle(runtime: Runtime, size: tuple[int, int]) -> None:
    app = _app(runtime)
    async with app.run_test(size=size) as pilot:
        screen = await _ready(pilot, app)
        shows = 0
        real_show = screen._show

        def counting(pane: str) -> None:
            nonlocal shows
            shows += 1
            real_show(pane)

        screen._show = counting  # type: ignore[method-assign]
        # Keys arriving together (a paste, a laggy link) used to start an endless loop: they are
        # queued in one go here, with no pause between them (Pilot.press waits after each key).
        keys = ["right_square_bracket"] * 7 + ["left_square_bracket"] * 3 + ["right_square_bracket"] * 2
        for key in keys:
            app.post_message(events.Key(key, "]" if key.startswith("right") else "["))
        tabs = screen.query_one(Tabs)
        if size[0] < 120:
            panes = ("hosts", "models", "latency", "errors", "requests")
            expected = panes[(7 - 3 + 2) % len(panes)]  # from Hosts, net six steps
            await wait_until(pilot, lambda: screen.pane == expected, what=f"the {expected} pane")
            shown = [p for p in panes if screen.query_one(f"#pane-{p}").has_class("-shown")]
            assert shown == [expected] and tabs.active == f"tab-{expected}"  # strip and pane agree
        else:
            # Wide: every pane is shown; the keys moved the focus round Roles and the five panes.
            order = ("roles", "hosts", "models", "latency", "errors", "requests")
            expected = order[(7 - 3 + 2) % len(order)]
            await wait_until(pilot, lambda: screen._focused_pane() == expected, what=f"focus on {expected}")
        for _ in range(5):
            await pilot.pause(0.1)
        settled = shows
        for _ in range(10):  # bounded quiet window: nothing may keep switching panes by itself
            await pilot.pause(0.1)
        assert shows == settled, f"the pane kept switching after the burst ({settled} -> {shows})"
        assert runtime.url is not None
        async with httpx.AsyncClient(base_url=runtime.url, timeout=10) as client:
            for _ in range(20):
                assert (await client.get("/v1/models")).status_code == 200
        assert app.is_running


# ---------------------------------------------------------------------------------- item 2


async def test_slash_shows_requests_and_typed_text_never_reaches_a_key(runtime: Runtime) -> None:
    app = _app(runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _ready(pilot, app)
        assert screen.pane == "hosts"  # Requests is hidden at 80x24
        audit_before = len(runtime.state.audit_log())
        typed = "not_found tdRTsrb?aq[]/"
        await pilot.press("slash", *typed)
        await pilot.pause()
        assert screen.pane == "requests"
        box = screen.query_one("#requests-filter", Input)
        assert app.focused is box and box.value == typed
        assert app.screen is screen  # no smoke, deprecation, help, audit or quit dialog opened
        assert not [n for n in app.notices if n.title in ("smoke", "Quit?")]
        await pilot.press("enter")  # keeps the filter, focus back to the table
        await pilot.pause()
        assert screen.query_one(RequestsPane).filter_text == typed.strip()
        assert isinstance(app.focused, RequestsTable)
        await pilot.press("escape")
        await pilot.pause()
        assert screen.query_one(RequestsPane).filter_text == ""
        assert not [s for s in app.screen_stack if isinstance(s, (SmokeScreen, DeprecateScreen, HelpScreen))]
        assert not isinstance(app.screen, AuditScreen)
    assert len(runtime.state.audit_log()) == audit_before  # no change was made by typing


# ---------------------------------------------------------------------------------- item 3


async def test_keys_act_on_the_focused_shown_pane_and_say_where(runtime: Runtime) -> None:
    assert runtime.url is not None
    app = _app(runtime)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _ready(pilot, app)
        # Leave the (now hidden) Models cursor on another model than default-chat's.
        screen.show_pane("models")
        await pilot.pause()
        models = screen.query_one(ModelsTable)
        assert models.select_key("gemma-embed")
        screen.show_pane("hosts")
        await _select_role(pilot, screen, "default-chat")  # its model is gemma-b
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, DeprecateScreen), what="the deprecation dialog")
        title = str(app.screen.query_one(".dialog-title", Label).render())
        assert "gemma-b" in title and "selected in Roles" in title and "gemma-embed" not in title
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen, what="the dialog to close")

        screen.query_one(HostsList).focus()  # Hosts is shown; it holds hosts, not roles
        await pilot.press("s")
        await pilot.pause()
        assert app.screen is screen
        assert "s needs a role and Hosts has none selected" in app.notices[-1].message

        async with httpx.AsyncClient(base_url=runtime.url, timeout=60) as client:
            resp = await client.post(
                "/v1/chat/completions",
                json={"model": "priority-chat", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
            )
            assert resp.status_code == 200
        screen.show_pane("requests")
        table = screen.query_one(RequestsTable)
        await wait_until(pilot, lambda: table.row_count >= 1, what="the request in the tail")
        table.focus()
        await pilot.pause()
        await pilot.press("t")  # smoke the role of the selected request
        await wait_until(pilot, lambda: isinstance(app.screen, SmokeScreen), what="the smoke dialog")
        title = str(app.screen.query_one(".dialog-title", Label).render())
        assert "priority-chat" in title and "selected in Requests" in title
        await wait_until(pilot, lambda: app.last_smoke is not None, timeout=120, what="the smoke result")
        await pilot.press("escape")


# ---------------------------------------------------------------------------------- item 4


async def test_R_after_s_then_r_covers_the_swapped_role_and_the_header_says_rolled_back(runtime: Runtime) -> None:
    app = _app(runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await _ready(pilot, app)
        assert (await app.apply_swap("default-chat", "gemma-a")).ok  # s (the dialog is covered elsewhere)
        await _select_role(pilot, screen, "default-chat")
        await wait_until(
            pilot,
            lambda: str(screen.query_one(RolesTable).get_cell("default-chat", "Model")) == "gemma-a",
            what="the swap in Roles",
        )
        app.last_change = None
        await pilot.press("r")
        await wait_until(pilot, lambda: app.last_change is not None, what="the rollback")
        assert app.last_change is not None and app.last_change.ok, app.last_change
        await wait_until(
            pilot,
            lambda: str(screen.query_one(RolesTable).get_cell("default-chat", "Model")) == "gemma-b",
            what="the rollback in Roles",
        )
        await pilot.press("R")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the trial rollback dialog")
        body = str(app.screen.query_one(".dialog-body").render())
        assert "default-chat" in body and "prompt-enhance" in body  # the swapped role is still in the trial
        app.last_change = None
        await pilot.press("y")
        await wait_until(pilot, lambda: app.last_change is not None, what="the trial rollback")
        assert app.last_change is not None and app.last_change.ok, app.last_change
        status = screen.query_one("#status")
        await wait_until(pilot, lambda: "rolled back" in widget_text(status), what="the header to say rolled back")
        assert "until" not in widget_text(status).split("rolled back")[0].split("trial")[-1]


# ---------------------------------------------------------------------------------- item 5


async def test_the_tail_keeps_the_newest_row_in_view_and_counts_what_came_while_away(runtime: Runtime) -> None:
    assert runtime.url is not None
    app = _app(runtime)
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await _ready(pilot, app)
        table = screen.query_one(RequestsTable)
        await _not_found(runtime.url, 6)
        await wait_until(pilot, lambda: table.row_count >= 6, what="six rows")

        def top_is_newest() -> bool:
            seqs = [r.seq for r in table.records.values()]
            return bool(seqs) and table.records[table.ordered_rows[0].key.value].seq == max(seqs)

        assert top_is_newest() and table.cursor_row == 0 and table.scroll_y == 0
        await _not_found(runtime.url, 4)  # a burst while the operator follows: the newest stays on top
        await wait_until(pilot, lambda: table.row_count >= 10, what="ten rows")
        assert top_is_newest() and table.cursor_row == 0 and table.unseen == 0
        table.focus()
        await pilot.press("down", "down")  # the operator looks at an older row
        await pilot.pause()
        looking_at = table.selected_key
        await _not_found(runtime.url, 3)
        await wait_until(pilot, lambda: table.unseen == 3, what="three new rows counted")
        assert table.selected_key == looking_at  # the row under the cursor did not move away
        pane = screen.query_one(RequestsPane)
        assert "3 new" in str(pane.border_subtitle)
        await pilot.press("home")
        await pilot.pause()
        assert table.unseen == 0 and table.cursor_row == 0 and top_is_newest()
        assert "new" not in str(pane.border_subtitle)


# ---------------------------------------------------------------------------------- item 7


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens there


async def test_every_backend_down_shows_in_models_and_the_status_bar(tmp_path: Path) -> None:
    """No llama.cpp here on purpose: the one backend is a closed port."""
    rt = await _runtime(console_catalog(f"http://127.0.0.1:{_dead_port()}"), tmp_path)
    try:
        app = _app(rt)
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_until(pilot, lambda: app.snapshot is not None, what="the first snapshot")
            screen = app.screen
            assert isinstance(screen, MainScreen)
            status = screen.query_one("#status")
            await wait_until(
                pilot, lambda: "1/1 backends down" in widget_text(status), timeout=60, what="the status bar warning"
            )
            models = screen.query_one(ModelsTable)
            await wait_until(
                pilot, lambda: "down" in str(models.get_cell("gemma-a", "State")), what="gemma-a shown as down"
            )
            assert "hot" in str(models.get_cell("gemma-a", "State"))  # the catalog state is kept beside it
    finally:
        await rt.stop(drain_timeout=5)


def test_serve_logs_a_warning_when_a_backend_goes_down(tmp_path: Path) -> None:
    """`forge-tui serve` on a catalog whose backend is a closed port: the log says so, once."""
    config = tmp_path / "forge.yaml"
    config.write_text(yaml.safe_dump(console_catalog_data(f"http://127.0.0.1:{_dead_port()}")))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forge_tui",
            "serve",
            "--config",
            str(config),
            "--port",
            "0",
            "--state-dir",
            str(tmp_path / "state"),
            "--admin-token",
            ADMIN_TOKEN,
            "--no-hosts",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    # A reader thread: select() on a buffered text pipe misses lines already in Python's buffer.
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("warning: backend local-chat" in line for line in seen):
            try:
                seen.append(lines.get(timeout=1.0))
            except queue.Empty:
                continue
    finally:
        proc.terminate()
        proc.wait(15)
    warning = [line for line in seen if "warning: backend local-chat" in line]
    assert warning, "".join(seen)
    assert "down" in warning[0]
