"""Nearest-rank percentiles over sorted samples, optionally merged from weighted parts.

Nearest rank: the smallest value whose cumulative weight reaches ``q`` of the total. With unit
weights, p50 of 1..100 is 50 and p95 is 95: exact, no interpolation, so tests can assert numbers.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from math import ceil

__all__ = ["merged_percentiles", "rank_percentile"]

_EPS = 1e-9  # q * n is not exact in binary (0.95 * 100 = 95.00000000000001)


def rank_percentile(values: Sequence[float], q: float) -> float | None:
    """``values`` sorted ascending, all of equal weight."""
    n = len(values)
    if n == 0:
        return None
    k = max(1, ceil(q * n * (1 - _EPS)))
    return values[min(k, n) - 1]


def merged_percentiles(parts: Sequence[tuple[Sequence[float], float]], qs: Sequence[float]) -> list[float | None]:
    """Percentiles over several sorted parts, each sample of a part weighing that part's weight
    (a full reservoir stands for more requests than it holds)."""
    parts = [(v, w) for v, w in parts if v]
    if not parts:
        return [None for _ in qs]
    if len(parts) == 1:  # one part: its weight is uniform, so it cancels out
        return [rank_percentile(parts[0][0], q) for q in qs]
    union: list[float] = []
    for v, _ in parts:
        union.extend(v)
    union.sort()  # timsort merges the already-sorted runs
    if all(w == 1.0 for _, w in parts):
        return [rank_percentile(union, q) for q in qs]
    total = sum(len(v) * w for v, w in parts)
    out: list[float | None] = []
    for q in qs:
        target = q * total * (1 - _EPS)
        lo, hi = 0, len(union) - 1  # binary search: the first value whose weighted rank reaches target
        while lo < hi:
            mid = (lo + hi) // 2
            x = union[mid]
            if sum(bisect_right(v, x) * w for v, w in parts) >= target:
                hi = mid
            else:
                lo = mid + 1
        out.append(union[lo])
    return out
