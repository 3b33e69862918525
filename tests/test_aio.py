"""The process loop: uvloop when installed, the standard loop on request."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forge_tui import aio


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    monkeypatch.delenv("FORGE_UVLOOP", raising=False)
    assert aio.loop_name() == "uvloop"
    assert aio.run(_loop_module()).startswith("uvloop")


def test_standard_loop_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGE_UVLOOP", "0")
    assert aio.loop_name() == "asyncio"
    assert aio.run(_loop_module()).startswith("asyncio")


def test_settle_gc_freezes_what_exists_and_collects_the_young_less_often() -> None:
    # In a child: the policy is process-wide, and this test process must keep CPython's own.
    code = (
        "import gc, json\n"
        "from forge_tui import aio\n"
        "class Cycle:\n"
        "    pass\n"
        "c = Cycle(); c.me = c; del c  # garbage at settle time: collected, not frozen in\n"
        "before = gc.get_threshold()\n"
        "aio.settle_gc()\n"
        "print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count(),\n"
        "                  sum(type(o).__name__ == 'Cycle' for o in gc.get_objects())]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    before, after, frozen, cycles_left = json.loads(out.stdout)
    assert after == [aio.YOUNG_GC_THRESHOLD, aio.MIDDLE_GC_THRESHOLD, before[2]] and before[0] < aio.YOUNG_GC_THRESHOLD
    assert frozen > 1000  # the modules and everything imported
    assert cycles_left == 0


def test_serve_settles_its_collector_once_started(tmp_path: Path) -> None:
    """The real ``serve`` command, in a child: once it listens, its collector runs the settled policy."""
    cfg = tmp_path / "forge.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "gateway": {"history": False},
                "hosts": {
                    "h": {"address": "127.0.0.1", "platform": "cpu", "memory_budget_gb": 8, "transport": "local"}
                },
                "backends": {"a": {"host": "h", "kind": "llama-server", "base_url": "http://127.0.0.1:9"}},
                "families": {"plain": {}},
                "models": {"m": {"family": "plain", "architecture": "gemma3", "placements": [{"backend": "a"}]}},
                "roles": {"default-chat": {"model": "m"}},
            }
        )
    )
    code = (
        "import gc, json, os, signal, sys, threading, time\n"
        "from forge_tui.cli import main\n"
        "def watch():\n"
        "    for _ in range(600):  # bounded: 60 s for the gateway to start\n"
        "        if gc.get_freeze_count():\n"
        "            print('SETTLED', json.dumps(gc.get_threshold()), flush=True)\n"
        "            break\n"
        "        time.sleep(0.1)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "threading.Thread(target=watch, daemon=True).start()\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = ["serve", "--config", str(cfg), "--port", "0", "--no-hosts", "--state-dir", str(tmp_path / "state")]
    env = {k: v for k, v in os.environ.items() if k not in ("FORGE_API_KEYS", "FORGE_ADMIN_TOKEN")}
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    settled = [ln for ln in out.stdout.splitlines() if ln.startswith("SETTLED ")]
    assert settled, out.stdout[-2000:]
    assert json.loads(settled[0].split(" ", 1)[1])[:2] == [aio.YOUNG_GC_THRESHOLD, aio.MIDDLE_GC_THRESHOLD]
    listening = out.stdout.index("gateway listening")
    assert listening < out.stdout.index("SETTLED")  # settled once started, not before
