"""Profile the gateway under the benchmark's load with py-spy and print where its time goes.

``python -m bench.profile [--console] [--seconds 15] [--concurrency 32] [--stream] [--raw PATH]
[--forge-args=ARGS]``

Starts the fast upstream and ``forge-tui serve`` (or the console, with ``--console``) exactly as
the benchmark does, drives it with the load generator, samples it with ``py-spy record`` (needs
``pip install py-spy``; not a dependency of forge-tui) and prints the hottest lines (self time)
and forge_tui lines (inclusive time) as a percentage of the samples in which a thread was running
(about the process's CPU time). Time in socket ``send``/``recv`` is kernel time charged to Python.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from .catalog import write_catalog
from .load import LoadSpec
from .run import (
    CHUNK_GAP_MS,
    STREAM_EVENTS,
    BenchError,
    _chat_body,
    _cpus,
    _free_port,
    pin_to_cpu,
    run_phase,
    start_bench_process,
    start_console,
    start_gateway,
)

__all__ = ["fold", "main"]


LAYERS: tuple[tuple[str, str], ...] = (
    # (substring of the innermost frame, layer): the first match wins
    ("EpollSelector.select", "event loop: epoll wait"),
    ("selector_events.py", "socket send/recv (kernel time seen from Python)"),
    ("forge_tui/telemetry", "forge telemetry"),
    ("forge_tui/console", "forge console (Textual app code)"),
    ("forge_tui/", "forge gateway code (own lines)"),
    ("textual/", "Textual"),
    ("rich/", "Rich (rendering)"),
    ("aiohttp/client", "aiohttp client"),
    ("aiohttp/connector", "aiohttp client"),
    ("aiohttp/web", "aiohttp server"),
    ("aiohttp/http", "aiohttp HTTP parse/write"),
    ("aiohttp/", "aiohttp other"),
    ("json/", "json encode/decode"),
    ("sqlite3", "sqlite"),
    ("asyncio/", "asyncio machinery (tasks, futures, handles)"),
    ("threading.py", "threads (locks, conditions)"),
)


def _layer(frame: str) -> str:
    for key, name in LAYERS:
        if key in frame:
            return name
    return "other: " + frame.split(" (", 1)[-1].split(":", 1)[0].rstrip(")")


def fold(raw: str, top: int = 30) -> str:
    """Summarize py-spy's raw (collapsed) output as percentages of the samples where a thread ran.

    Three views: time by layer (innermost frame), forge_tui lines by inclusive time (each line
    counted once per sample, whatever it called), and the hottest lines by self time.
    """
    layers: collections.Counter[str] = collections.Counter()
    forge_incl: collections.Counter[str] = collections.Counter()
    self_t: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n_s = line.rpartition(" ")
        if not stack or not n_s.isdigit():
            continue
        n = int(n_s)
        total += n
        frames = stack.split(";")
        self_t[frames[-1]] += n
        layers[_layer(frames[-1])] += n
        for f in set(frames):
            if "forge_tui/" in f:
                forge_incl[f] += n
    if not total:
        return "no samples"

    def pct(c: collections.Counter[str], k: int) -> list[str]:
        return [f"  {100 * n / total:5.1f}%  {f}" for f, n in c.most_common(k)]

    return "\n".join(
        [
            f"{total} samples (py-spy, threads while running)",
            "",
            "time by layer (innermost frame):",
            *pct(layers, len(layers)),
            "",
            "forge_tui lines, inclusive (with what they call):",
            *pct(forge_incl, top),
            "",
            "hottest lines, self time:",
            *pct(self_t, top),
        ]
    )


async def _profile(args: argparse.Namespace) -> str:
    sut_cpu, side_cpu = _cpus()
    pin_to_cpu(side_cpu)
    with tempfile.TemporaryDirectory(prefix="forge-profile-") as tmp:
        work = Path(tmp)
        upstream = await start_bench_process(
            "direct", "bench.upstream", ["--chunks", str(STREAM_EVENTS), "--chunk-gap-ms", str(CHUNK_GAP_MS)], side_cpu
        )
        try:
            port = _free_port()
            cfg = write_catalog(work / "profile.yaml", f"http://127.0.0.1:{upstream.port}", work / "state", port)
            starter = start_console if args.console else start_gateway
            srv = await starter(cfg, port, sut_cpu, work, tuple(shlex.split(args.forge_args)))
            try:

                def spec(n: int, cap: float) -> LoadSpec:
                    return LoadSpec(
                        host="127.0.0.1",
                        port=port,
                        body=_chat_body(args.stream),
                        stream=args.stream,
                        concurrency=args.concurrency,
                        requests=n,
                        time_cap_s=cap,
                        cpu=side_cpu,
                    )

                await run_phase(spec(2000, 10))  # warm-up, not sampled
                raw_path = Path(args.raw) if args.raw else work / "pyspy.txt"
                spy = await asyncio.create_subprocess_exec(
                    "py-spy",
                    "record",
                    "--pid",
                    str(srv.pid),
                    "--duration",
                    str(int(args.seconds)),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--output",
                    str(raw_path),
                    "--nonblocking",
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                )
                await asyncio.sleep(0.5)
                result = await run_phase(spec(10_000_000, args.seconds - 1.0))
                _, err = await spy.communicate()
                if not raw_path.exists():
                    raise BenchError(f"py-spy wrote nothing: {err.decode(errors='replace')[-1000:]}")
                head = (
                    f"{'console' if args.console else 'gateway'} under c={args.concurrency} "
                    f"{'stream' if args.stream else 'non-stream'} load: {float(result['rps']):.0f} req/s, "
                    f"p50 {float(result['p50_ms']):.2f} ms, errors {result['errors']}\n"
                )
                return head + fold(raw_path.read_text(), args.top)
            finally:
                await srv.stop()
        finally:
            await upstream.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--console", action="store_true", help="profile the console with its embedded gateway")
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--stream", action="store_true", help="SSE streams instead of JSON answers")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--forge-args", default="", metavar="ARGS", help="extra arguments for forge-tui")
    ap.add_argument("--raw", help="also keep py-spy's raw samples here")
    args = ap.parse_args(argv)
    if shutil.which("py-spy") is None:
        print("bench.profile: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 1
    try:
        print(asyncio.run(_profile(args)))
    except BenchError as exc:
        print(f"bench.profile: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
