"""Profile the gateway under the benchmark's load with py-spy and print where its time goes.

``python -m bench.profile [--console] [--seconds 15] [--concurrency 32] [--stream] [--raw PATH]``

Starts the fast upstream and ``forge-tui serve`` (or the console, with ``--console``) exactly as
the benchmark does, drives it with the load generator, samples it with ``py-spy record`` (needs
``pip install py-spy``; not a dependency of forge-tui) and prints the hottest lines (self time)
and functions (inclusive time) as a percentage of all samples, idle included. Time in the event
loop's ``select`` is idle time; time in socket ``send``/``recv`` is kernel time charged to Python.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import sys
import tempfile
from pathlib import Path

from .catalog import write_catalog
from .load import LoadSpec
from .run import (CHUNK_GAP_MS, STREAM_EVENTS, BenchError, _chat_body, _cpus, _free_port, pin_to_cpu,
                  run_phase, start_bench_process, start_console, start_gateway)

__all__ = ["fold", "main"]


def fold(raw: str, top: int = 30) -> str:
    """Summarize py-spy's raw (collapsed) output: self time per line, inclusive time per function."""
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n_s = line.rpartition(" ")
        if not stack or not n_s.isdigit():
            continue
        n = int(n_s)
        total += n
        frames = stack.split(";")
        self_t[frames[-1]] += n
        seen: set[str] = set()
        for f in frames:
            func = f.rsplit(":", 1)[0] + ")" if ":" in f else f  # drop the line number: per function
            if func not in seen:
                seen.add(func)
                incl[func] += n
    if not total:
        return "no samples"
    out = [f"{total} samples", "", "self time by line:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in self_t.most_common(top)]
    out += ["", "inclusive time by function:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top + 15)]
    return "\n".join(out)


async def _profile(args: argparse.Namespace) -> str:
    sut_cpu, side_cpu = _cpus()
    pin_to_cpu(side_cpu)
    with tempfile.TemporaryDirectory(prefix="forge-profile-") as tmp:
        work = Path(tmp)
        upstream = await start_bench_process(
            "direct", "bench.upstream", ["--chunks", str(STREAM_EVENTS), "--chunk-gap-ms", str(CHUNK_GAP_MS)],
            side_cpu)
        try:
            port = _free_port()
            cfg = write_catalog(work / "profile.yaml", f"http://127.0.0.1:{upstream.port}", work / "state", port)
            srv = await (start_console if args.console else start_gateway)(cfg, port, sut_cpu, work)
            try:
                def spec(n: int, cap: float) -> LoadSpec:
                    return LoadSpec(host="127.0.0.1", port=port, body=_chat_body(args.stream), stream=args.stream,
                                    concurrency=args.concurrency, requests=n, time_cap_s=cap, cpu=side_cpu)

                await run_phase(spec(2000, 10))  # warm-up, not sampled
                raw_path = Path(args.raw) if args.raw else work / "pyspy.txt"
                spy = await asyncio.create_subprocess_exec(
                    "py-spy", "record", "--pid", str(srv.pid), "--duration", str(args.seconds), "--rate", "250",
                    "--format", "raw", "--output", str(raw_path), "--nonblocking",
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
                await asyncio.sleep(0.5)
                result = await run_phase(spec(10_000_000, args.seconds - 1.0))
                _, err = await spy.communicate()
                if not raw_path.exists():
                    raise BenchError(f"py-spy wrote nothing: {err.decode(errors='replace')[-1000:]}")
                head = (f"{'console' if args.console else 'gateway'} under c={args.concurrency} "
                        f"{'stream' if args.stream else 'non-stream'} load: {float(result['rps']):.0f} req/s, "
                        f"p50 {float(result['p50_ms']):.2f} ms, errors {result['errors']}\n")
                return head + fold(raw_path.read_text(), args.top)
            finally:
                await srv.stop()
        finally:
            await upstream.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    ap.add_argument("--console", action="store_true", help="profile the console with its embedded gateway")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--stream", action="store_true", help="SSE streams instead of JSON answers")
    ap.add_argument("--top", type=int, default=30)
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
