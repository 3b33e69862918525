"""Interval maths for the scorecard: Wilson intervals for rates, order-statistic intervals for
percentiles read from the history's fixed log-bucket histograms. Pure functions, no numpy."""

from __future__ import annotations

import math

from ..telemetry._rollup import bucket_value

__all__ = ["Z95", "hist_quantile", "quantile_interval", "separated", "wilson"]

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float | None, float | None, float | None]:
    """(rate, low, high) of k successes in n trials; (None, None, None) when n == 0."""
    if n <= 0:
        return None, None, None
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return p, max(0.0, center - half), min(1.0, center + half)


def _at_rank(items: list[tuple[int, int]], rank: int) -> float:
    """Value of the ``rank``-th smallest sample (1-based) in sorted (bucket, count) pairs."""
    seen = 0
    for b, c in items:
        seen += c
        if seen >= rank:
            return bucket_value(b)
    return bucket_value(items[-1][0])


def hist_quantile(hist: dict[int, int], q: float) -> float | None:
    """Nearest-rank quantile of a histogram (None when empty)."""
    n = sum(hist.values())
    if n == 0:
        return None
    return _at_rank(sorted(hist.items()), max(1, math.ceil(q * n)))


def quantile_interval(
    hist: dict[int, int], q: float, z: float = Z95
) -> tuple[float | None, float | None, float | None]:
    """(value, low, high): the quantile and a distribution-free ~95 % interval from the order
    statistics whose ranks bracket n*q by z binomial standard deviations."""
    n = sum(hist.values())
    if n == 0:
        return None, None, None
    items = sorted(hist.items())
    sd = math.sqrt(n * q * (1 - q))
    lo_rank = max(1, math.floor(n * q - z * sd))
    hi_rank = min(n, math.ceil(n * q + z * sd) + 1)
    return _at_rank(items, max(1, math.ceil(q * n))), _at_rank(items, lo_rank), _at_rank(items, hi_rank)


def separated(a_low: float | None, a_high: float | None, b_low: float | None, b_high: float | None) -> int:
    """+1 when interval a lies wholly above b, -1 wholly below, 0 when they overlap or one is missing."""
    if None in (a_low, a_high, b_low, b_high):
        return 0
    if a_low > b_high:  # type: ignore[operator]
        return 1
    if a_high < b_low:  # type: ignore[operator]
        return -1
    return 0
