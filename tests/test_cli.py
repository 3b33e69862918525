"""The command line: clear errors, no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forge_tui", *args], capture_output=True, text=True, timeout=timeout)


def test_invalid_config_fails_at_start_with_path_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "hosts: {h: {address: x, platform: cpu, memory_budget_gb: 1, colour: red}}\n"
        "backends: {}\nmodels: {}\nroles: {}\n"
    )
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


def _start(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen[str], str]:
    """Start a forge-tui command and wait (bounded) for its 'listening on URL' line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "forge_tui", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines = []
    for _ in range(200):  # bounded: a few lines of banner at most
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "listening on " in line:
            url = line.split("listening on ", 1)[1].split()[0]
            return proc, url
    proc.kill()
    raise AssertionError("no 'listening on' line:\n" + "".join(lines))


def _stop(proc: subprocess.Popen[str]) -> int:
    import signal

    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_demo_headless_serves_the_real_route_and_stops_cleanly(tmp_path: Path) -> None:
    from openai import OpenAI

    proc, url = _start(
        ["demo", "--headless", "--port", "0", "--backend-ports", "auto", "--state-dir", str(tmp_path / "st")], tmp_path
    )
    try:
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        raw = client.chat.completions.with_raw_response.create(
            model="default-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert raw.headers["x-forge-route"].startswith("role=default-chat; model=gemma3-270m-b; host=local")
        assert raw.parse().choices[0].message is not None
        # the smoke command against it: every role passes, exit 0
        ok = run("smoke", "--url", url, timeout=300)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "4 passed, 0 failed" in ok.stdout
        bad = run("smoke", "no-such-role", "--url", url, timeout=120)
        assert bad.returncode == 1
        assert "FAIL no-such-role" in bad.stdout and "404" in bad.stdout
        children = _children(proc.pid)
        assert len(children) == 3  # one llama.cpp server process per demo backend
    finally:
        assert _stop(proc) == 0
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()], "demo left llama.cpp servers behind"


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_serve_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run(
            "serve",
            "--config",
            "forge_tui/data/demo.yaml",
            "--port",
            str(port),
            "--no-hosts",
            "--state-dir",
            str(tmp_path / "st"),
        )
    assert out.returncode == 2
    assert "already in use" in out.stderr and str(port) in out.stderr
    assert "Traceback" not in out.stderr


def test_smoke_against_nothing_fails_with_the_reason() -> None:
    out = run("smoke", "default-chat", "--url", "http://127.0.0.1:9", "--timeout", "5")
    assert out.returncode == 1
    assert "FAIL default-chat" in out.stdout and "unreachable" in out.stdout
