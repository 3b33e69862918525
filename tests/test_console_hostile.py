"""Issue 9: no caller can take the console (and the gateway it embeds) down.

Hostile values go through real HTTP requests to the embedded gateway, on the real llama.cpp
server: duplicate X-Request-Ids (the console once crashed on a DuplicateKey in the tail), Rich
markup, control characters and a 10 kB model name. The console must keep running, show them as
text, and the gateway must keep answering. A pane that fails to draw says so, the log has the
traceback, and the gateway keeps serving; a console that dies keeps its traceback for the log.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from forge_tui.console import ForgeApp
from forge_tui.console.crashlog import ConsoleLog
from forge_tui.console.screens.main import MainScreen
from forge_tui.console.widgets import RequestsPane, RolesTable
from forge_tui.console.widgets import errors as errors_module
from forge_tui.console.widgets.requests import RequestsTable
from forge_tui.control.local import LocalControl
from forge_tui.runtime import Runtime

from .console_support import console_catalog, running_runtime, screen_text, wait_until, widget_text

pytestmark = [pytest.mark.llama, pytest.mark.timeout(240)]

MARKUP = "[bold red]pwned[/bold red][link=file:///etc/passwd]x[/link]"
CONTROL = "evil\x1b[2J\x1b]0;title\x07\x00name"
HUGE = "m" * 10_240


@pytest.fixture
async def runtime(llama_server, tmp_path: Path) -> AsyncIterator[Runtime]:  # type: ignore[no-untyped-def]
    async with running_runtime(console_catalog(llama_server.url), tmp_path) as rt:
        yield rt


async def _hostile_traffic(url: str) -> list[int]:
    statuses = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for _ in range(2):  # the same caller-chosen id twice: two rows, no crash
            resp = await client.post(
                "/v1/chat/completions",
                headers={"X-Request-Id": "dup-id"},
                json={"model": "default-chat", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]},
            )
            statuses.append(resp.status_code)
        for model in (MARKUP, CONTROL, HUGE):
            resp = await client.post(
                "/v1/chat/completions",
                headers={"X-Request-Id": MARKUP},
                json={"model": model, "messages": [{"role": "user", "content": MARKUP + CONTROL}]},
            )
            statuses.append(resp.status_code)
    return statuses


async def _gateway_answers(url: str) -> bool:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return (await client.get("/v1/models")).status_code == 200


async def _console_shows_them(runtime: Runtime, size: tuple[int, int], send: bool) -> None:
    assert runtime.url is not None
    app = ForgeApp(LocalControl(runtime), refresh_s=0.2)
    async with app.run_test(size=size) as pilot:
        await wait_until(pilot, lambda: app.snapshot is not None, what="the first snapshot")
        if send:
            statuses = await _hostile_traffic(runtime.url)
            assert statuses[:2] == [200, 200] and all(s == 404 for s in statuses[2:]), statuses
        screen = app.screen
        assert isinstance(screen, MainScreen)
        table = screen.query_one(RequestsTable)
        await wait_until(pilot, lambda: table.row_count >= 5, what="five rows in the tail")
        # The two requests with one X-Request-Id are two rows, keyed by the gateway's own seq.
        dup = [r for r in table.records.values() if r.request_id == "dup-id"]
        assert len(dup) == 2 and dup[0].seq != dup[1].seq
        screen.show_pane("requests")
        await pilot.pause()
        shown = screen_text(app)
        assert "\x1b" not in shown and "\x07" not in shown and "\x00" not in shown  # never reaches the terminal
        assert "pwned" in shown  # markup is drawn as the text it is, not swallowed
        if size[0] >= 120:
            assert "[bold red]pwned" in shown
        assert HUGE not in shown  # a 10 kB name is cut, the row stays one row
        screen.show_pane("errors")
        await pilot.pause()
        errors = widget_text(screen.query_one("#errors-body"))
        assert "\\x1b" in errors  # control characters shown escaped
        assert HUGE not in errors  # a 10 kB name in an error message is cut too
        assert app.is_running and not app.pane_failures
    assert app.return_code in (None, 0) and app.crash is None


async def test_hostile_requests_never_take_the_console_down(runtime: Runtime) -> None:
    await _console_shows_them(runtime, (160, 48), send=True)
    await _console_shows_them(runtime, (80, 24), send=False)
    assert runtime.url is not None and await _gateway_answers(runtime.url)


async def test_a_pane_that_fails_is_shown_logged_and_the_gateway_keeps_serving(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fault is injected (the Errors pane's view function raises): no real input makes a pane fail today."""
    assert runtime.url is not None

    def broken(snapshot: object) -> tuple[object, ...]:
        raise RuntimeError("injected pane fault")

    monkeypatch.setattr(errors_module, "_view", broken)
    log_path = tmp_path / "console.log"
    app = ForgeApp(LocalControl(runtime), refresh_s=0.2)
    with ConsoleLog(log_path):
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_until(pilot, lambda: bool(app.pane_failures), what="the pane fault to be reported")
            await wait_until(pilot, lambda: app.snapshot is not None and app.polls >= 3, what="polls going on")
            assert app.is_running
            assert any(n.title == "Console fault" for n in app.notices)
            pane = app.screen.query_one("#pane-errors")
            assert "could not draw" in str(pane.border_subtitle)
            assert app.screen.query_one(RolesTable).row_count > 0  # the other panes still draw
            assert await _gateway_answers(runtime.url)
    text = log_path.read_text()
    assert "could not draw" in text and "injected pane fault" in text and "Traceback" in text


async def test_a_console_that_dies_keeps_its_traceback_for_the_log(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crash is injected (the Requests pane's open_filter raises under the / key) to see what the app keeps."""

    def explode(self: RequestsPane) -> None:
        raise ValueError("injected console crash")

    monkeypatch.setattr(RequestsPane, "open_filter", explode)
    log_path = tmp_path / "console.log"
    app = ForgeApp(LocalControl(runtime), refresh_s=0.2)
    with ConsoleLog(log_path), pytest.raises(ValueError, match="injected console crash"):
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_until(pilot, lambda: app.snapshot is not None, what="the first snapshot")
            await pilot.press("slash")
            for _ in range(100):  # bounded: the app ends on the exception
                if not app.is_running:
                    break
                await pilot.pause(0.05)
    assert app.return_code == 1
    assert app.crash is not None and "injected console crash" in app.crash
    assert "injected console crash" in log_path.read_text()
    assert logging.getLogger("forge_tui").propagate  # the file handler is gone again
    assert runtime.url is not None and await _gateway_answers(runtime.url)
