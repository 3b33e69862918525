"""Trial history benchmark: a synthetic week through the real history writer, then the report.

``python -m bench.trial [--records 10000000] [--dir DIR] [--markdown PATH]``

1. writer pace: records put at 5,000/s for ``--pace-s`` seconds on the real writer thread; dropped
   must stay 0 (the request path only appends to a deque);
2. bulk: the rest of ``--records`` written as fast as the writer takes them (the put side waits
   while the backlog is over half full, so nothing is dropped): records/s;
3. disk: bytes per record with every raw row, then after retention (``--retention-days``) has pruned
   the raw rows older than that and the hourly rollups alone stand for them;
4. ``forge-tui trial report`` over the whole week (JSON to a file): seconds, best of three;
5. the console's Trial screen opened on that history (Textual Pilot, headless): seconds until the
   scorecard is shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from forge_tui.state import AuditEntry
from forge_tui.telemetry import ErrorClass, RequestRecord
from forge_tui.telemetry._history import History

__all__ = ["main", "run", "section", "table"]

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "forge_tui" / "data" / "demo.yaml"
WEEK = 7 * 86400.0
A, B = "gemma3-270m-a", "gemma3-270m-b"
_SOURCES = ("agent", "agent", "agent", "job", "job", "ui", "smoke", "bench")
_CLASSES = (ErrorClass.UPSTREAM_ERROR, ErrorClass.UPSTREAM_TIMEOUT, ErrorClass.SATURATED, ErrorClass.MODEL_OUTPUT)


def _records(n: int, start: float, span: float, swap_at: float, seed: int = 7):
    """n requests spread evenly over [start, start + span): two trial roles and one outside the trial."""
    rnd = random.Random(seed)
    step = span / n
    lognorm = rnd.lognormvariate
    for i in range(n):
        t = start + i * step
        r = rnd.random()
        role = "default-chat" if r < 0.6 else "prompt-enhance" if r < 0.85 else "priority-chat"
        model = A if role == "priority-chat" or t < swap_at else B
        lat = lognorm(6.0 if model == A else 5.8, 0.5)
        err = rnd.random() < 0.02
        yield RequestRecord(
            time=t,
            request_id=f"{i:012x}",
            endpoint="/v1/chat/completions",
            role=role,
            model=model,
            host="local",
            backend="local-a" if model == A else "local-b",
            stream=i % 2 == 0,
            status=502 if err else 200,
            error_class=_CLASSES[i % 4] if err else ErrorClass.OK,
            latency_ms=lat,
            ttft_ms=lat * 0.2 if i % 2 == 0 else None,
            tokens_in=40,
            tokens_out=64,
            tokens_per_s=64 / (lat / 1000.0),
            source=_SOURCES[i % 8],
            inflight=i % 3,
            cold_start=i % 5000 == 0,
            structured=(i % 17 != 0) if i % 9 == 0 else None,
        )


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def _write_audit(state_dir: Path, swap_at: float) -> None:
    import datetime as dt

    state_dir.mkdir(parents=True, exist_ok=True)
    when = dt.datetime.fromtimestamp(swap_at, dt.UTC).isoformat(timespec="seconds")
    lines = [
        AuditEntry(when, "bench", "swap", role, {"model": A}, {"model": B, "previous": A, "baseline": A}).to_json()
        for role in ("default-chat", "prompt-enhance")
    ]
    (state_dir / "audit.jsonl").write_text("\n".join(lines) + "\n")


def run(
    records: int, workdir: Path, *, pace_s: float, retention_days: float, reuse: bool = False, log=print
) -> dict[str, Any]:
    path = workdir / "state" / "history.sqlite3"
    built = workdir / "built.json"
    if reuse and built.is_file():  # time the report and the screen again on a history built before
        out = json.loads(built.read_text())
        return _read_side(out, workdir, out["start"], out["now"], log)
    now = time.time()
    start = now - WEEK
    swap_at = start + 3 * 86400.0
    _write_audit(workdir / "state", swap_at)
    out: dict[str, Any] = {"records": records, "start": start, "now": now}
    h = History(path, batch_size=2000, flush_interval_s=0.25, max_pending=100_000)
    h.open()
    gen = _records(records, start, WEEK, swap_at)
    # 1. paced at 5,000 records/s
    paced = min(records, int(5000 * pace_s))
    t0 = time.perf_counter()
    peak = 0
    for i, rec in enumerate(gen):
        h.put(rec)
        if i % 250 == 249:
            peak = max(peak, h.pending)
            ahead = (i + 1) / 5000.0 - (time.perf_counter() - t0)
            if ahead > 0:
                time.sleep(ahead)
        if i + 1 >= paced:
            break
    h.flush(120.0)
    out["paced_records"] = paced
    out["paced_rate"] = paced / (time.perf_counter() - t0)
    out["paced_dropped"] = h.dropped
    out["paced_peak_pending"] = peak
    log(f"paced: {paced} records at {out['paced_rate']:.0f}/s, dropped {h.dropped}, peak backlog {peak}")
    # 2. bulk
    t0 = time.perf_counter()
    bulk = 0
    for rec in gen:
        while h.pending > h.max_pending // 2:
            time.sleep(0.002)
        h.put(rec)
        bulk += 1
        if bulk % 1_000_000 == 0:
            log(f"bulk: {bulk} records, {bulk / (time.perf_counter() - t0):.0f}/s")
    h.flush(600.0)
    out["bulk_records"] = bulk
    out["bulk_rate"] = bulk / max(1e-9, time.perf_counter() - t0)
    out["dropped"] = h.dropped
    h.close()
    out["bytes_per_record_raw"] = _size(path) / records
    log(f"bulk: {bulk} at {out['bulk_rate']:.0f}/s; {out['bytes_per_record_raw']:.1f} bytes/record with raw rows")
    # 3. retention
    h = History(path, retention_days=retention_days, prune_step=50_000, flush_interval_s=0.25)
    h.open()
    t0 = time.perf_counter()
    h.prune_now(3600.0)
    out["prune_s"] = time.perf_counter() - t0
    out["pruned"] = h.pruned
    h.close()
    import sqlite3

    c = sqlite3.connect(path)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    out["retention_days"] = retention_days
    out["bytes_per_record_after_rollup"] = _size(path) / records
    log(
        f"retention {retention_days} d: pruned {h.pruned} in {out['prune_s']:.1f} s; "
        f"{out['bytes_per_record_after_rollup']:.1f} bytes/record"
    )
    built.write_text(json.dumps(out))
    return _read_side(out, workdir, start, now, log)


def _read_side(out: dict[str, Any], workdir: Path, start: float, now: float, log) -> dict[str, Any]:
    # 4. the report
    from forge_tui.cli import main as cli

    argv = ["trial", "report", "--config", str(DEMO), "--state-dir", str(workdir / "state"), "--format", "json"]
    argv += ["--since", str(start - 1800), "--until", str(now), "-o", str(workdir / "report.json")]
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        code = cli(argv)
        times.append(time.perf_counter() - t0)
    out["report_s"] = min(times)
    out["report_exit"] = code
    sc = json.loads((workdir / "report.json").read_text())
    out["report_requests"] = sum(r["trial"]["requests"] + r["baseline"]["requests"] for r in sc["roles"])
    log(f"trial report: {out['report_s']:.2f} s (best of 3), exit {code}")
    # 5. the Trial screen
    opens = [_screen_open(workdir / "state", start - 1800, now) for _ in range(3)]
    out["screen_first_s"] = opens[0]
    out["screen_s"] = min(opens)
    log(f"Trial screen open: {out['screen_s']:.2f} s (best of 3; first {opens[0]:.2f} s)")
    return out


def _screen_open(state_dir: Path, since: float, until: float) -> float:
    return asyncio.run(_time_screen_open(DEMO, state_dir, since, until))


async def _time_screen_open(config: Path, state_dir: Path, since: float, until: float) -> float:
    """Seconds from pushing the Trial screen to its scorecard shown (headless Textual, real history)."""
    from textual.app import App

    from forge_tui.config import load_catalog
    from forge_tui.console.screens.trial import TrialScreen
    from forge_tui.operator.service import OperatorService
    from forge_tui.state import RoutingState
    from forge_tui.telemetry import Telemetry

    state = RoutingState(load_catalog(config), state_dir)
    service = OperatorService(state, telemetry=Telemetry(state_dir / "history.sqlite3"))
    timing: dict[str, float] = {}

    class _Bench(App[None]):
        async def on_mount(self) -> None:
            timing["t0"] = time.perf_counter()
            await self.push_screen(TrialScreen(service, since=since, until=until))

    app = _Bench()
    async with app.run_test(size=(160, 48)) as pilot:
        for _ in range(6000):  # bounded: 60 s at most
            screen = app.screen
            if isinstance(screen, TrialScreen) and (screen.scorecard is not None or screen.error):
                timing["t1"] = time.perf_counter()
                break
            await pilot.pause(0.01)
    if "t1" not in timing:
        raise RuntimeError("the Trial screen did not show a scorecard within 60 s")
    return timing["t1"] - timing["t0"]


BUDGETS = {
    "report_s": ("<=", 2.0),
    "screen_s": ("<=", 1.0),
    "bytes_per_record_after_rollup": ("<=", 60.0),
    "paced_dropped": ("==", 0),
    "dropped": ("==", 0),
}


def table(out: dict[str, Any]) -> str:
    rows = [
        ("records written through the real writer", f"{out['records']:,}", ""),
        ("writer at 5,000 records/s: rate held (incl. final flush)", f"{out['paced_rate']:.0f}/s", "5,000/s"),
        ("writer at 5,000 records/s: peak backlog", f"{out['paced_peak_pending']:,} records", "< max_pending"),
        ("writer at 5,000 records/s: dropped", str(out["paced_dropped"]), "0"),
        ("writer bulk rate", f"{out['bulk_rate']:.0f}/s", ""),
        ("dropped (whole build)", str(out["dropped"]), "0"),
        ("disk, every raw row kept", f"{out['bytes_per_record_raw']:.1f} B/record", ""),
        (
            f"disk after rollup (raw kept {out['retention_days']:g} d of 7)",
            f"{out['bytes_per_record_after_rollup']:.1f} B/record",
            "<= 60",
        ),
        ("retention pass", f"{out['prune_s']:.1f} s ({out['pruned']:,} rows)", ""),
        ("`trial report` over the week (best of 3)", f"{out['report_s']:.2f} s", "<= 2 s"),
        ("Trial screen open (best of 3)", f"{out['screen_s']:.2f} s (first {out['screen_first_s']:.2f} s)", "<= 1 s"),
    ]
    lines = ["| figure | value | budget |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def section(out: dict[str, Any]) -> str:
    """The figures as a bench/RESULTS.md section."""
    return (
        f"## Trial history ({out['records']:,} records, `python -m bench.trial --records {out['records']}`)\n\n"
        f"{os.cpu_count()} CPUs shared with other work.\n\n{table(out)}\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.trial", description=__doc__)
    ap.add_argument("--records", type=int, default=10_000_000, help="synthetic records for the week (default 10 M)")
    ap.add_argument("--pace-s", type=float, default=20.0, help="seconds of the 5,000 records/s phase")
    ap.add_argument("--retention-days", type=float, default=1.0, help="raw rows kept by the retention pass")
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed after)")
    ap.add_argument("--reuse", action="store_true", help="with --dir: reuse the history built there, time reads only")
    ap.add_argument("--json", default=None, help="write the figures as JSON")
    ap.add_argument("--markdown", default=None, help="append the table as a section to this file")
    args = ap.parse_args(argv)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="forge-trial-bench-"))
    try:
        out = run(
            args.records,
            work,
            pace_s=args.pace_s,
            retention_days=args.retention_days,
            reuse=args.reuse,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    print(table(out))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as fh:
            fh.write("\n" + section(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
