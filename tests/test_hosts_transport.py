"""The transports against a real OpenSSH sshd on loopback (and the local one), no stand-ins:
quoting, stdin, live output, timeouts that kill the remote process group, connection reuse,
reconnect, and host keys: unknown and changed keys are refused with a clear message."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from forge_tui.config.models import SshSettings
from forge_tui.hosts.transport import (
    CommandTimeout,
    HostKeyRefused,
    HostUnreachable,
    LocalTransport,
    SshTransport,
    remote_command,
)
from tests.support.sshd import SshAgent, Sshd, keygen, sshd_available, start_ssh_agent, start_sshd

INJECTION = "x; touch {marker}; $(touch {marker}) `touch {marker}` | touch {marker} && touch {marker}"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    reason = sshd_available()
    if reason:
        pytest.skip(reason)
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def settings(s: Sshd, **kw: object) -> SshSettings:
    base: dict[str, object] = dict(
        user=s.user,
        port=s.port,
        key_file=str(s.client_key),
        known_hosts=str(s.known_hosts),
        connect_timeout_s=5,
        command_timeout_s=10,
        keepalive_s=5,
    )
    base.update(kw)
    return SshSettings(**base)


def _alive(pattern: str) -> list[str]:
    """Processes whose command line contains ``pattern`` (read from /proc; nothing is killed here)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if pattern in cmd and "pytest" not in cmd:
                out.append(f"{d.name} {cmd}")
    return out


def test_remote_command_quotes_every_argument() -> None:
    cmd = remote_command(["head", "-c", "10", "a b; rm -rf ~"], "~/dir with space", watchdog=False)
    assert cmd == "cd ~/'dir with space' && exec head -c 10 'a b; rm -rf ~'"


