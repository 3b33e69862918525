"""The installed ``forge-tui demo`` in a real terminal (tmux): panes, a swap, a smoke, quit.

tmux runs the real program on a private server socket, keys go in with ``send-keys`` and the
screen is read back with ``capture-pane``, as an operator over SSH would see it. The effect of
the swap is also checked where agents see it: the ``x-forge-route`` of a real HTTP request.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.tmux, pytest.mark.llama, pytest.mark.timeout(420)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (the demo's llama.cpp servers run in sessions of their own)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Terminal:
    def __init__(self, name: str) -> None:
        self.sock = name
        self.session = name

    def tmux(self, *args: str, check: bool = True) -> str:
        # -f /dev/null: the operator's own tmux.conf must not change what the test sees.
        done = subprocess.run(
            ["tmux", "-L", self.sock, "-f", "/dev/null", *args], capture_output=True, text=True, timeout=30
        )
        if check and done.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.session, check=False)

    def pane_pid(self) -> int:
        return int(self.tmux("display-message", "-p", "-t", self.session, "#{pane_pid}").strip())

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.session, *keys)

    def wait_for(self, cond: Callable[[str], bool], what: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        text = self.screen()
        while not cond(text):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; the screen:\n{text}")
            time.sleep(0.25)
            text = self.screen()
        return text


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[tuple[Terminal, int]]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (Debian: apt-get install -y tmux)")
    exe = shutil.which("forge-tui")
    assert exe, "the forge-tui command is not installed: pip install -e '.[test]'"
    port = _free_port()
    term = Terminal(f"forge-e2e-{os.getpid()}")
    # COLUMNS/LINES (set under pytest) would override the terminal's real size in the app.
    command = (
        f"env -u COLUMNS -u LINES {exe} demo --port {port} --backend-ports auto --state-dir {tmp_path / 'state'}; "
        "echo FORGE-EXIT=$?; sleep 600"
    )
    term.tmux("new-session", "-d", "-s", term.session, "-x", "160", "-y", "48", command)
    # A detached session may still take tmux's default size; pin the window to 160x48.
    term.tmux("set-option", "-t", term.session, "window-size", "manual")
    term.tmux("resize-window", "-t", term.session, "-x", "160", "-y", "48")
    pane_pid = int(term.tmux("display-message", "-p", "-t", term.session, "#{pane_pid}").strip())
    try:
        yield term, port
    finally:
        if "FORGE-EXIT=" not in term.screen():
            term.keys("Escape", "Escape", "q")  # a clean quit stops the demo's servers
            time.sleep(1.0)
            if "Quit forge?" in term.screen():
                term.keys("y")
            deadline = time.monotonic() + 20
            while "FORGE-EXIT=" not in term.screen() and time.monotonic() < deadline:
                time.sleep(0.25)
        leftovers = _children(pane_pid)
        term.tmux("kill-server", check=False)
        for pid in leftovers:  # only what this test started, should a quit not have stopped it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (from /proc, in seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _console_pid(pane_pid: int) -> int:
    """The forge-tui process under the tmux pane (not the shell, not its llama.cpp servers)."""
    for pid in _children(pane_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(arg.endswith(b"forge-tui") for arg in argv) and b"demo" in argv and argv[0] != b"env":
            return pid
    raise AssertionError("no forge-tui process under the tmux pane")


def _goes_idle(pid: int, windows: int = 20, window_s: float = 1.0, busy_s: float = 0.5) -> list[float]:
    """Sample the process's CPU over up to ``windows`` windows; done after two quiet ones in a row.
    A console stuck in a loop burns a whole core (about ``window_s`` per window) and never gets there."""
    used: list[float] = []
    quiet = 0
    before = _cpu_seconds(pid)
    for _ in range(windows):
        time.sleep(window_s)
        now = _cpu_seconds(pid)
        used.append(now - before)
        before = now
        quiet = quiet + 1 if used[-1] < busy_s else 0
        if quiet == 2:
            return used
    raise AssertionError(f"the console did not go idle after the key burst: CPU seconds per window {used}")


def _route_model(port: int, role: str) -> str:
    resp = httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        timeout=60,
        json={
            "model": role,
            "max_tokens": 4,
            "messages": [{"role": "user", "content": "Say hi."}],
        },
    )
    assert resp.status_code == 200, resp.text
    route = dict(p.strip().split("=", 1) for p in resp.headers["x-forge-route"].split(";"))
    return route["model"]


def _role_line(screen: str, role: str) -> list[str]:
    """The cells after ``role`` on its row of the Roles pane (model, previous, trial until)."""
    for line in screen.splitlines():
        cells = line.replace("│", " ").split()
        if cells and cells[0] == role:
            return cells[1:]
    return []


def test_demo_console_in_tmux(terminal: tuple[Terminal, int]) -> None:
    term, port = terminal
    screen = term.wait_for(
        lambda s: s.count("ready") >= 3 and "default-chat" in s and "s Swap" in s,
        "the demo's panes with ready backends and the footer",
        timeout=240,
    )
    for pane in ("Roles", "Hosts", "Models", "Latency", "Errors", "Requests"):
        assert f"─ {pane} " in screen, f"{pane} pane missing:\n{screen}"  # every pane at 160x48 (titles may go on)
    assert _role_line(screen, "default-chat")[:2] == ["gemma3-270m-b", "gemma3-270m-a"]

    # A burst of pane keys in one write (a paste, a laggy link): once a loop that never ended. At
    # 160x48 they move the focus round Roles and the five panes; net six steps bring it back to Roles.
    term.keys(*(["]"] * 9), *(["["] * 3))
    _goes_idle(_console_pid(term.pane_pid()))

    assert _route_model(port, "default-chat") == "gemma3-270m-b"
    term.keys("s")
    term.wait_for(lambda s: "Swap role default-chat" in s, "the swap dialog")
    term.keys("Enter")  # pick the first eligible model: its preflight runs
    term.wait_for(lambda s: "preflight gemma3-270m-a" in s and ": ok" in s, "a passing preflight", timeout=120)
    term.keys("Enter")  # Swap
    screen = term.wait_for(
        lambda s: _role_line(s, "default-chat")[:2] == ["gemma3-270m-a", "gemma3-270m-b"],
        "the Roles pane showing the swap",
    )
    assert _route_model(port, "default-chat") == "gemma3-270m-a"

    term.keys("t")
    # The verdict is the smoke checks' (they flag the demo model's <|im_end|> leak); the dialog shows
    # it for the role the operator selected, with the route the request took and, on a FAIL, why.
    screen = term.wait_for(lambda s: "1/1 passed" in s or "0/1 passed" in s, "the smoke result", timeout=120)
    assert "Smoke default-chat (selected in Roles)" in screen and "gemma3-270m-a @local" in screen
    assert "PASS" in screen if "1/1 passed" in screen else "default-chat: " in screen
    term.keys("Escape")
    term.wait_for(lambda s: "Smoke default-chat" not in s, "the smoke panel to close")

    term.keys("q")
    screen = term.wait_for(lambda s: "FORGE-EXIT=" in s or "Quit forge?" in s, "quit")
    if "Quit forge?" in screen:  # a request from the rolling window may still be draining
        term.keys("y")
    screen = term.wait_for(lambda s: "FORGE-EXIT=" in s, "the demo to exit", timeout=60)
    assert "FORGE-EXIT=0" in screen
