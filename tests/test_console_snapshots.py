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


def test_smoke_results(snap_compare) -> None:  # type: ignore[no-untyped-def]
    """The smoke panel: pass/fail, latency, route, snippet and the reason of a failure."""
    results = [
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

    async def run(pilot: Pilot[None]) -> None:
        await _loaded(pilot)
        screen = SmokeScreen([r.role for r in results], "http://127.0.0.1:8600")
        await pilot.app.push_screen(screen)
        screen.show_results(results)
        await pilot.pause()

    assert snap_compare(_app(), terminal_size=(160, 48), run_before=run)
