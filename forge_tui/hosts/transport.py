"""Run commands on a host: over SSH (asyncssh) or on this machine, behind one interface.

Every command is an argv list. On SSH it is joined with ``shlex.quote`` for the remote shell,
locally it is exec'd without a shell, so a model name such as ``x; rm -rf ~`` is one inert
argument either way. A configured shell command (an operator's ``restart:`` line) is passed
explicitly as ``["sh", "-c", text]``, never spliced.

Remote lifetime: OpenSSH ignores channel signals and keeps a command running after its channel
closes, so a timed-out or cancelled build would live on. Each remote command therefore runs
under a small POSIX-sh watchdog that holds the channel's stdin open; when we close the channel
(timeout, cancel, lost link) stdin reaches EOF and the watchdog kills the command's process
group (sshd gives every session its own group), compilers and all.

Errors (all ``TransportError``): ``HostKeyRefused`` (unknown or changed host key; never
auto-accepted), ``HostUnreachable`` (connect failed, auth failed, link lost), ``CommandTimeout``.
A command that runs and exits non-zero is not an error: it is a ``CommandResult``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import asyncssh

from ..config.models import Host, SshSettings

__all__ = [
    "CommandResult",
    "CommandTimeout",
    "HostKeyRefused",
    "HostUnreachable",
    "LocalTransport",
    "OutputCallback",
    "SshTransport",
    "Transport",
    "TransportError",
    "remote_command",
    "transport_for",
]

OutputCallback = Callable[[str, str], None]
MAX_SESSIONS = 8  # (stream "stdout"|"stderr", line without newline)

# Runs "$@" with stdin from /dev/null; a background reader waits for EOF on the real stdin and
# then kills the whole process group (TERM, then KILL after 3 s; the watcher itself ignores TERM, so the
# normal exit path removes it with KILL). Constant text: no interpolation.
_WATCHDOG = (
    'exec 3<&0; "$@" </dev/null & child=$!; '
    "{ trap '' TERM; while IFS= read -r _l <&3; do :; done; kill -TERM 0; "
    "sleep 3; kill -KILL 0; } >/dev/null 2>&1 & watch=$!; exec 3<&-; "
    'wait "$child"; rc=$?; kill -KILL "$watch" 2>/dev/null; exit "$rc"'
)


_ERROR_WORDS = re.compile(r"\b(error|fatal|failed|cannot|can't|not found|no such|denied|refused)\b", re.I)


@dataclass(slots=True)
class CommandResult:
    argv: list[str]
    exit_status: int | None  # None: killed by a signal or the channel closed without a status
    stdout: bytes
    stderr: bytes
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")

    def reason(self, limit: int = 3) -> str:
        """One line saying why it failed: the first error-looking lines (a compiler's, git's), else the
        last lines of output."""
        lines = [ln.strip() for ln in (self.err + "\n" + self.out).splitlines() if ln.strip()]
        hits = [ln for ln in lines if _ERROR_WORDS.search(ln)]
        return " | ".join(hits[:limit] if hits else lines[-limit:])


class TransportError(Exception):
    """The command could not be run on the host; the message is operator-facing."""


class HostKeyRefused(TransportError):
    """The host's key is not in known_hosts or differs from it; we never accept it silently."""


class HostUnreachable(TransportError):
    """Connecting, authenticating or keeping the connection failed."""


class CommandTimeout(TransportError):
    """The command did not finish in time; it was killed on the host."""


class Transport(Protocol):
    host: str

    async def run(
        self,
        argv: list[str],
        timeout: float,
        *,
        stdin: bytes | None = None,
        cwd: str | None = None,
        on_output: OutputCallback | None = None,
    ) -> CommandResult: ...

    async def close(self) -> None: ...


def remote_command(argv: list[str], cwd: str | None = None, *, watchdog: bool = True) -> str:
    """The exact text sent to the remote shell: every argument shell-quoted."""
    if not argv:
        raise ValueError("empty command")
    inner = shlex.join(argv)
    if watchdog:
        inner = shlex.join(["sh", "-c", _WATCHDOG, "forge-run", *argv])
    if cwd:
        return f"cd {_quote_path(cwd)} && exec {inner}"
    return f"exec {inner}"


