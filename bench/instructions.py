"""Instructions per request under valgrind: an A/B of source trees that machine noise cannot blur.

``python -m bench.instructions [--tree NAME=PATH ...] [--requests 1500] [--concurrency 8] [--stream]``

Wall-clock figures on a shared machine move 10-20 % between runs of the same code; the number of
instructions a gateway executes per request moves ~0.5 %. For each tree (default: this checkout)
this starts ``forge-tui serve`` from that tree under ``valgrind --tool=callgrind`` with
instrumentation off, warms it up with the benchmark's load, switches instrumentation on
(``callgrind_control -i on``) for the measured requests only, and prints instructions per request
(user space, every thread: the history writer included). Compare trees in one run, e.g. wave 1's
code from ``git worktree add /tmp/w1 <commit>`` against this checkout. Each tree uses its own
``bench/catalog.py``, so it measures what that tree's own benchmark measured.

Needs valgrind (``apt-get install valgrind``; not needed by forge-tui or its tests). Counts are a
proxy for time, not time: a C routine's instructions (memchr, a syscall wrapper) are cheaper than
the interpreter's. Use it to find where a difference is, then confirm with ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .load import LoadSpec
from .run import REPO, BenchError, _chat_body, _first_answer, _free_port, run_phase, start_bench_process

__all__ = ["main", "measure"]

START_TIMEOUT_S = 300.0  # a gateway under valgrind starts ~50x slower than natively
_COLLECTED = re.compile(r"Collected : (\d+)")


def _write_catalog(tree: Path, path: Path, upstream: str, state: Path, port: int) -> None:
    # In a child: the tree's own bench.catalog (an older tree may write a different catalog).
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
        "from bench.catalog import write_catalog; "
        "write_catalog(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), int(sys.argv[5]))"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(tree), str(path), upstream, str(state), str(port)],
        check=True,
        timeout=60,
    )


async def measure(
    name: str, tree: Path, upstream_port: int, work: Path, *, requests: int, concurrency: int, stream: bool
) -> tuple[int, float]:
    """(requests answered, instructions per request) for ``forge-tui serve`` from ``tree``."""
    port = _free_port()
    cfg = work / f"{name}.yaml"
    _write_catalog(tree, cfg, f"http://127.0.0.1:{upstream_port}", work / f"state-{name}", port)
    env = dict(os.environ, PYTHONPATH=str(tree), FORGE_ADMIN_TOKEN="bench-admin-token")
    log_path = work / f"{name}.log"
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={work / (name + '.callgrind')}",
        sys.executable,
        "-m",
        "forge_tui",
        "serve",
        "--config",
        str(cfg),
        "--port",
        str(port),
        "--no-hosts",
    ]
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(work), env=env
        )
    try:
        deadline = time.perf_counter() + START_TIMEOUT_S
        while True:  # bounded by the deadline
            try:
                await asyncio.wait_for(_first_answer(port, time.perf_counter(), proc), 60)
                break
            except (BenchError, TimeoutError):
                if proc.returncode is not None or time.perf_counter() > deadline:
                    raise BenchError(f"{name}: the gateway did not start under valgrind (log: {log_path})") from None
        spec = LoadSpec(
            host="127.0.0.1",
            port=port,
            body=_chat_body(stream),
            stream=stream,
            concurrency=concurrency,
            requests=requests,
            time_cap_s=600,
            cpu=1,
        )
        await run_phase(dataclasses.replace(spec, requests=300, warmup=50, time_cap_s=120))  # not measured
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], capture_output=True, check=True, timeout=60)
        res = await run_phase(spec)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], capture_output=True, check=True, timeout=60)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 120)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    m = _COLLECTED.search(log_path.read_text(errors="replace"))
    if m is None:
        raise BenchError(f"{name}: valgrind printed no instruction count (log: {log_path})")
    answered = int(res["requests"])
    return answered, int(m.group(1)) / max(1, answered)


async def _run(trees: list[tuple[str, Path]], requests: int, concurrency: int, stream: bool) -> int:
    up = await start_bench_process("upstream", "bench.upstream", ["--port", "0"], 1)
    work = Path(tempfile.mkdtemp(prefix="forge-instr-"))
    try:
        print(f"{'tree':12s} {'requests':>8s} {'instructions/request':>22s}", flush=True)
        for name, tree in trees:
            answered, per = await measure(
                name, tree, up.port, work, requests=requests, concurrency=concurrency, stream=stream
            )
            print(f"{name:12s} {answered:8d} {per:22,.0f}", flush=True)
    finally:
        await up.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PATH", help="a source tree (repeatable)")
    ap.add_argument("--requests", type=int, default=1500, help="measured requests per tree")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--stream", action="store_true", help="streamed chat requests instead of whole answers")
    args = ap.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("bench.instructions: needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    trees: list[tuple[str, Path]] = []
    for spec in args.tree or [f"this={REPO}"]:
        name, sep, path = spec.partition("=")
        if not sep or not name or not Path(path, "forge_tui").is_dir():
            ap.error(f"--tree wants NAME=PATH to a forge-tui source tree, got {spec!r}")
        trees.append((name, Path(path).resolve()))
    try:
        return asyncio.run(_run(trees, args.requests, args.concurrency, args.stream))
    except BenchError as exc:
        print(f"bench.instructions: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
