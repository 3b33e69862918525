"""The benchmark run: four targets side by side, in one run, on loopback.

1. ``direct``: the load generator talks to the fast upstream itself (the baseline);
2. ``floor``: through the bare asyncio forwarding proxy (``bench.floor``), the practical floor;
3. ``gateway``: through ``forge-tui serve`` (telemetry, SQLite history, thinking policy, routing,
   state dir and audit all on), in its own process;
4. ``console``: through ``forge-tui --config`` (the Textual console with the gateway embedded in
   the same process and event loop, refreshing its panes) in a pseudo-terminal, while the
   benchmark presses a key every 250 ms and times the answer.

Placement on the CPUs: with two or more CPUs the system under test is pinned alone on CPU 0;
the upstream, the load generator and this orchestrator share CPU 1. The direct target measures
exactly the CPU-1 side, so its throughput is the ceiling of what the generator can drive; the
floor and the gateway must stay well below it for their figures to be theirs.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import platform
import pty
import shutil
import signal
import socket
import struct
import sys
import tempfile
import termios
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .catalog import ROLE, write_catalog
from .console_host import ACK_ENV, PROBE_BYTES
from .load import LoadSpec, percentile
from .proc import ForeignLoad, cpu_seconds, pin_pid, pin_to_cpu, rss_mb

__all__ = ["MODES", "OPTIONAL_TARGETS", "REQUIRED_KEYS", "TARGETS", "Sizes", "run_benchmark"]

REPO = Path(__file__).resolve().parent.parent
Phase = dict[str, Any]  # one load phase's result, as the load generator reports it (LoadResult as JSON)
TARGETS = ("direct", "floor", "gateway", "console")
# Measured on request (--targets): the thinnest aiohttp proxy, to split the gateway's cost into
# what the framework costs and what forge's own work costs.
OPTIONAL_TARGETS = ("aiohttp",)
REQUIRED_KEYS = (
    "added_p50_ms_c1",
    "added_p99_ms_c8",
    "rps_c32_gateway",
    "rps_c32_direct",
    "rps_c32_floor",
    "console_cost_pct",
    "ttfc_added_p50_ms_c8",
    "rss_mb_after_100k",
    "rss_growth_mb_second_half",
    "startup_s",
)
# Shown after the required keys in the table and in RESULTS.md.
EXTRA_KEYS = (
    "console_cost_pct_cpu",
    "console_key_p50_ms",
    "console_key_p99_ms",
    "chunk_added_p50_ms_gateway",
    "stream_batched_pct_gateway",
    "cpu_ms_per_req_gateway",
    "cpu_ms_per_req_console",
    "cpu_ms_per_req_floor",
    "rps_c32_burst_gateway",
    "rps_c32_burst_floor",
    "cpu_pct_c32_floor",
    "cpu_pct_c32_gateway",
    "cpu_capacity_ratio_gateway_floor",
    "loadgen_headroom_x",
    "foreign_cpu_pct",
)
STREAM_EVENTS = 8  # SSE events the upstream sends per stream (the last one also carries [DONE])
CHUNK_GAP_MS = 2.0
STARTUP_CAP_S = 30.0
KEY_PERIOD_S = 0.25
KEY_TIMEOUT_S = 5.0
PTY_SIZE = (48, 160)  # rows, columns
MEM_SLICE_WARMUP = 64  # requests each memory-run slice sends before it counts (not part of the 100k)
RESUME_SETTLE_S = 0.15  # after SIGCONT, timers that fell due while stopped run before the slice starts


@dataclass(frozen=True)
class Sizes:
    """Request counts per phase (split over ``rounds`` slices); every slice also has a time cap."""

    warmup: int
    c1: int
    c8: int
    c32: int
    stream: int
    mem: int  # the memory run (RSS sampled along the way): 100k where it fits
    rounds: int  # each phase is measured in this many slices, the targets taking turns
    starts: int  # each target is started this many times; its startup time is the best of them
    phase_cap_s: float  # per slice
    mem_cap_s: float  # the memory run's own cap (all its slices); the run's overall cap may shorten it
    total_cap_s: float  # the whole run; memory-run slices are shortened to stay inside it


MODES: dict[str, Sizes] = {
    "full": Sizes(3000, 5000, 20000, 30000, 2000, 100_000, 5, 5, 20.0, 240.0, 1500.0),
    "quick": Sizes(1000, 1500, 4000, 6000, 450, 100_000, 3, 3, 6.0, 75.0, 170.0),
    "tiny": Sizes(100, 100, 200, 300, 40, 600, 2, 1, 10.0, 15.0, 150.0),  # the smoke test's machinery check
}

# (phase, concurrency, stream, the Sizes field with its request count)
PHASES: tuple[tuple[str, int, bool, str], ...] = (
    ("c1", 1, False, "c1"),
    ("c8", 8, False, "c8"),
    ("c32", 32, False, "c32"),
    ("stream8", 8, True, "stream"),
)


class BenchError(Exception):
    """Something the benchmark needs did not start or answer; the message says what."""


# ------------------------------------------------------------------ processes
@dataclass
class Server:
    """A system under test: its process, where it listens, how long it took to answer first."""

    name: str
    proc: asyncio.subprocess.Process
    port: int
    startup_s: float = 0.0
    pty_master: int | None = None
    ack_read: int | None = None
    log_path: Path | None = None
    pty_bytes: int = 0
    pty_tail: bytearray = field(default_factory=bytearray)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pause(self) -> None:
        """SIGSTOP: while another target is measured, this one takes no CPU at all."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)

    def diagnostics(self) -> str:
        out = ""
        if self.log_path is not None and self.log_path.exists():
            out += self.log_path.read_text(errors="replace")[-3000:]
        if self.pty_tail:
            out += bytes(self.pty_tail).decode(errors="replace")[-3000:]
        return out

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        if self.pty_master is not None:
            loop.remove_reader(self.pty_master)
        if self.ack_read is not None:
            loop.remove_reader(self.ack_read)
        if self.proc.returncode is None:
            self.resume()  # a stopped process would hold SIGTERM until continued
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for fd in (self.pty_master, self.ack_read):
            if fd is not None:
                os.close(fd)
        self.pty_master = self.ack_read = None


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("FORGE_ADMIN_TOKEN", "bench-admin-token")  # the admin API is on, as an operator runs it
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chat_body(stream: bool) -> str:
    body: dict[str, Any] = {
        "model": ROLE,
        "messages": [{"role": "user", "content": "Say hello in five words."}],
        "max_tokens": 32,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body)


