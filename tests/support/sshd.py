"""A real OpenSSH ``sshd`` for tests, started from a private config on a free port.

Nothing is a stand-in here: the host key, the client key and the known_hosts entry are real,
and asyncssh verifies the host key exactly as it would against a homelab box.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"

__all__ = ["SSHD", "SshAgent", "Sshd", "free_port", "keygen", "sshd_available", "start_ssh_agent", "start_sshd"]


def sshd_available() -> str | None:
    """None when a private sshd can run here, else the reason it cannot."""
    if not Path(SSHD).exists():
        return f"{SSHD} not installed (Debian: apt-get install -y openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen not installed"
    if os.geteuid() != 0:
        return "sshd privilege separation needs root here"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def keygen(path: Path, comment: str = "forge-test") -> Path:
    for old in (path, path.with_suffix(".pub")):
        old.unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path


@dataclass
class Sshd:
    """One running sshd; ``stop()`` is idempotent."""

    address: str
    port: int
    workdir: Path
    client_key: Path
    known_hosts: Path
    host_key: Path
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    user: str = "root"
    netns: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def known_hosts_line(self) -> str:
        pub = (self.host_key.with_suffix(".pub")).read_text().split()
        host = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{host} {pub[0]} {pub[1]}\n"

    def sessions(self) -> list[int]:
        """PIDs of the per-connection sshd processes (children of the listener)."""
        if self.proc is None:
            return []
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def drop_sessions(self) -> None:
        """Kill every open connection (what a crashed or rebooted host does to its clients)."""
        for pid in self.sessions():
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        self.drop_sessions()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


def start_sshd(
    workdir: Path,
    *,
    address: str = "127.0.0.1",
    port: int | None = None,
    path_prefix: str | None = None,
    netns: str | None = None,
    timeout_s: float = 10.0,
) -> Sshd:
    """Start sshd in the foreground (-D) from a private config; wait until it accepts TCP.

    ``path_prefix`` becomes the front of PATH in every session (sshd ``SetEnv``), the way a host
    with ROCm tools in /opt/rocm/bin would be configured.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    host_key = keygen(workdir / "hostkey", "forge-test-host")
    client_key = keygen(workdir / "client", "forge-test-client")
    auth = workdir / "authorized_keys"
    auth.write_text(client_key.with_suffix(".pub").read_text())
    auth.chmod(0o600)
    if port is None:
        port = free_port(address) if netns is None else 22
    log = workdir / "sshd.log"
    config = workdir / "sshd_config"
    lines = [
        f"Port {port}",
        f"ListenAddress {address}",
        f"HostKey {host_key}",
        f"AuthorizedKeysFile {auth}",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password",
        "StrictModes no",
        "UsePAM no",
        f"PidFile {workdir / 'sshd.pid'}",
        "MaxStartups 32:30:64",
        "LogLevel VERBOSE",
    ]
    if path_prefix:
        lines.append(f"SetEnv PATH={path_prefix}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    config.write_text("\n".join(lines) + "\n")
    argv = [SSHD, "-D", "-f", str(config), "-E", str(log)]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = Sshd(
        address=address,
        port=port,
        workdir=workdir,
        client_key=client_key,
        known_hosts=workdir / "known_hosts",
        host_key=host_key,
        config=config,
        log=log,
        proc=proc,
        netns=netns,
    )
    server.known_hosts.write_text(server.known_hosts_line())
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            log_text = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"sshd exited with {proc.returncode}: {err} {log_text}")
        if _accepts(address, port, netns):
            return server
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"sshd did not accept connections on {address}:{port} within {timeout_s}s")


def _accepts(address: str, port: int, netns: str | None) -> bool:
    # From the root namespace the veth route reaches a namespaced sshd too.
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class SshAgent:
    """A real OpenSSH ``ssh-agent`` in the foreground on a private socket; ``stop()`` is idempotent."""

    socket: Path
    proc: subprocess.Popen[bytes] | None

    def add(self, key: Path) -> None:
        env = {**os.environ, "SSH_AUTH_SOCK": str(self.socket)}
        subprocess.run(["ssh-add", str(key)], env=env, check=True, capture_output=True, timeout=10)
        listed = subprocess.run(["ssh-add", "-l"], env=env, check=True, capture_output=True, text=True, timeout=10)
        if "forge-test" not in listed.stdout:
            raise RuntimeError(f"ssh-agent does not list the key: {listed.stdout!r}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
        self.socket.unlink(missing_ok=True)


def start_ssh_agent(workdir: Path, timeout_s: float = 10.0) -> SshAgent:
    """``ssh-agent -D -a SOCK``: no fork, so the test owns the pid it kills."""
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        raise RuntimeError("ssh-agent/ssh-add not installed (Debian: openssh-client)")
    workdir.mkdir(parents=True, exist_ok=True)
    sock = workdir / "agent.sock"
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    agent = SshAgent(sock, proc)
    deadline = time.monotonic() + timeout_s
    while not sock.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            agent.stop()
            raise RuntimeError(f"ssh-agent did not create {sock} within {timeout_s}s")
        time.sleep(0.05)
    return agent