@pytest.mark.sshd
async def test_ssh_runs_quoted_argv_and_names_are_inert(sshd: Sshd, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    canary = tmp_path / "canary"
    canary.mkdir()
    nasty = INJECTION.format(marker=marker)
    t = SshTransport("box", sshd.address, settings(sshd))
    try:
        res = await t.run(["printf", "%s", nasty], 10)
        assert res.ok and res.out == nasty
        # A model file named like an attack: created, read and removed as one plain name.
        name = "x; rm -rf canary; $(touch pwned) `touch pwned`.gguf"  # relative to cwd: canary/
        res = await t.run(["sh", "-c", 'printf hello > "$1"', "sh", name], 10, cwd=str(tmp_path))
        assert res.ok and (tmp_path / name).read_text() == "hello"
        res = await t.run(["head", "-c", "3", name], 10, cwd=str(tmp_path))
        assert res.out == "hel"
        res = await t.run(["rm", str(tmp_path / name)], 10)
        assert res.ok and not (tmp_path / name).exists()
        assert canary.is_dir() and not marker.exists() and not (tmp_path / "pwned").exists()
        assert t.connects == 1  # one connection reused for every command
    finally:
        await t.close()


@pytest.mark.sshd
async def test_ssh_stdin_cwd_exit_status_and_live_output(sshd: Sshd, tmp_path: Path) -> None:
    t = SshTransport("box", sshd.address, settings(sshd))
    d = tmp_path / "dir with space"
    d.mkdir()
    try:
        res = await t.run(["sh", "-c", 'cat > "$1"', "sh", str(d / "blob")], 10, stdin=b"GGUF\x00\x01binary")
        assert res.ok and (d / "blob").read_bytes() == b"GGUF\x00\x01binary"
        res = await t.run(["pwd"], 10, cwd=str(d))
        assert res.out.strip() == str(d)
        home = (await t.run(["sh", "-c", 'printf %s "$HOME"'], 10)).out
        res = await t.run(["pwd"], 10, cwd="~")
        assert res.out.strip() == home
        res = await t.run(["sh", "-c", "echo out; echo err >&2; exit 7"], 10)
        assert (res.exit_status, res.out, res.err) == (7, "out\n", "err\n")
        seen: list[tuple[str, str]] = []
        res = await t.run(
            ["sh", "-c", "echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three"],
            10,
            on_output=lambda s, line: seen.append((s, line)),
        )
        assert seen == [("stdout", "one"), ("stderr", "two"), ("stdout", "three")]
        res = await t.run(["no-such-command-forge"], 10)
        assert res.exit_status == 127
    finally:
        await t.close()


@pytest.mark.sshd
async def test_ssh_timeout_kills_the_remote_process_group(sshd: Sshd, tmp_path: Path) -> None:
    """OpenSSH ignores channel signals; the watchdog must take the whole group down (a build's
    compilers included) when we give up on a command."""
    tag = f"forge-timeout-{os.getpid()}-{time.monotonic_ns()}"
    t = SshTransport("box", sshd.address, settings(sshd))
    try:
        with pytest.raises(CommandTimeout, match="did not finish within 1s"):
            await t.run(["sh", "-c", f"sleep 300 & sleep 301; echo {tag}", "forge", tag], 1.0)
        deadline = time.monotonic() + 10
        while _alive(tag) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert _alive(tag) == []
        res = await t.run(["echo", "still usable"], 10)
        assert res.out == "still usable\n"
    finally:
        await t.close()


@pytest.mark.sshd
async def test_ssh_cancel_kills_the_remote_command(sshd: Sshd) -> None:
    tag = f"forge-cancel-{os.getpid()}-{time.monotonic_ns()}"
    t = SshTransport("box", sshd.address, settings(sshd))
    try:
        task = asyncio.ensure_future(t.run(["sh", "-c", "sleep 300", tag], 60))
        deadline = time.monotonic() + 10
        while not _alive(tag) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert _alive(tag)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + 10
        while _alive(tag) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert _alive(tag) == []
    finally:
        await t.close()


@pytest.mark.sshd
async def test_unknown_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    t = SshTransport("box", sshd.address, settings(sshd, known_hosts=str(empty)))
    with pytest.raises(HostKeyRefused) as e:
        await t.run(["true"], 10)
    msg = str(e.value)
    fp = subprocess.run(
        ["ssh-keygen", "-lf", str(sshd.host_key.with_suffix(".pub"))], capture_output=True, text=True
    ).stdout.split()[1]
    assert "unknown host key" in msg and f"[{sshd.address}]:{sshd.port}" in msg and "Refusing" in msg
    assert fp in msg  # the fingerprint to check on the host
    await t.close()


@pytest.mark.sshd
async def test_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other", "someone-else")
    alg, key = other.with_suffix(".pub").read_text().split()[:2]
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[{sshd.address}]:{sshd.port} {alg} {key}\n")
    t = SshTransport("box", sshd.address, settings(sshd, known_hosts=str(kh)))
    with pytest.raises(HostKeyRefused, match="HOST KEY CHANGED") as e:
        await t.run(["true"], 10)
    trusted = subprocess.run(
        ["ssh-keygen", "-lf", str(other.with_suffix(".pub"))], capture_output=True, text=True
    ).stdout.split()[1]
    assert trusted in str(e.value) and "ssh-keygen -R" in str(e.value)
    await t.close()


@pytest.mark.sshd
async def test_missing_known_hosts_file_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    t = SshTransport("box", sshd.address, settings(sshd, known_hosts=str(tmp_path / "nope")))
    with pytest.raises(HostKeyRefused, match="does not exist"):
        await t.run(["true"], 10)


@pytest.mark.sshd
async def test_wrong_client_key_is_unreachable_with_reason(sshd: Sshd, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger")
    t = SshTransport("box", sshd.address, settings(sshd, key_file=str(stranger)))
    with pytest.raises(HostUnreachable, match="refused our key"):
        await t.run(["true"], 10)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[SshAgent]:
    """A real ssh-agent on a private socket, killed (by its own pid) in teardown."""
    running = start_ssh_agent(tmp_path / "agent")
    yield running
    running.stop()


@pytest.mark.sshd
async def test_agent_key_authenticates(
    sshd: Sshd, agent: SshAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``key_file: null``: the key comes from the agent named by SSH_AUTH_SOCK, never from a file."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh default keys can stand in for the agent
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    without = SshTransport("box", sshd.address, settings(sshd, key_file=None))
    with pytest.raises(HostUnreachable, match=r"refused our key.*ssh agent / default keys"):
        await without.run(["true"], 10)
    await without.close()

    agent.add(sshd.client_key)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent.socket))
    t = SshTransport("box", sshd.address, settings(sshd, key_file=None))
    try:
        res = await t.run(["sh", "-c", 'printf "%s" "$1"', "sh", "from the agent"], 10)
        assert res.ok and res.out == "from the agent"
        assert t.connects == 1
    finally:
        await t.close()


@pytest.mark.sshd
async def test_reconnects_after_the_server_restarts_with_backoff(tmp_path: Path) -> None:
    reason = sshd_available()
    if reason:
        pytest.skip(reason)
    server = start_sshd(tmp_path / "a")
    t = SshTransport(
        "box", server.address, settings(server, connect_timeout_s=2), backoff_base_s=0.5, backoff_max_s=1.0
    )
    try:
        assert (await t.run(["true"], 5)).ok
        server.stop()
        # The old connection is gone; the next command fails (connection lost or refused).
        with pytest.raises(HostUnreachable):
            await t.run(["true"], 5)
        with pytest.raises(HostUnreachable):
            await t.run(["true"], 5)
        # Same port, same keys: start it again and the transport reconnects after its backoff.
        proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", str(server.config), "-E", str(server.log)])
        server.proc = proc
        deadline = time.monotonic() + 15
        ok = False
        while time.monotonic() < deadline and not ok:
            try:
                ok = (await t.run(["true"], 5)).ok
            except HostUnreachable:
                await asyncio.sleep(0.2)
        assert ok and t.connects == 2
    finally:
        await t.close()
        server.stop()


async def test_local_transport_same_contract(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    nasty = INJECTION.format(marker=marker)
    t = LocalTransport()
    res = await t.run(["printf", "%s", nasty], 5)
    assert res.out == nasty and not marker.exists()
    res = await t.run(["sh", "-c", 'cat > "$1"', "sh", str(tmp_path / "b")], 5, stdin=b"\x00abc")
    assert res.ok and (tmp_path / "b").read_bytes() == b"\x00abc"
    assert (await t.run(["pwd"], 5, cwd=str(tmp_path))).out.strip() == str(tmp_path)
    assert (await t.run(["no-such-command-forge"], 5)).exit_status == 127
    tag = f"forge-local-{os.getpid()}-{time.monotonic_ns()}"
    with pytest.raises(CommandTimeout):
        await t.run(["sh", "-c", "sleep 300 & sleep 301", tag], 0.5)
    deadline = time.monotonic() + 10
    while _alive(tag) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert _alive(tag) == []


@pytest.mark.sshd
async def test_many_concurrent_commands_share_one_connection(sshd: Sshd) -> None:
    """OpenSSH's default MaxSessions is 10; twenty commands at once must still all run."""
    t = SshTransport("box", sshd.address, settings(sshd))
    try:
        results = await asyncio.gather(*(t.run(["sh", "-c", f"sleep 0.2; echo {i}"], 30) for i in range(20)))
        assert [r.out.strip() for r in results] == [str(i) for i in range(20)]
        assert t.connects == 1
    finally:
        await t.close()