def _quote_path(path: str) -> str:
    # "~/x" must still expand on the remote side: keep the "~/" outside the quotes.
    if path == "~":
        return "~"
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


async def _pump(
    reader: asyncio.StreamReader | asyncssh.SSHReader[bytes],
    sink: bytearray,
    name: str,
    on_output: OutputCallback | None,
) -> None:
    """Collect a stream in chunks (binary output such as a GGUF header has no newlines) and hand
    complete lines to ``on_output`` as they arrive; an endless line is cut at 4 KiB."""
    pending = bytearray()
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        sink.extend(chunk)
        if on_output is None:
            continue
        pending.extend(chunk)
        while True:
            nl = pending.find(b"\n")
            if nl < 0 and len(pending) < 4096:
                break
            cut = nl if nl >= 0 else 4096
            on_output(name, pending[:cut].decode("utf-8", errors="replace").rstrip("\r"))
            del pending[: cut + (1 if nl >= 0 else 0)]
    if on_output is not None and pending:
        on_output(name, pending.decode("utf-8", errors="replace").rstrip("\r"))


# --------------------------------------------------------------------------- local


class LocalTransport:
    """The same commands on this machine, exec'd without a shell, each in its own process group."""

    def __init__(self, host: str = "local") -> None:
        self.host = host

    async def run(
        self,
        argv: list[str],
        timeout: float,
        *,
        stdin: bytes | None = None,
        cwd: str | None = None,
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        if not argv:
            raise ValueError("empty command")
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=os.path.expanduser(cwd) if cwd else None,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            # Same outcome as a remote shell: "command not found" is exit status 127.
            return CommandResult(
                list(argv), 127, b"", f"{exc.filename or argv[0]}: not found\n".encode(), time.monotonic() - started
            )
        except (NotADirectoryError, PermissionError) as exc:
            return CommandResult(list(argv), 126, b"", f"{exc}\n".encode(), time.monotonic() - started)
        out, err = bytearray(), bytearray()

        async def collect() -> int:
            if stdin is not None and proc.stdin is not None:
                proc.stdin.write(stdin)
                await proc.stdin.drain()
                proc.stdin.close()
            assert proc.stdout is not None and proc.stderr is not None
            await asyncio.gather(
                _pump(proc.stdout, out, "stdout", on_output), _pump(proc.stderr, err, "stderr", on_output)
            )
            return await proc.wait()

        try:
            status = await asyncio.wait_for(collect(), timeout)
        except TimeoutError:
            await self._kill(proc)
            raise CommandTimeout(
                f"{self.host}: `{shlex.join(argv)}` did not finish within {timeout:g}s (killed)"
            ) from None
        except BaseException:
            await self._kill(proc)
            raise
        return CommandResult(
            list(argv), status if status >= 0 else None, bytes(out), bytes(err), time.monotonic() - started
        )

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(proc.wait(), 3.0)
        except TimeoutError:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            await proc.wait()

    async def close(self) -> None:
        return None


# --------------------------------------------------------------------------- ssh


@dataclass
class _Backoff:
    base_s: float = 1.0
    max_s: float = 30.0
    failures: int = 0
    next_at: float = 0.0
    last_error: str = ""

    def failed(self, error: str) -> None:
        self.failures += 1
        self.last_error = error
        self.next_at = time.monotonic() + min(self.max_s, self.base_s * 2 ** (self.failures - 1))

    def succeeded(self) -> None:
        self.failures = 0
        self.next_at = 0.0
        self.last_error = ""


class _Client(asyncssh.SSHClient):
    def __init__(self, owner: SshTransport) -> None:
        self._owner = owner

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost(self, exc)


@dataclass
class _Conn:
    conn: asyncssh.SSHClientConnection
    client: _Client
    opened_at: float = field(default_factory=time.monotonic)


class SshTransport:
    """One reused SSH connection per host, with keepalive, host-key checks and reconnect backoff."""

    def __init__(
        self,
        host: str,
        address: str,
        settings: SshSettings,
        *,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.host = host
        self.address = address
        self.settings = settings
        self._conn: _Conn | None = None
        self._lock = asyncio.Lock()
        self._backoff = _Backoff(backoff_base_s, backoff_max_s)
        # OpenSSH allows 10 sessions per connection by default (MaxSessions): stay under it.
        self._sessions = asyncio.Semaphore(MAX_SESSIONS)
        self.connects = 0  # how many connections were opened (reuse is observable)

    # -- connection management
    def _lost(self, client: _Client, exc: Exception | None) -> None:
        if self._conn is not None and self._conn.client is client:
            self._conn = None

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def _connection(self, deadline: float) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._conn is not None:
                return self._conn.conn
            wait = self._backoff.next_at - time.monotonic()
            if wait > 0:
                if time.monotonic() + wait >= deadline:
                    raise HostUnreachable(
                        f"{self.host}: not reconnecting for another {wait:.1f}s (backoff after "
                        f"{self._backoff.failures} failure(s)); last error: {self._backoff.last_error}"
                    )
                await asyncio.sleep(wait)
            try:
                conn, client = await self._open(
                    max(0.1, min(self.settings.connect_timeout_s, deadline - time.monotonic()))
                )
            except TransportError as exc:
                self._backoff.failed(str(exc))
                raise
            self._backoff.succeeded()
            self._conn = _Conn(conn, client)
            self.connects += 1
            return conn

    async def _open(self, timeout: float) -> tuple[asyncssh.SSHClientConnection, _Client]:
        s = self.settings
        known_hosts = Path(os.path.expanduser(s.known_hosts))
        where = self.address if s.port == 22 else f"[{self.address}]:{s.port}"
        if not known_hosts.exists():
            raise HostKeyRefused(
                f"{self.host}: known_hosts file {known_hosts} does not exist, so the key of {where} cannot be "
                f"verified; refusing to connect (check the key, then add it: ssh-keyscan -p {s.port} {self.address})"
            )
        clients: list[_Client] = []

        def factory() -> _Client:
            c = _Client(self)
            clients.append(c)
            return c

        options: dict[str, object] = {
            "port": s.port,
            "username": s.user,
            "known_hosts": str(known_hosts),
            "connect_timeout": timeout,
            "login_timeout": timeout,
            "keepalive_interval": s.keepalive_s,
            "keepalive_count_max": 3,
            "client_factory": factory,
        }
        if s.key_file:
            options["client_keys"] = [os.path.expanduser(s.key_file)]
        try:
            conn = await asyncio.wait_for(asyncssh.connect(self.address, **options), timeout + 1.0)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyRefused(await self._host_key_message(known_hosts, where, str(exc))) from None
        except asyncssh.PermissionDenied as exc:
            raise HostUnreachable(
                f"{self.host}: {s.user}@{where} refused our key ({exc.reason}); "
                f"key: {s.key_file or 'ssh agent / default keys'}"
            ) from None
        except TimeoutError:
            raise HostUnreachable(f"{self.host}: no SSH answer from {where} within {timeout:g}s") from None
        except asyncssh.Error as exc:
            raise HostUnreachable(f"{self.host}: SSH to {where} failed: {exc.reason}") from None
        except OSError as exc:
            raise HostUnreachable(f"{self.host}: cannot reach {where}: {exc.strerror or exc}") from None
        return conn, clients[-1]

    async def _host_key_message(self, known_hosts: Path, where: str, detail: str) -> str:
        s = self.settings
        try:
            trusted = asyncssh.read_known_hosts(str(known_hosts)).match(self.address, "", s.port)[0]
        except (OSError, ValueError):
            trusted = []
        offered = ""
        try:
            key = await asyncio.wait_for(asyncssh.get_server_host_key(self.address, s.port), s.connect_timeout_s)
            if key is not None:
                offered = f" The server offered {key.get_algorithm()} {key.get_fingerprint()}."
        except (TimeoutError, OSError, asyncssh.Error):
            pass
        if trusted:
            fps = ", ".join(k.get_fingerprint() for k in trusted)
            return (
                f"{self.host}: HOST KEY CHANGED for {where}: known_hosts ({known_hosts}) trusts {fps}.{offered} "
                f"Refusing to connect: this can be a reinstalled host or someone in the middle. "
                f"Check the new key, then replace the old entry (ssh-keygen -R '{where}' -f {known_hosts})."
            )
        return (
            f"{self.host}: unknown host key for {where}: no entry in {known_hosts}.{offered} Refusing to connect "
            f"without a verified key; check the fingerprint on the host, then add it "
            f"(ssh-keyscan -p {s.port} {self.address} >> {known_hosts}). ({detail})"
        )

    def _drop(self) -> None:
        c, self._conn = self._conn, None
        if c is not None:
            c.conn.abort()

    # -- commands
    async def run(
        self,
        argv: list[str],
        timeout: float,
        *,
        stdin: bytes | None = None,
        cwd: str | None = None,
        on_output: OutputCallback | None = None,
    ) -> CommandResult:
        async with self._sessions:
            return await self._run(argv, timeout, stdin=stdin, cwd=cwd, on_output=on_output)

    async def _run(
        self,
        argv: list[str],
        timeout: float,
        *,
        stdin: bytes | None,
        cwd: str | None,
        on_output: OutputCallback | None,
    ) -> CommandResult:
        started = time.monotonic()
        deadline = started + timeout
        conn = await self._connection(deadline)
        # With input to send, stdin cannot double as the watchdog's lifeline: such commands are
        # short writers (cat > file) and end when the input does.
        command = remote_command(argv, cwd, watchdog=stdin is None)
        out, err = bytearray(), bytearray()
        proc: asyncssh.SSHClientProcess[bytes] | None = None

        async def collect() -> int | None:
            nonlocal proc
            proc = await conn.create_process(command, encoding=None)
            if stdin is not None:
                proc.stdin.write(stdin)
                proc.stdin.write_eof()
            await asyncio.gather(
                _pump(proc.stdout, out, "stdout", on_output), _pump(proc.stderr, err, "stderr", on_output)
            )
            await proc.wait_closed()
            return proc.exit_status

        try:
            status = await asyncio.wait_for(collect(), max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            self._close_proc(proc)
            if proc is None:
                # The channel never opened: the link is most likely gone.
                self._drop()
                raise HostUnreachable(f"{self.host}: no answer within {timeout:g}s (connection dropped)") from None
            raise CommandTimeout(
                f"{self.host}: `{shlex.join(argv)}` did not finish within {timeout:g}s (killed on the host)"
            ) from None
        except asyncssh.ChannelOpenError as exc:
            self._drop()
            raise HostUnreachable(f"{self.host}: cannot open an SSH session: {exc.reason}") from None
        except (asyncssh.ConnectionLost, asyncssh.DisconnectError, ConnectionError, BrokenPipeError) as exc:
            self._drop()
            raise HostUnreachable(f"{self.host}: SSH connection lost: {exc}") from None
        except BaseException:
            self._close_proc(proc)
            raise
        if status is not None and status < 0:
            status = None
        return CommandResult(list(argv), status, bytes(out), bytes(err), time.monotonic() - started)

    @staticmethod
    def _close_proc(proc: asyncssh.SSHClientProcess[bytes] | None) -> None:
        # Closing the channel ends the watchdog's stdin; it kills the command's process group.
        if proc is not None:
            proc.close()

    def forget_connection(self) -> None:
        """Drop the connection (e.g. after a probe timed out on a dead link); the next run reconnects."""
        self._drop()

    async def close(self) -> None:
        c, self._conn = self._conn, None
        if c is not None:
            c.conn.close()
            try:
                await asyncio.wait_for(c.conn.wait_closed(), 2.0)
            except (TimeoutError, OSError, asyncssh.Error):
                c.conn.abort()


def transport_for(name: str, host: Host, *, backoff_max_s: float = 30.0) -> Transport:
    if host.transport == "local":
        return LocalTransport(name)
    return SshTransport(name, host.address, host.ssh, backoff_max_s=backoff_max_s)
