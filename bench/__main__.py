"""``python -m bench [--quick] [--json PATH]``: what the gateway and the console cost, side by side."""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from pathlib import Path

from .run import MODES, OPTIONAL_TARGETS, TARGETS, BenchError, markdown, run_benchmark, table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller phases (under 3 minutes on 2 cores)")
    ap.add_argument("--tiny", action="store_true", help="a few hundred requests per target: checks the machinery")
    ap.add_argument("--json", metavar="PATH", help="write every figure to this JSON file")
    ap.add_argument("--markdown", metavar="PATH", help="write the run as Markdown (bench/RESULTS.md)")
    ap.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset of {','.join(TARGETS + OPTIONAL_TARGETS)} (direct is always "
        "measured; aiohttp, the thinnest aiohttp proxy, only when asked for)",
    )
    ap.add_argument(
        "--forge-args",
        default="",
        metavar="ARGS",
        help="extra arguments for both forge-tui commands, e.g. --forge-args=--no-hosts",
    )
    ap.add_argument("--no-pin", action="store_true", help="do not pin the system under test to its own CPU")
    ap.add_argument(
        "--failover", type=float, default=0.0, metavar="SECONDS", help="also run bench.failover with this window"
    )
    ap.add_argument(
        "--slow-clients",
        type=int,
        default=0,
        metavar="N",
        help="also run bench.slowclients: N connections trickling headers while a good client is measured",
    )
    ap.add_argument(
        "--trial-records",
        type=int,
        default=0,
        metavar="N",
        help="also run bench.trial: N synthetic records through the real history writer, then the trial "
        "report and the Trial screen on them (10000000 for the budget: a few minutes)",
    )
    args = ap.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    unknown = [t for t in targets if t not in TARGETS + OPTIONAL_TARGETS]
    if unknown:
        ap.error(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS + OPTIONAL_TARGETS)}")
    assert mode in MODES
    try:
        summary = asyncio.run(
            run_benchmark(
                mode,
                targets,
                pin=not args.no_pin,
                forge_args=tuple(shlex.split(args.forge_args)),
                log=lambda m: print(m, file=sys.stderr, flush=True),
                failover_s=args.failover,
                slow_clients=args.slow_clients,
                trial_records=args.trial_records,
            )
        )
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("bench: stopped before the end; every process it started has been stopped", file=sys.stderr)
        return 130
    print(table(summary))
    print(
        f"\n(wall time {float(summary['wall_s']):.0f} s, mode {mode}; other processes used "
        f"{float(summary['foreign_cpu_pct']):.0f} % of a CPU meanwhile)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    if args.markdown:
        shown = ["python -m bench"] + ([f"--{mode}"] if mode != "full" else [])
        if targets != TARGETS:
            shown.append(f"--targets {','.join(targets)}")
        if args.forge_args:
            shown.append(f"--forge-args={shlex.quote(args.forge_args)}")
        if args.no_pin:
            shown.append("--no-pin")
        if args.trial_records:
            shown.append(f"--trial-records {args.trial_records}")
        Path(args.markdown).write_text(markdown(summary, " ".join(shown)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
