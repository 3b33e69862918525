"""The command line: clear errors, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forge_tui", *args], capture_output=True, text=True, timeout=timeout)


def test_invalid_config_fails_at_start_with_path_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts: {h: {address: x, platform: cpu, memory_budget_gb: 1, colour: red}}\n"
                   "backends: {}\nmodels: {}\nroles: {}\n")
    out = run("serve", "--config", str(bad), "--state-dir", str(tmp_path / "st"))
    assert out.returncode == 2
    assert str(bad) in out.stderr
    assert "hosts.h.colour: unknown key" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_config(tmp_path: Path) -> None:
    out = run("serve", "--config", str(tmp_path / "none.yaml"))
    assert out.returncode == 2 and "config file not found" in out.stderr


def test_version_and_help() -> None:
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("forge-tui ")
    out = run("--help")
    for cmd in ("serve", "demo", "attach", "smoke"):
        assert cmd in out.stdout
