"""The benchmark's machinery, end to end, in its tiny mode (a few hundred requests per target).

Real parts only: the benchmark's own fast upstream and floor proxy, the real ``forge-tui serve``
and the real console (Textual, gateway embedded) in a pseudo-terminal, all on loopback.
Timings are never asserted here (they belong to ``python -m bench``); what is asserted is that
every figure the issue asks for is produced as a number, and that nothing failed on the way.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from bench.run import MODES, REQUIRED_KEYS, TARGETS

REPO = Path(__file__).resolve().parent.parent


def test_tiny_run_reports_every_required_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--trial-records", "20000", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())

    for key in REQUIRED_KEYS:
        value = data[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value), (key, value)
    assert set(data["targets"]) == set(TARGETS)

    tiny = MODES["tiny"]
    for name, target in data["targets"].items():
        phases = target["phases"]
        assert sum(p["errors"] for p in phases.values()) == 0, (name, {k: p["statuses"] for k, p in phases.items()})
        assert phases["c32"]["requests"] == tiny.c32 // tiny.rounds, name  # the count, not the time cap, ended it
        assert phases["stream8"]["events_per_stream"] >= 3, name  # SSE events came through as events
        assert target["mem_requests"] == tiny.mem, name
        assert target["rss_mb_end"] > 0, name
    # The console was live and answered every key pressed while the gateway was under load.
    assert data["console_key_presses"] >= 1
    assert data["console_key_misses"] == 0
    assert data["targets"]["console"]["pty_bytes"] > 0
    # The table names every required figure.
    for key in REQUIRED_KEYS:
        assert key in proc.stdout
    # The trial-history section ran through the real writer, report and screen, and is judged.
    trial = data["trial"]
    assert trial["records"] == 20000 and trial["dropped"] == 0 and trial["report_exit"] == 0
    assert trial["report_requests"] > 0 and trial["screen_s"] > 0
    assert "history writer at 5,000 records/s: dropped" in proc.stdout
    assert "Trial screen open <= 1 s" in proc.stdout
    assert "## Trial history (20,000 records" in data["trial_md"]