async def _first_answer(port: int, t0: float, proc: asyncio.subprocess.Process) -> float:
    """Seconds from ``t0`` until a chat completion is answered with 200 (polled every 5 ms)."""
    body = _chat_body(False).encode()
    req = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    while time.perf_counter() - t0 < STARTUP_CAP_S:
        if proc.returncode is not None:
            raise BenchError(f"process exited with {proc.returncode} before answering")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
            try:
                writer.write(req)
                line = await asyncio.wait_for(reader.readline(), 5.0)
                await asyncio.wait_for(reader.read(), 5.0)
            finally:
                writer.close()
            if line.split(b" ")[1:2] == [b"200"]:
                return time.perf_counter() - t0
        except (TimeoutError, OSError, IndexError):
            pass
        await asyncio.sleep(0.005)
    raise BenchError(f"no 200 answer on port {port} within {STARTUP_CAP_S:.0f} s")


async def _read_listening(proc: asyncio.subprocess.Process) -> int:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), STARTUP_CAP_S)
    if not line.startswith(b"LISTENING "):
        raise BenchError(f"expected a LISTENING line, got {line[:200]!r}")
    return int(line.split()[2])


async def start_bench_process(name: str, module: str, args: list[str], cpu: int | None) -> Server:
    """Start the upstream or the floor proxy (they print LISTENING) and time the first answer."""
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        *(["--cpu", str(cpu)] if cpu is not None else []),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=str(REPO),
        env=_child_env(),
    )
    port = await _read_listening(proc)
    return Server(name, proc, port, await _first_answer(port, t0, proc))


def _forge_argv(config: Path, port: int, serve: bool, extra: tuple[str, ...] = ()) -> list[str]:
    cmd = ["serve"] if serve else []
    return [*cmd, "--config", str(config), "--port", str(port), *extra]


async def start_gateway(config: Path, port: int, cpu: int | None, workdir: Path, extra: tuple[str, ...] = ()) -> Server:
    """``forge-tui serve`` in its own process (the installed command when on PATH)."""
    exe = shutil.which("forge-tui")
    argv = [exe] if exe else [sys.executable, "-m", "forge_tui"]
    log = workdir / "gateway.log"
    t0 = time.perf_counter()
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            *_forge_argv(config, port, True, extra),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            cwd=str(workdir),
            env=_child_env(),
        )
    if cpu is not None:
        pin_pid(proc.pid, {cpu})
    srv = Server("gateway", proc, port, log_path=log)
    try:
        srv.startup_s = await _first_answer(port, t0, proc)
    except BenchError as exc:
        await srv.stop()
        raise BenchError(f"forge-tui serve: {exc}\n{srv.diagnostics()}") from None
    return srv


async def start_console(config: Path, port: int, cpu: int | None, workdir: Path, extra: tuple[str, ...] = ()) -> Server:
    """The console with its embedded gateway, in a pseudo-terminal with a real terminal driver."""
    master, slave = pty.openpty()
    rows, cols = PTY_SIZE
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    ack_r, ack_w = os.pipe()
    env = _child_env()
    env.update(
        {
            "TERM": "xterm-256color",
            "COLORTERM": "truecolor",
            ACK_ENV: str(ack_w),
            "LINES": str(rows),
            "COLUMNS": str(cols),
        }
    )
    env.pop("TEXTUAL", None)
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.console_host",
        *_forge_argv(config, port, False, extra),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        pass_fds=(ack_w,),
        start_new_session=True,
        cwd=str(workdir),
        env=env,
    )
    os.close(slave)
    os.close(ack_w)
    if cpu is not None:
        pin_pid(proc.pid, {cpu})
    os.set_blocking(master, False)
    srv = Server("console", proc, port, pty_master=master, ack_read=ack_r)

    def drain() -> None:
        # The terminal's side of the pty: read (and count) everything the console draws.
        try:
            data = os.read(master, 1 << 16)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(master)
            return
        srv.pty_bytes += len(data)
        srv.pty_tail += data
        del srv.pty_tail[:-8192]

    asyncio.get_running_loop().add_reader(master, drain)
    try:
        srv.startup_s = await _first_answer(port, t0, proc)
    except BenchError as exc:
        await srv.stop()
        raise BenchError(f"console: {exc}\n{srv.diagnostics()}") from None
    return srv


