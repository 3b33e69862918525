"""``forge-tui attach``: the console against a headless ``forge-tui serve`` in another process.

The gateway runs as its own program (as it would under systemd on the homelab box); the console
reaches it only through the admin API with the token. Keys change what agents get; when the
gateway goes away the console says so and keeps running, and it recovers when it comes back.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from forge_tui.console import ForgeApp
from forge_tui.console.screens.main import MainScreen
from forge_tui.console.widgets import RolesTable
from forge_tui.control.remote import RemoteControl

from .console_support import ADMIN_TOKEN, console_catalog_data, wait_until, widget_text

pytestmark = [pytest.mark.llama, pytest.mark.timeout(240)]


class Headless:
    def __init__(self, config: Path, state: Path, port: int = 0) -> None:
        self.config, self.state, self.port = config, state, port
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> Headless:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "forge_tui",
                "serve",
                "--config",
                str(self.config),
                "--port",
                str(self.port),
                "--state-dir",
                str(self.state),
                "--admin-token",
                ADMIN_TOKEN,
                "--no-hosts",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        seen = []
        for _ in range(200):  # bounded: the banner comes within a few lines
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                self.port = int(self.url.rsplit(":", 1)[1])
                return self
        raise AssertionError("forge-tui serve did not start:\n" + "".join(seen))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def headless(llama_server, tmp_path: Path) -> Iterator[Headless]:  # type: ignore[no-untyped-def]
    config = tmp_path / "forge.yaml"
    config.write_text(yaml.safe_dump(console_catalog_data(llama_server.url)))
    gw = Headless(config, tmp_path / "state").start()
    try:
        yield gw
    finally:
        gw.stop()


def _model(url: str, role: str) -> str:
    resp = httpx.post(
        f"{url}/v1/chat/completions",
        timeout=60,
        json={"model": role, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert resp.status_code == 200, resp.text
    return dict(p.strip().split("=", 1) for p in resp.headers["x-forge-route"].split(";"))["model"]


async def test_attach_drives_a_headless_gateway_and_survives_its_restart(headless: Headless) -> None:
    control = RemoteControl(headless.url, ADMIN_TOKEN)
    app = ForgeApp(control, refresh_s=0.2)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_until(pilot, lambda: app.snapshot is not None, what="the first snapshot")
            screen = app.screen
            assert isinstance(screen, MainScreen)
            assert "attached" in widget_text(screen.query_one("#status"))
            screen.query_one(RolesTable).focus()
            await pilot.press("r")  # default-chat: back to its previous model, over the admin API
            await wait_until(pilot, lambda: app.last_change is not None, what="the rollback")
            assert app.last_change is not None and app.last_change.ok
            assert _model(headless.url, "default-chat") == "gemma-a"

            headless.stop()  # the gateway goes away under the console
            await wait_until(pilot, lambda: app.link_error is not None, what="the console to notice")
            assert any(n.title == "Gateway unreachable" for n in app.notices)
            await wait_until(pilot, lambda: "✖" in widget_text(screen.query_one("#status")), what="the status bar")
            assert app.is_running

            headless.start()  # same port, same state directory: the change survived
            await wait_until(pilot, lambda: app.link_error is None, timeout=60, what="the link to come back")
            assert any(n.message == "gateway reachable again" for n in app.notices)
            await wait_until(
                pilot,
                lambda: str(screen.query_one(RolesTable).get_cell("default-chat", "Model")) == "gemma-a",
                what="the restored state in the Roles pane",
            )
    finally:
        await control.close()
    assert _model(headless.url, "default-chat") == "gemma-a"


async def test_attach_with_a_wrong_token_is_a_clear_refusal(headless: Headless) -> None:
    control = RemoteControl(headless.url, "not-the-token")
    app = ForgeApp(control, refresh_s=0.2)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_until(pilot, lambda: app.link_error is not None, what="the refusal")
            assert "token" in (app.link_error or "")
            assert app.snapshot is None and app.is_running
    finally:
        await control.close()


async def test_attach_with_a_token_file_follows_a_restart_with_a_new_token(llama_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """serve without --admin-token writes a per-run token to <state>/admin.token; after a restart the
    file holds a new one and the console re-reads it on the first 401, instead of 401 forever."""
    from forge_tui.operator.admin_token import TOKEN_FILE_NAME, read_token_file

    config = tmp_path / "forge.yaml"
    config.write_text(yaml.safe_dump(console_catalog_data(llama_server.url)))
    gw = PerRunToken(config, tmp_path / "state").start()
    token_file = tmp_path / "state" / TOKEN_FILE_NAME
    try:
        first = read_token_file(token_file)
        control = RemoteControl(gw.url, first, token_file=token_file)
        app = ForgeApp(control, refresh_s=0.2)
        try:
            async with app.run_test(size=(160, 48)) as pilot:
                await wait_until(pilot, lambda: app.snapshot is not None, what="the first snapshot")
                screen = app.screen
                assert isinstance(screen, MainScreen)
                gw.stop()
                await wait_until(pilot, lambda: app.link_error is not None, what="the console to notice")
                status = screen.query_one("#status")
                await wait_until(
                    pilot, lambda: "disconnected since" in widget_text(status), what="'disconnected since' in the bar"
                )
                flat = " ".join(widget_text(status).split())  # the bar wraps
                assert "values below are" in flat and "old" in flat  # the age of what the panes still show
                assert screen.query_one("#panes").has_class("-stale")
                gw.start()  # same port and state dir, a new per-run token
                assert read_token_file(token_file) != first
                await wait_until(pilot, lambda: app.link_error is None, timeout=60, what="the link to come back")
                assert "disconnected" not in widget_text(status)
                assert not screen.query_one("#panes").has_class("-stale")
        finally:
            await control.close()
    finally:
        gw.stop()


class PerRunToken(Headless):
    """``forge-tui serve`` with no admin token configured: it makes one per run and writes it to the state dir."""

    def start(self) -> PerRunToken:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "forge_tui",
                "serve",
                "--config",
                str(self.config),
                "--port",
                str(self.port),
                "--state-dir",
                str(self.state),
                "--no-hosts",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={k: v for k, v in os.environ.items() if k != "FORGE_ADMIN_TOKEN"},
        )
        assert self.proc.stdout is not None
        seen = []
        for _ in range(200):  # bounded: the banner comes within a few lines
            line = self.proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            found = re.search(r"listening on (http://\S+)", line)
            if found:
                self.url = found.group(1)
                self.port = int(self.url.rsplit(":", 1)[1])
                return self
        raise AssertionError("forge-tui serve did not start:\n" + "".join(seen))
