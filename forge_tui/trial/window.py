"""Read a window of the history as cells: per time bucket and rollup key, the summed figures.

Long windows read the hourly rollups for whole hours and raw rows only for the partial hours at
either edge, so a week of millions of requests costs a few thousand rows. Short windows (up to
``FINE_WINDOW_S``) are folded from raw rows in finer buckets so the chart has shape. Where raw
rows were pruned (retention), the rollup hour is used whole and a note says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..telemetry._history import aggregate_raw, count_raw, raw_complete_since, read_rollups
from ..telemetry._rollup import Accum, RollupKey

__all__ = ["FINE_WINDOW_S", "Cell", "load_cells"]

FINE_WINDOW_S = 12 * 3600.0
_FINE_BUCKETS = 48


@dataclass(slots=True)
class Cell:
    t0: float  # bucket start, clipped to the window
    t1: float
    role: str
    model: str
    host: str
    source: str
    error_class: str
    loaded: bool
    cold: bool
    fallback: bool
    acc: Accum


def _cells(items: Iterable[tuple[RollupKey, Accum]], width: float, since: float, until: float) -> list[Cell]:
    out = []
    for (b, role, model, host, source, ec, loaded, cold, fb), acc in items:
        t0 = max(since, b * width)
        t1 = min(until, (b + 1) * width)
        out.append(Cell(t0, t1, role, model, host, source, ec, bool(loaded), bool(cold), bool(fb), acc))
    return out


def _fine_bucket(span: float) -> float:
    raw = max(60.0, span / _FINE_BUCKETS)
    return float(math.ceil(raw / 60.0) * 60)  # whole minutes


def _hour_inside(path: Path, hour: int, a: float, b: float, roles: list[str] | None) -> bool:
    """No raw row of ``hour`` (of these roles) falls outside [a, b): two index range counts."""
    outside = count_raw(path, hour * 3600.0, a, roles) + count_raw(path, b, (hour + 1) * 3600.0, roles)
    return outside == 0


def load_cells(path: Path, since: float, until: float, roles: Iterable[str] | None) -> tuple[list[Cell], list[str]]:
    """Cells covering [since, until) for ``roles`` (and role-less requests: pass "" in roles)."""
    notes: list[str] = []
    rl = None if roles is None else sorted(set(roles))
    complete = raw_complete_since(path)
    raw_from = complete if complete is not None else -math.inf
    span = until - since
    if span <= FINE_WINDOW_S and since >= raw_from:
        width = _fine_bucket(span)
        return _cells(aggregate_raw(path, since, until, rl, bucket_s=width).items(), width, since, until), notes
    h0 = math.ceil(since / 3600)
    h1 = math.floor(until / 3600)
    cells: list[Cell] = []
    edges: list[tuple[float, float]] = []
    if h0 <= h1:
        cells += _cells(read_rollups(path, h0, h1, rl), 3600.0, since, until)
        if since < h0 * 3600:
            edges.append((since, h0 * 3600.0))
        if h1 * 3600 < until:
            edges.append((h1 * 3600.0, until))
    else:
        edges.append((since, until))
    for a, b in edges:
        hour = math.floor(a / 3600)
        if hour * 3600 >= raw_from and _hour_inside(path, hour, a, b, rl):
            # every raw row of that hour lies in [a, b) (the usual "until now" edge): its rollup is exact
            cells += _cells(read_rollups(path, hour, hour + 1, rl), 3600.0, a, b)
        elif a >= raw_from:
            cells += _cells(aggregate_raw(path, a, b, rl, bucket_s=3600.0).items(), 3600.0, a, b)
        else:  # raw rows pruned: the whole rollup hour stands in for the part of it in the window
            cells += _cells(read_rollups(path, hour, hour + 1, rl), 3600.0, a, b)
            notes.append(
                f"raw rows before {raw_from:.0f} were pruned: the window's edge hour {hour * 3600} is counted whole"
            )
    return cells, notes
