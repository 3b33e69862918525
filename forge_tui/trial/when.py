"""Window ends as an operator types them: unix seconds, ISO dates/times, or "-7d" ago."""

from __future__ import annotations

import argparse
import datetime as dt
import time

__all__ = ["parse_when"]


def parse_when(text: str, now: float | None = None) -> float:
    """Unix seconds, an ISO date/time (UTC unless it says otherwise), or "-2d" / "-6h" / "-30m" ago."""
    now = time.time() if now is None else now
    t = text.strip()
    units = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    if t.startswith("-") and t[-1:] in units:
        try:
            return now - float(t[1:-1]) * units[t[-1]]
        except ValueError:
            pass
    try:
        return float(t)
    except ValueError:
        pass
    try:
        d = dt.datetime.fromisoformat(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give unix seconds, an ISO date or time (2026-11-22, 2026-11-22T14:00), or -7d / -6h / -30m"
        ) from None
    return (d if d.tzinfo else d.replace(tzinfo=dt.UTC)).timestamp()