# ------------------------------------------------------------------ load phases
async def run_phase(spec: LoadSpec, on_checkpoint: Callable[[int], None] | None = None) -> dict[str, Any]:
    """One phase in a fresh load-generator process; returns its LoadResult as a dict."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.load",
        json.dumps(asdict(spec)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(REPO),
        env=_child_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    result: dict[str, Any] | None = None
    deadline = time.perf_counter() + spec.time_cap_s + 30.0
    try:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise BenchError(f"load generator did not finish within its cap ({spec.time_cap_s} s + 30 s)")
            line = await asyncio.wait_for(proc.stdout.readline(), left)
            if not line:
                break
            if line.startswith(b"CKPT ") and on_checkpoint is not None:
                on_checkpoint(int(line.split()[1]))
            elif line.startswith(b"RESULT "):
                result = json.loads(line[7:])
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if result is None:
        err = (await proc.stderr.read()).decode(errors="replace")[-2000:]
        raise BenchError(f"load generator failed (exit {proc.returncode}): {err}")
    return result


@dataclass
class TargetResult:
    name: str
    startup_s: float  # the best of ``startups`` (other programs on the machine can only add to it)
    startups: list[float] = field(default_factory=list)
    phases: dict[str, Phase] = field(default_factory=dict)
    cpu_ms_per_req: dict[str, float] = field(default_factory=dict)
    cpu_pct: dict[str, float] = field(default_factory=dict)  # of one core: ~100 when the server is the limit
    rss_mb_warm: float = 0.0
    rss_mb_mid: float = 0.0
    rss_mb_end: float = 0.0
    rss_samples: list[tuple[int, float]] = field(default_factory=list)
    mem_requests: int = 0
    key_latency_ms: list[float] = field(default_factory=list)
    key_misses: int = 0
    pty_bytes: int = 0


def _expire(fut: asyncio.Future[float | None]) -> None:
    if not fut.done():
        fut.set_result(None)


class KeyProber:
    """Presses F12 in the console's terminal every 250 ms and times the acknowledgement.

    It presses only while the console is being measured (``run``/``halt`` around each slice). The
    wait for an acknowledgement is a plain future with a timer, not ``asyncio.wait_for``, whose
    cancellation can be lost on Python 3.11 (a lost cancel would leave a prober pressing forever).
    """

    def __init__(self, srv: Server) -> None:
        assert srv.pty_master is not None and srv.ack_read is not None
        self.srv = srv
        self.latencies: list[float] = []
        self.misses = 0
        self._pending: asyncio.Future[float | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._halting = False
        fd = srv.ack_read
        loop = asyncio.get_running_loop()

        def on_ack() -> None:
            os.read(fd, 64)
            if self._pending is not None and not self._pending.done():
                self._pending.set_result(time.perf_counter())
            # acks of presses whose wait already ended are dropped here

        loop.add_reader(fd, on_ack)

    def run(self) -> None:
        self._halting = False
        self._task = asyncio.get_running_loop().create_task(self._press())

    async def _press(self) -> None:
        loop = asyncio.get_running_loop()
        master = self.srv.pty_master
        assert master is not None
        while not self._halting:
            fut: asyncio.Future[float | None] = loop.create_future()
            self._pending = fut
            t0 = time.perf_counter()
            os.write(master, PROBE_BYTES)
            timer = loop.call_later(KEY_TIMEOUT_S, _expire, fut)
            try:
                t1 = await fut
            finally:
                timer.cancel()
                self._pending = None
            if t1 is not None:
                self.latencies.append((t1 - t0) * 1000.0)
            elif not self._halting:
                self.misses += 1
            if not self._halting:
                await asyncio.sleep(KEY_PERIOD_S)

    async def halt(self) -> None:
        """Stop pressing; a press still waiting is neither an answer nor a miss."""
        self._halting = True
        task, self._task = self._task, None
        if self._pending is not None and not self._pending.done():
            self._pending.set_result(None)
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # our own cancellation still propagates from here

    def close(self) -> None:
        if self.srv.ack_read is not None:
            asyncio.get_running_loop().remove_reader(self.srv.ack_read)


class Target:
    """One system under test during the run: its server, its results, its CPU, its key prober."""

    def __init__(
        self, srv: Server, sizes: Sizes, load_cpu: int | None, sut_cpu: int | None, log: Callable[[str], None]
    ) -> None:
        self.srv = srv
        self.sizes = sizes
        self.load_cpu = load_cpu
        self.sut_cpu = sut_cpu
        self.log = log
        self.res = TargetResult(srv.name, srv.startup_s)
        self.prober = KeyProber(srv) if srv.pty_master is not None else None
        self.pausable = srv.name != "direct"  # the upstream serves every target

    def spec(
        self,
        concurrency: int,
        requests: int,
        stream: bool = False,
        time_cap: float | None = None,
        checkpoint_every: int = 0,
        warmup: int = 0,
    ) -> LoadSpec:
        return LoadSpec(
            host="127.0.0.1",
            port=self.srv.port,
            body=_chat_body(stream),
            stream=stream,
            concurrency=concurrency,
            requests=requests,
            time_cap_s=self.sizes.phase_cap_s if time_cap is None else time_cap,
            checkpoint_every=checkpoint_every,
            warmup=warmup,
            cpu=self.load_cpu,
        )

    async def phase(self, name: str, s: LoadSpec, on_ckpt: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Resume the server, run one load phase against it, pause it again."""
        srv, res = self.srv, self.res
        if self.pausable:
            srv.resume()
            await asyncio.sleep(RESUME_SETTLE_S)
        if self.sut_cpu is not None:
            pin_pid(srv.pid, {self.sut_cpu})  # threads started since the last phase too
        if self.prober is not None:
            self.prober.run()
        try:
            cpu0 = cpu_seconds(srv.pid)
            r = await run_phase(s, on_ckpt)
            used = cpu_seconds(srv.pid) - cpu0
        finally:
            if self.prober is not None:
                await self.prober.halt()
            if self.pausable:
                srv.pause()
        n = int(r["requests"])
        served = n + (s.warmup if n else 0)  # the slice's warm-up requests were served in the same CPU window
        res.cpu_ms_per_req[name] = 1000.0 * used / served if served else 0.0
        res.cpu_pct[name] = res.cpu_ms_per_req[name] * float(r["rps"]) / 10.0  # ms/req x req/s -> % of a core
        res.phases[name] = r
        self.log(
            f"  {srv.name:8s} {name:9s} {n:7d} req {float(r['rps']):8.0f}/s  p50 {float(r['p50_ms']):7.3f}  "
            f"p99 {float(r['p99_ms']):7.3f} ms  errors {r['errors']}"
            + (f"  ttfc p50 {float(r['ttfc_p50_ms']):.3f} ms" if s.stream else "")
        )
        if int(r["errors"]):
            self.log(f"  {srv.name}: {r['errors']} errors in {name}: statuses {r['statuses']}")
        return r

    async def warm(self) -> None:
        await self.phase("warmup", self.spec(8, self.sizes.warmup))
        await self.phase("warmup1", self.spec(1, max(50, self.sizes.warmup // 5)))
        self.res.rss_mb_warm = rss_mb(self.srv.pid)

    async def slice(self, phase: str, concurrency: int, stream: bool, requests: int, k: int) -> None:
        await self.phase(f"{phase}.{k}", self.spec(concurrency, requests, stream, warmup=max(20, 2 * concurrency)))

    def pick_best(self, phase: str, stream: bool) -> None:
        """The slice least disturbed by other work on the machine stands for the phase: the highest
        throughput (equivalently, the lowest mean latency) or, for streams, the lowest TTFC p50."""
        res = self.res
        names = [k for k in res.phases if k.startswith(phase + ".")]
        key: Callable[[str], float] = (
            (lambda k: float(res.phases[k]["ttfc_p50_ms"])) if stream else (lambda k: -float(res.phases[k]["rps"]))
        )
        best = min(names, key=key)
        res.phases[phase] = res.phases[best]
        res.cpu_ms_per_req[phase] = res.cpu_ms_per_req[best]
        res.cpu_pct[phase] = res.cpu_pct[best]

    async def memory_slice(self, k: int, requests: int, cap_s: float) -> None:
        """One slice of the memory run; RSS is sampled along the way against the running total."""
        res, srv = self.res, self.srv
        done_before = res.mem_requests
        every = max(1, self.sizes.mem // 20)

        def sample(done: int) -> None:
            res.rss_samples.append((done_before + done, rss_mb(srv.pid)))

        r = await self.phase(
            f"mem.{k}", self.spec(32, requests, time_cap=cap_s, checkpoint_every=every, warmup=MEM_SLICE_WARMUP), sample
        )
        res.mem_requests += int(r["requests"])
        res.rss_mb_end = rss_mb(srv.pid)

    def finish_memory_run(self) -> None:
        """The memory run as one phase: its slices' totals, and RSS at half way and at the end."""
        res = self.res
        names = sorted((k for k in res.phases if k.startswith("mem.")), key=lambda k: int(k.split(".")[1]))
        slices = [res.phases[k] for k in names]
        elapsed = sum(float(x["elapsed_s"]) for x in slices)
        served_k = {k: int(res.phases[k]["requests"]) + MEM_SLICE_WARMUP for k in names}
        cpu_ms = sum(res.cpu_ms_per_req[k] * served_k[k] for k in names)
        served = sum(served_k.values())
        agg = dict(slices[-1])
        agg.update(
            requests=res.mem_requests,
            errors=sum(int(x["errors"]) for x in slices),
            elapsed_s=elapsed,
            rps=res.mem_requests / elapsed if elapsed > 0 else 0.0,
            loadgen_cpu_pct=max(float(x["loadgen_cpu_pct"]) for x in slices),
        )
        res.phases["mem"] = agg
        res.cpu_ms_per_req["mem"] = cpu_ms / served if served else 0.0
        res.cpu_pct["mem"] = res.cpu_ms_per_req["mem"] * float(agg["rps"]) / 10.0
        half = res.mem_requests / 2
        mids = [rss for done, rss in res.rss_samples if done <= half]
        res.rss_mb_mid = mids[-1] if mids else res.rss_mb_warm

    def finish(self) -> TargetResult:
        if self.prober is not None:
            self.prober.close()
            self.res.key_latency_ms, self.res.key_misses = self.prober.latencies, self.prober.misses
        self.res.pty_bytes = self.srv.pty_bytes
        return self.res


# ------------------------------------------------------------------ summary
def _f(phases: dict[str, Phase], phase: str, key: str) -> float:
    return float(phases[phase][key])


def _best_mem_rps(phases: dict[str, Phase]) -> float:
    return max((float(v["rps"]) for k, v in phases.items() if k.startswith("mem.")), default=0.0)


def summarize(results: dict[str, TargetResult], mode: str, pinned: bool) -> dict[str, Any]:
    """The flat figures of the issue (each a number), the per-target detail and the budget verdicts."""
    out: dict[str, Any] = {
        "mode": mode,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "pinned": pinned,
            "processor": _cpu_model(),
        },
    }
    d = results["direct"].phases
    for name, t in results.items():
        p = t.phases
        # sustained: the best slice of the 100k-request run at c32 (slices of seconds, so each spans
        # several console refreshes; the best, because other programs can only slow a slice down)
        out[f"rps_c32_{name}"] = _best_mem_rps(p)
        out[f"rps_c32_mem_total_{name}"] = _f(p, "mem", "rps")
        out[f"rps_c32_burst_{name}"] = _f(p, "c32", "rps")  # the best short c32 slice
        out[f"rps_c8_{name}"] = _f(p, "c8", "rps")
        out[f"rps_c1_{name}"] = _f(p, "c1", "rps")
        out[f"p50_ms_c1_{name}"] = _f(p, "c1", "p50_ms")
        out[f"p99_ms_c8_{name}"] = _f(p, "c8", "p99_ms")
        out[f"cpu_ms_per_req_{name}"] = t.cpu_ms_per_req.get("mem", 0.0)
        out[f"cpu_pct_c32_{name}"] = t.cpu_pct.get("mem", 0.0)
        out[f"rss_mb_warm_{name}"] = t.rss_mb_warm
        out[f"rss_mb_end_{name}"] = t.rss_mb_end
        out[f"mem_requests_{name}"] = t.mem_requests
        out[f"startup_s_{name}"] = t.startup_s
        if name != "direct":
            out[f"added_p50_ms_c1_{name}"] = _f(p, "c1", "p50_ms") - _f(d, "c1", "p50_ms")
            out[f"added_p99_ms_c8_{name}"] = _f(p, "c8", "p99_ms") - _f(d, "c8", "p99_ms")
            out[f"ttfc_added_p50_ms_c8_{name}"] = _f(p, "stream8", "ttfc_p50_ms") - _f(d, "stream8", "ttfc_p50_ms")
            ev, dev = p["stream8"]["event_p50_ms"], d["stream8"]["event_p50_ms"]
            assert isinstance(ev, list) and isinstance(dev, list)
            later = [float(a) - float(b) for a, b in zip(ev[1:], dev[1:], strict=False)]
            out[f"chunk_added_p50_ms_{name}"] = sum(later) / len(later) if later else 0.0
            db = _f(d, "stream8", "bursts_per_stream")
            out[f"stream_batched_pct_{name}"] = (
                max(0.0, 100.0 * (1.0 - _f(p, "stream8", "bursts_per_stream") / db)) if db else 0.0
            )
    g = results.get("gateway")
    c = results.get("console")
    if g is not None:
        out["added_p50_ms_c1"] = out["added_p50_ms_c1_gateway"]
        out["added_p99_ms_c8"] = out["added_p99_ms_c8_gateway"]
        out["ttfc_added_p50_ms_c8"] = out["ttfc_added_p50_ms_c8_gateway"]
        out["rss_mb_after_100k"] = g.rss_mb_end
        out["rss_growth_mb_second_half"] = g.rss_mb_end - g.rss_mb_mid
        out["startup_s"] = g.startup_s
    if g is not None and c is not None:
        # Sustained throughput from the 100k-request run: its slices span several of the console's
        # refreshes, so they see its real share (a short slice may fall between two refreshes).
        rg, rc = _best_mem_rps(g.phases), _best_mem_rps(c.phases)
        out["console_cost_pct"] = 100.0 * (1.0 - rc / rg) if rg else 0.0
        # The same cost in CPU: capacity lost when each request costs the console's CPU time instead of
        # the headless gateway's. It does not move when other processes take the CPU away mid-run.
        cg, cc = g.cpu_ms_per_req.get("mem", 0.0), c.cpu_ms_per_req.get("mem", 0.0)
        out["console_cost_pct_cpu"] = 100.0 * (1.0 - cg / cc) if cc else 0.0
        keys = sorted(c.key_latency_ms)
        out["console_key_p50_ms"] = percentile(keys, 50)
        out["console_key_p99_ms"] = percentile(keys, 99)
        out["console_key_presses"] = len(keys) + c.key_misses
        out["console_key_misses"] = c.key_misses
        out["console_pty_kb_per_s"] = (
            c.pty_bytes / 1024 / max(1e-9, sum(float(ph["elapsed_s"]) for ph in c.phases.values()))
        )
    if g is not None and "floor" in results:
        # CPU capacity: requests per second each could serve with a whole CPU to itself. When the
        # floor's CPU is not busy at c32 (the load side is the limit), its measured req/s is only a
        # lower bound, and this ratio is the stricter reading of the throughput budget.
        cf, cg = results["floor"].cpu_ms_per_req.get("mem", 0.0), g.cpu_ms_per_req.get("mem", 0.0)
        out["cpu_capacity_ratio_gateway_floor"] = cf / cg if cg else 0.0
    if "floor" in results:
        out["loadgen_headroom_x"] = out["rps_c32_direct"] / max(1e-9, float(out["rps_c32_floor"]))
    out["budget"] = budget(out)
    out["targets"] = {name: asdict(t) for name, t in results.items()}
    return out


def budget(s: dict[str, Any]) -> dict[str, Phase]:
    """The issue's budget, item by item: value, limit, verdict (absent figures are not judged)."""

    def get(k: str) -> float | None:
        v = s.get(k)
        return float(v) if isinstance(v, (int, float)) else None

    items: dict[str, Phase] = {}

    def check(name: str, value: float | None, limit: float, ok: bool | None, note: str = "") -> None:
        if value is not None and ok is not None:
            items[name] = {"value": round(value, 3), "limit": limit, "ok": ok, **({"note": note} if note else {})}

    v = get("added_p50_ms_c1")
    check("added_p50_ms_c1 <= 0.5", v, 0.5, None if v is None else v <= 0.5)
    v = get("added_p99_ms_c8")
    check("added_p99_ms_c8 <= 5", v, 5.0, None if v is None else v <= 5.0)
    g, f = get("rps_c32_gateway"), get("rps_c32_floor")
    if g is not None and f:
        busy = get("cpu_pct_c32_floor") or 0.0
        cap = get("cpu_capacity_ratio_gateway_floor")
        note = f"{g:.0f} vs {f:.0f} req/s"
        if busy < 90.0:
            note += f"; the floor's CPU was {busy:.0f} % busy, so its req/s is a lower bound" + (
                f" (CPU-capacity ratio {cap:.2f})" if cap is not None else ""
            )
        check("rps_c32_gateway >= 0.5 x floor", g / f, 0.5, g / f >= 0.5, note)
    v = get("console_cost_pct")
    misses = get("console_key_misses")
    cpu_cost = get("console_cost_pct_cpu")
    check(
        "console_cost_pct <= 10",
        v,
        10.0,
        None if v is None else v <= 10.0,
        ""
        if cpu_cost is None
        else f"from CPU per request: {cpu_cost:.1f} %, the steadier reading when other programs share the CPU",
    )
    if misses is not None:
        check(
            "console answers every key under load (presses unanswered)",
            misses,
            0.0,
            misses == 0,
            f"{get('console_key_presses') or 0:.0f} presses, answer p50 {get('console_key_p50_ms') or 0:.1f} ms, "
            f"p99 {get('console_key_p99_ms') or 0:.1f} ms",
        )
    v = get("ttfc_added_p50_ms_c8")
    check("ttfc_added_p50_ms_c8 <= 1", v, 1.0, None if v is None else v <= 1.0)
    v = get("stream_batched_pct_gateway")
    check("chunks not batched (gateway, % fewer reads than direct) <= 10", v, 10.0, None if v is None else v <= 10.0)
    n = get("mem_requests_gateway")
    v = get("rss_mb_after_100k")
    note = "" if n is not None and n >= 100_000 else f"memory run was {n or 0:.0f} requests, not 100k"
    check("rss_mb_after_100k <= 150", v, 150.0, None if v is None else v <= 150.0, note)
    v = get("rss_growth_mb_second_half")
    check("rss_growth_mb_second_half <= 3 (no growth)", v, 3.0, None if v is None else v <= 3.0, note)
    v = get("startup_s")
    check("startup_s <= 1.5", v, 1.5, None if v is None else v <= 1.5)
    trial = s.get("trial")
    if isinstance(trial, dict):
        n = int(trial.get("records", 0))
        big = "" if n >= 10_000_000 else f"over {n:,} records, not 10 M"
        check("trial report over the history <= 2 s", float(trial["report_s"]), 2.0, trial["report_s"] <= 2.0, big)
        check("Trial screen open <= 1 s", float(trial["screen_s"]), 1.0, trial["screen_s"] <= 1.0, big)
        v = float(trial["bytes_per_record_after_rollup"])
        check("history bytes per record after rollup <= 60", v, 60.0, v <= 60.0, big)
        lost = float(trial["paced_dropped"]) + float(trial["dropped"])
        check(
            "history writer at 5,000 records/s: dropped",
            lost,
            0.0,
            lost == 0,
            f"rate held {float(trial['paced_rate']):.0f}/s, peak backlog {int(trial['paced_peak_pending']):,}",
        )
    d = get("rps_c32_direct")
    if d is not None and g:
        # not a budget item: the figures above only mean something if this holds
        check("sanity: load generator not the limit (direct c32 >= 1.5 x gateway c32)", d / g, 1.5, d / g >= 1.5)
    return items


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(s: dict[str, Any]) -> str:
    """The human summary printed at the end of a run."""
    targets = s["targets"]
    assert isinstance(targets, dict)
    rows = [("", *targets.keys())]

    def row(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        rows.append((label, *(fn(t) for t in targets.values())))

    def ph(phase: str, key: str, fmt: str = "{:.3f}") -> Callable[[dict[str, Any]], str]:
        return lambda t: fmt.format(float(t["phases"][phase][key]))

    def pcts(phase: str) -> Callable[[dict[str, Any]], str]:
        return lambda t: " / ".join(f"{float(t['phases'][phase][k]):.2f}" for k in ("p50_ms", "p95_ms", "p99_ms"))

    row("startup to first answer (s, best)", lambda t: f"{float(t['startup_s']):.3f}")
    row("startup, every start (s)", lambda t: " ".join(f"{float(x):.2f}" for x in t["startups"]))
    for c in ("c1", "c8", "c32"):
        row(f"{c}: req/s" + (" (best short slice)" if c == "c32" else ""), ph(c, "rps", "{:.0f}"))
        row(f"{c}: p50 / p95 / p99 (ms)", pcts(c))
    row("c32 sustained: req/s (best memory-run slice)", lambda t: "{:.0f}".format(_best_mem_rps(t["phases"])))
    row("c32 sustained: req/s (whole memory run)", ph("mem", "rps", "{:.0f}"))
    row(
        "stream c8: TTFC p50 / p99 (ms)",
        lambda t: " / ".join(f"{float(t['phases']['stream8'][k]):.2f}" for k in ("ttfc_p50_ms", "ttfc_p99_ms")),
    )
    row(
        "stream c8: last event p50 (ms)",
        lambda t: (
            f"{float(t['phases']['stream8']['event_p50_ms'][-1]):.2f}"
            if t["phases"]["stream8"]["event_p50_ms"]
            else "-"
        ),
    )
    row("stream c8: reads with events/stream", ph("stream8", "bursts_per_stream", "{:.2f}"))
    row("CPU per request (ms, memory run)", lambda t: f"{float(t['cpu_ms_per_req']['mem']):.3f}")
    row("server CPU busy, memory run (% of a core)", lambda t: f"{float(t['cpu_pct']['mem']):.0f}")
    row("RSS after warm-up (MB)", lambda t: f"{float(t['rss_mb_warm']):.1f}")
    row("memory run requests", lambda t: f"{int(t['mem_requests'])}")
    row("RSS at half / end (MB)", lambda t: f"{float(t['rss_mb_mid']):.1f} / {float(t['rss_mb_end']):.1f}")
    # every phase actually run once: the slices and warm-ups, not the phases that stand for them
    row(
        "errors (all requests)",
        lambda t: str(sum(int(p["errors"]) for k, p in t["phases"].items() if "." in k or k.startswith("warmup"))),
    )
    row("load generator CPU, memory run (%)", ph("mem", "loadgen_cpu_pct", "{:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=False))
        )
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    for k in REQUIRED_KEYS + EXTRA_KEYS:
        if k in s:
            lines.append(f"{k:32s} {float(s[k]):10.3f}")
    lines.append("")
    b = s["budget"]
    assert isinstance(b, dict)
    for name, item in b.items():
        lines.append(
            f"[{'PASS' if item['ok'] else 'FAIL'}] {name}: {item['value']}"
            + (f"  ({item['note']})" if item.get("note") else "")
        )
    return "\n".join(lines)


def markdown(s: dict[str, Any], command: str) -> str:
    """The run as a Markdown page (bench/RESULTS.md, copied into the README's performance section)."""
    m = s["machine"]
    assert isinstance(m, dict)
    b = s["budget"]
    assert isinstance(b, dict)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "# Benchmark results",
        "",
        f"Last run: `{command}` on {when}, mode `{s['mode']}`, wall time {float(s['wall_s']):.0f} s.",
        f"Machine: {m['cpus']} CPUs ({m['processor']}), Python {m['python']}, {m['platform']}; "
        + (
            "the system under test pinned alone on one CPU, upstream + load generator on the other."
            if m["pinned"]
            else "no CPU pinning."
        ),
        f"Other processes used {float(s.get('foreign_cpu_pct', 0.0)):.0f} % of one CPU on average during the run "
        "(from /proc/stat, the benchmark's own processes excluded): the more, the noisier the figures. "
        "Absolute figures drift between runs; the ratios between targets, measured in the same run, are what "
        "the budget judges.",
        "",
        "## Budget",
        "",
        "| item | value | verdict |",
        "|---|---:|---|",
    ]
    for name, item in b.items():
        note = f" ({item['note']})" if item.get("note") else ""
        lines.append(f"| {name} | {item['value']} | {'pass' if item['ok'] else '**fail**'}{note} |")
    lines += [
        "",
        "## How it was measured",
        "",
        "One command starts everything on loopback: a fast OpenAI-compatible upstream (`bench/upstream.py`, "
        "answers at once; streams 8 SSE events 2 ms apart), and four targets: `direct` (the upstream itself), "
        "`floor` (a bare asyncio pass-through proxy, `bench/floor.py`), `gateway` (`forge-tui serve` with "
        "telemetry, SQLite history, thinking policy, routing, state dir and audit on) and `console` "
        "(`forge-tui --config`: the Textual console with the gateway embedded, in a pseudo-terminal, "
        "refreshing its panes while F12 is pressed every 250 ms and its answer timed). A raw asyncio "
        "keep-alive client in its own process drives them (`bench/load.py`).",
        "",
        f"Each phase is run in {s.get('rounds', 1)} slices with the targets taking turns (the others paused "
        "with SIGSTOP, so they cost nothing), and each target's best slice stands for the phase: other "
        "programs on the machine can only slow a slice down. CPU per request comes from each server "
        f"process's CPU clock; RSS from /proc. The memory run is {MODES[str(s['mode'])].mem:,} requests at "
        f"concurrency 32 per target (fewer only if the run's time cap cut it short; the table says), also "
        f"in turns, RSS sampled every {max(1, MODES[str(s['mode'])].mem // 20):,}; its best slice (seconds "
        "long, so it spans several console refreshes) is the sustained c32 throughput that the throughput "
        "budget and the console cost are judged on.",
    ]
    lines += [
        "",
        "## Figures",
        "",
        "```",
        table(s).split("\n\n")[0],
        "```",
        "",
        "Key figures (JSON keys of `--json`):",
        "",
        "| key | value |",
        "|---|---:|",
    ]
    for k in REQUIRED_KEYS + EXTRA_KEYS:
        if k in s:
            lines.append(f"| `{k}` | {float(s[k]):.3f} |")
    if "failover_md" in s:
        lines += ["", str(s["failover_md"]).rstrip("\n")]
    if "slow_clients_md" in s:
        lines += ["", str(s["slow_clients_md"]).rstrip("\n")]
    if "trial_md" in s:
        lines += ["", str(s["trial_md"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the run
def _cpus() -> tuple[int | None, int | None]:
    """(CPU for the system under test, CPU for upstream + load generator + orchestrator)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


async def run_benchmark(
    mode: str = "quick",
    targets: tuple[str, ...] = TARGETS,
    pin: bool = True,
    forge_args: tuple[str, ...] = (),
    log: Callable[[str], None] = print,
    failover_s: float = 0.0,
    slow_clients: int = 0,
    trial_records: int = 0,
) -> dict[str, Any]:
    """Measure ``targets`` side by side; ``forge_args`` are appended to both forge-tui commands.

    Every target is started (and its startup timed) and warmed up in turn, then paused with
    SIGSTOP. Each phase is measured in ``rounds`` slices with the targets taking turns (only the
    one being measured runs), so work that other programs put on the machine falls on all of them
    alike; the best slice of each target stands for the phase. The memory runs come last, one
    target at a time.
    """
    sizes = MODES[mode]
    sut_cpu, side_cpu = _cpus() if pin else (None, None)
    pin_to_cpu(side_cpu)
    order = ("direct", "floor", *OPTIONAL_TARGETS, "gateway", "console")
    names = tuple(t for t in order if t in targets or t == "direct")  # every "added" figure is relative to direct
    t_run = time.perf_counter()
    foreign = ForeignLoad()
    loop = asyncio.get_running_loop()
    me = asyncio.current_task()
    live: dict[str, Target] = {}
    servers: list[Server] = []

    def on_sigterm() -> None:
        # e.g. from `timeout`: let every paused server run again at once, then unwind through the
        # finally blocks that stop them all
        for srv in servers:
            srv.resume()
        if me is not None:
            me.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        with tempfile.TemporaryDirectory(prefix="forge-bench-") as tmp:
            work = Path(tmp)
            upstream = await start_bench_process(
                "direct",
                "bench.upstream",
                ["--chunks", str(STREAM_EVENTS), "--chunk-gap-ms", str(CHUNK_GAP_MS)],
                side_cpu,
            )
            servers.append(upstream)
            log(
                f"upstream on 127.0.0.1:{upstream.port} (pid {upstream.pid}); SUT CPU {sut_cpu}, "
                f"load/upstream CPU {side_cpu}; mode {mode}"
            )
            try:
                for name in names:
                    startups = [upstream.startup_s]
                    srv = upstream
                    if name != "direct":
                        startups = []
                        for attempt in range(sizes.starts):  # earlier starts are stopped again: a restart
                            srv = await _start_target(name, upstream.port, sut_cpu, work, forge_args)
                            startups.append(srv.startup_s)
                            if attempt < sizes.starts - 1:
                                await srv.stop()
                        servers.append(srv)
                    log(f"{name}: first answer after {', '.join(f'{x:.3f}' for x in startups)} s (pid {srv.pid})")
                    live[name] = Target(srv, sizes, side_cpu, sut_cpu if name != "direct" else None, log)
                    live[name].res.startups = startups
                    live[name].res.startup_s = min(startups)
                    await live[name].warm()
                for phase, conc, stream, field_name in PHASES:
                    per_slice = max(1, getattr(sizes, field_name) // sizes.rounds)
                    for k in range(sizes.rounds):
                        turn = names[k % len(names) :] + names[: k % len(names)]
                        for name in turn:
                            await live[name].slice(phase, conc, stream, per_slice, k)
                    for t in live.values():
                        t.pick_best(phase, stream)
                # The memory run, also in turns: its total throughput is the sustained c32 figure.
                deadline = t_run + sizes.total_cap_s
                shares = [
                    sizes.mem // sizes.rounds + (1 if k < sizes.mem % sizes.rounds else 0) for k in range(sizes.rounds)
                ]
                left_slices = sizes.rounds * len(names)
                for k, share in enumerate(shares):
                    turn = names[k % len(names) :] + names[: k % len(names)]
                    for name in turn:
                        # what is left of the run's time, spread over the slices still to come
                        cap = min(sizes.mem_cap_s / sizes.rounds, (deadline - time.perf_counter()) / left_slices)
                        await live[name].memory_slice(k, share, max(1.0, cap))
                        left_slices -= 1
                for t in live.values():
                    t.finish_memory_run()
            finally:
                for srv in reversed(servers):
                    await srv.stop()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
    results = {name: t.finish() for name, t in live.items()}
    summary = summarize(results, mode, sut_cpu is not None)
    summary["forge_args"] = " ".join(forge_args)
    summary["rounds"] = sizes.rounds
    summary["foreign_cpu_pct"] = foreign.stop()
    summary["wall_s"] = time.perf_counter() - t_run
    if failover_s > 0:  # the failover section (bench.failover): its own run, after the throughput figures
        from .failover import markdown as failover_markdown
        from .failover import run_failover

        res = await run_failover(failover_s, log)
        summary["failover"] = [asdict(r) for r in res]
        summary["failover_md"] = failover_markdown(res, failover_s)
    if slow_clients > 0:  # the slow-clients section (bench.slowclients): good-client p99 under a header trickle
        from .slowclients import markdown as slow_markdown
        from .slowclients import run_slow_clients

        sr = await run_slow_clients(slow_clients, log=log)
        summary["slow_clients"] = asdict(sr)
        summary["slow_clients_md"] = slow_markdown(sr)
    if trial_records > 0:  # the trial-history section (bench.trial): writer, disk, report and screen over N records
        summary["trial"] = await run_trial_bench(trial_records, log)
        from .trial import section

        summary["trial_md"] = section(summary["trial"])
        summary["budget"] = budget(summary)  # judged with the trial's figures too
    return summary


TRIAL_CAP_S = 7200.0  # 10 M records take ~4 minutes on 2 cores; a run past two hours is stuck


async def run_trial_bench(records: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``python -m bench.trial --records N`` in its own process (its writer thread and its Textual
    screen stay out of this one); its figures."""
    with tempfile.TemporaryDirectory(prefix="forge-bench-trial-") as tmp:
        out = Path(tmp) / "trial.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.trial",
            "--records",
            str(records),
            "--pace-s",
            str(min(20.0, records / 5000.0)),
            "--json",
            str(out),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(REPO),
            env=_child_env(),
        )
        assert proc.stderr is not None
        log(f"trial history: {records:,} records through the real writer")
        try:
            _, err = await asyncio.wait_for(proc.communicate(), TRIAL_CAP_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise BenchError(f"bench.trial did not finish within {TRIAL_CAP_S:.0f} s") from None
        except BaseException:  # stopped (SIGTERM, Ctrl-C): the child goes too
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0 or not out.is_file():
            raise BenchError(f"bench.trial failed (exit {proc.returncode}): {err.decode(errors='replace')[-2000:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


async def _start_target(
    name: str, upstream_port: int, cpu: int | None, work: Path, forge_args: tuple[str, ...]
) -> Server:
    if name in ("floor", "aiohttp"):
        module = "bench.floor" if name == "floor" else "bench.aiohttp_floor"
        return await start_bench_process(name, module, ["--upstream", f"127.0.0.1:{upstream_port}"], cpu)
    port = _free_port()
    cfg = write_catalog(work / f"{name}.yaml", f"http://127.0.0.1:{upstream_port}", work / f"state-{name}", port)
    starter = start_gateway if name == "gateway" else start_console
    return await starter(cfg, port, cpu, work, forge_args)
