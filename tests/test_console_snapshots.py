"""SVG snapshot tests of the console's main views (pytest-textual-snapshot).

They replay a recorded homelab snapshot (``RecordedControl``, see console_support) with fixed
times and no random ports, and render local times in UTC, so the pictures are the same on
every run. Update them with ``pytest tests/test_console_snapshots.py --snapshot-update`` after
a deliberate change, and look at the report before accepting.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from textual.pilot import Pilot

from forge_tui.console import ForgeApp
from forge_tui.console.screens.smoke import SmokeScreen
from forge_tui.console.screens.swap import SwapScreen
from forge_tui.smoke import SmokeResult

from .console_support import RecordedControl, wait_until


@pytest.fixture(autouse=True)
def utc_clock() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


def _app() -> ForgeApp:
    # One poll is enough: the recording never changes; a long interval keeps the test quiet.
    return ForgeApp(RecordedControl(), refresh_s=3600)


async def _loaded(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, ForgeApp)
    await wait_until(pilot, lambda: app.snapshot is not None, what="the first snapshot")
    await pilot.pause()


def test_main_screen_wide(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """160x48: every pane at once."""
    assert snap_compare(_app(), terminal_size=(160, 48), run_before=_loaded)


def test_main_screen_narrow(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """80x24: Roles on top, one pane below (Hosts first)."""
    assert snap_compare(_app(), terminal_size=(80, 24), run_before=_loaded)


def test_narrow_errors_pane(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """80x24 after `]` three times: the Errors pane with the upstream's own words."""

    async def run(pilot: Pilot[None]) -> None:
        await _loaded(pilot)
        for _ in range(3):
            await pilot.press("right_square_bracket")
        await pilot.pause()

    assert snap_compare(_app(), terminal_size=(80, 24), run_before=run)


def test_request_filter(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """`/` opens the filter on the Requests pane; only matching records stay."""

    async def run(pilot: Pilot[None]) -> None:
        await _loaded(pilot)
        await pilot.press("slash", *"vision")
        await pilot.press("enter")
        await pilot.pause()

    assert snap_compare(_app(), terminal_size=(120, 40), run_before=run)


def test_swap_dialog_with_preflight(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """`s` on vision: eligible models enabled, text-only ones disabled with the reason, preflight shown."""

    async def run(pilot: Pilot[None]) -> None:
        await _loaded(pilot)
        await pilot.press("down", "down", "s")
        app = pilot.app
        await wait_until(pilot, lambda: isinstance(app.screen, SwapScreen), what="the swap dialog")
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, SwapScreen)
        await wait_until(pilot, lambda: screen.preflight_result is not None, what="the preflight")
        await pilot.pause()

    assert snap_compare(_app(), terminal_size=(160, 48), run_before=run)


def test_help_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """`?`: every key with what it does."""

    async def run(pilot: Pilot[None]) -> None:
        await _loaded(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(_app(), terminal_size=(160, 48), run_before=run)


def test_help_screen_narrow_scrolled_to_the_end(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """`?` at 80x24, then End: the help scrolls to its last lines (other screens' keys, the flags legend)."""

    async def run(pilot: Pilot[None]) -> None:
        await _loaded(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        await pilot.press("end")
        await pilot.pause(0.3)

    assert snap_compare(_app(), terminal_size=(80, 24), run_before=run)


def _pane(name: str, keys: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    async def run(pilot: Pilot[None]) -> None:
        await _loaded(pilot)
        screen = pilot.app.screen
        screen.show_pane(name)  # type: ignore[attr-defined]
        await pilot.pause()
        if keys:
            await pilot.press(*keys)
        await pilot.pause(0.3)

    return run


def test_models_pane_narrow(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """80x24 Models: Family and Mem kept, backend health in State, ? Help and q Quit in the footer."""
    assert snap_compare(_app(), terminal_size=(80, 24), run_before=_pane("models"))


def test_requests_pane_narrow(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """80x24 Requests: TTFT, tokens and flags kept (the route is cut), the flags legend in the title."""
    assert snap_compare(_app(), terminal_size=(80, 24), run_before=_pane("requests"))


def test_request_detail(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """Enter on a request row at 80x24: the whole record."""

    async def run(pilot: Pilot[None]) -> None:
        await _pane("requests")(pilot)
        pilot.app.screen.query_one("#requests-table").focus()
        await pilot.press("enter")
        await pilot.pause(0.3)

    assert snap_compare(_app(), terminal_size=(80, 24), run_before=run)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_audit_log(snap_compare, size: tuple[int, int]) -> None:  # type: ignore[no-untyped-def]
    """`a`: one line per change; at 80 columns cut to fit (Enter opens one whole)."""

    async def run(pilot: Pilot[None]) -> None:
        await _loaded(pilot)
        await pilot.press("a")
        await pilot.pause(0.3)

    assert snap_compare(_app(), terminal_size=size, run_before=run)


def test_audit_entry_detail(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """Enter in the audit log at 80x24: before and after in full, no sideways scrolling."""

    async def run(pilot: Pilot[None]) -> None:
        await _loaded(pilot)
        await pilot.press("a")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.3)

    assert snap_compare(_app(), terminal_size=(80, 24), run_before=run)


def test_smoke_results_narrow(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """The smoke panel at 80x24: every column fits, the reasons below are never cut."""

    async def run(pilot: Pilot[None]) -> None:
        await _loaded(pilot)
        screen = SmokeScreen([r.role for r in SMOKE_RESULTS], "http://127.0.0.1:8600")
        await pilot.app.push_screen(screen)
        screen.show_results(SMOKE_RESULTS)
        await pilot.pause()

    assert snap_compare(_app(), terminal_size=(80, 24), run_before=run)


SMOKE_RESULTS = [
    SmokeResult(
        "default-chat",
        "chat",
        True,
        200,
        812.0,
        "role=default-chat; model=gemma-4-chat-31b; host=furnace; backend=furnace-swap",
        "Paris.",
        "",
    ),
    SmokeResult(
        "vision",
        "vision",
        False,
        502,
        95.0,
        "role=vision; model=gemma-4-multimodal-8b-e4b; host=crucible; backend=crucible-swap",
        "",
        "502: unknown model architecture: 'gemma4'",
    ),
    SmokeResult(
        "embed",
        "embed",
        True,
        200,
        31.0,
        "role=embed; model=nomic-embed-v1.5; host=crucible; backend=crucible-swap",
        "768 dims",
        "",
    ),
]


def test_smoke_results(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """The smoke panel: pass/fail, latency, route, snippet and the reason of a failure."""
    results = SMOKE_RESULTS

    async def run(pilot: Pilot[None]) -> None:
        await _loaded(pilot)
        screen = SmokeScreen([r.role for r in results], "http://127.0.0.1:8600")
        await pilot.app.push_screen(screen)
        screen.show_results(results)
        await pilot.pause()

    assert snap_compare(_app(), terminal_size=(160, 48), run_before=run)
