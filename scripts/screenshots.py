"""Write the README's SVG screenshots from a real running demo.

Starts the demo's real llama.cpp servers (``forge_tui/data/demo.yaml``: Gemma 3 270M on CPU), the
gateway embedded in this process, sends some real traffic through it, then drives the console
with Textual's Pilot and saves what it shows:

    screenshots/main.svg         the main screen at 160x48
    screenshots/main-80x24.svg   the same at 80x24
    screenshots/swap.svg         the swap dialog with a real preflight
    screenshots/smoke.svg        smoke results of every role (T)
    screenshots/help.svg         the key help (?)

Usage: python scripts/screenshots.py [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

from forge_tui.cli import DEMO_CONFIG
from forge_tui.config import Catalog, load_catalog
from forge_tui.console import ForgeApp
from forge_tui.console.screens.main import MainScreen
from forge_tui.console.screens.swap import SwapScreen
from forge_tui.console.widgets import RolesTable
from forge_tui.control.local import LocalControl
from forge_tui.launch import LocalBackends
from forge_tui.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent


async def _until(pilot, cond, what: str, timeout: float = 180.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        await pilot.pause(0.1)


async def _traffic(url: str) -> None:
    """What agents would send: a few chats per role, one stream, and one caller mistake."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        for i in range(3):
            for role in ("default-chat", "priority-chat", "prompt-enhance"):
                await client.post(
                    "/v1/chat/completions",
                    json={
                        "model": role,
                        "max_tokens": 8 + 4 * i,
                        "messages": [{"role": "user", "content": f"Name a colour ({i})."}],
                    },
                )
        await client.post("/v1/embeddings", json={"model": "embed", "input": "forge"})
        async with client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "default-chat",
                "stream": True,
                "max_tokens": 24,
                "messages": [{"role": "user", "content": "Count to five."}],
            },
        ) as resp:
            async for _ in resp.aiter_lines():
                pass
        await client.post(
            "/v1/chat/completions",
            json={
                "model": "gemma-4-chat-31b",
                "messages": [{"role": "user", "content": "hi"}],
            },
        )


async def _shoot(rt: Runtime, out: Path) -> list[Path]:
    written: list[Path] = []

    def save(app: ForgeApp, name: str) -> None:
        written.append(Path(app.save_screenshot(filename=name, path=str(out))))

    app = ForgeApp(LocalControl(rt), refresh_s=0.5)
    async with app.run_test(size=(160, 48)) as pilot:
        await _until(pilot, lambda: app.snapshot is not None and app.snapshot.telemetry.total >= 12, "traffic")
        await pilot.pause(1.5)
        save(app, "main.svg")

        await pilot.press("T")
        await _until(pilot, lambda: app.last_smoke is not None, "the smoke of every role")
        await pilot.pause(0.5)
        save(app, "smoke.svg")
        await pilot.press("escape")

        await _until(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        app.screen.query_one(RolesTable).focus()
        await pilot.press("s")
        await _until(pilot, lambda: isinstance(app.screen, SwapScreen), "the swap dialog")
        dialog = app.screen
        await pilot.press("enter")
        await _until(pilot, lambda: dialog.preflight_result is not None, "the preflight")  # type: ignore[attr-defined]
        await pilot.pause(0.3)
        save(app, "swap.svg")
        await pilot.press("escape")

        await _until(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        await pilot.press("question_mark")
        await pilot.pause(0.3)
        save(app, "help.svg")

    narrow = ForgeApp(LocalControl(rt), refresh_s=0.5)
    async with narrow.run_test(size=(80, 24)) as pilot:
        await _until(pilot, lambda: narrow.snapshot is not None, "the first snapshot")
        await pilot.pause(1.0)
        save(narrow, "main-80x24.svg")
    return written


async def _run(out: Path, catalog: Catalog) -> list[Path]:
    with tempfile.TemporaryDirectory(prefix="forge-shots-") as state:
        rt = Runtime(DEMO_CONFIG, catalog=catalog, state_dir=state, port=0, history=False)
        await rt.start()
        try:
            assert rt.url is not None
            await _traffic(rt.url)
            return await _shoot(rt, out)
        finally:
            await rt.stop(drain_timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    backends = LocalBackends(load_catalog(DEMO_CONFIG))
    catalog = backends.with_free_ports()  # never collide with a running demo
    print("screenshots: starting the demo's llama.cpp servers...", flush=True)
    backends.start()
    try:
        written = asyncio.run(_run(args.out, catalog))
    finally:
        backends.stop()
    for path in written:
        print(f"screenshots: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
