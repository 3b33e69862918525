"""How the scorecard writes durations and rates (shared by the Markdown, the reasons and the console)."""

from __future__ import annotations

__all__ = ["fmt_ms", "fmt_pct"]


def fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1000:.2f} s" if v >= 1000 else f"{v:.0f} ms"


def fmt_pct(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{digits}f} %"
