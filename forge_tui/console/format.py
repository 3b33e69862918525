"""Pure text helpers shared by the panes: times, ages, bars and health labels.

Everything here is a function of its arguments (ages are measured against the snapshot's own
``taken_at``, not the wall clock), so a pane drawn from a recorded snapshot looks the same on
every run.
"""

from __future__ import annotations

import datetime as dt
import re

from rich.text import Text

__all__ = [
    "age",
    "bar",
    "clean",
    "clock",
    "health_text",
    "memory_cell",
    "ms",
    "outcome_text",
    "route_label",
    "short",
    "state_text",
]

HEALTH_STYLES: dict[str, str] = {
    "ready": "bold green",
    "starting": "bold yellow",
    "down": "bold red",
    "circuit-open": "bold magenta",
    "unknown": "dim",
}

STATE_STYLES: dict[str, str] = {
    "hot": "bold #ff8c42",  # warm orange: loaded and kept loaded
    "cold": "#6fa8dc",  # cool blue: on disk
    "on-demand": "#9fc5e8",
    "disabled": "dim strike",
}


# C0/C1 control characters and DEL: a terminal would act on them (ESC starts an escape sequence).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(text: object, limit: int | None = None) -> str:
    """A value that came from a caller or a backend, safe to draw: control characters shown as
    ``\\xNN`` (newlines and tabs as spaces), at most ``limit`` characters (an ellipsis and the
    count of what was cut mark a long one). Put it in a ``Text``, never in markup."""
    raw = "" if text is None else str(text)
    if limit is not None and len(raw) > limit:
        cut = len(raw) - limit
        raw = raw[:limit]
    else:
        cut = 0
    out = _CONTROL.sub(lambda m: " " if m.group() in "\n\t" else f"\\x{ord(m.group()):02x}", raw)
    return out + (f"… (+{cut} chars)" if cut else "")


def clock(t: float) -> str:
    """Unix seconds as a local HH:MM:SS (what an operator compares with their own clock)."""
    return dt.datetime.fromtimestamp(t).strftime("%H:%M:%S")


def age(then: float | None, now: float) -> str:
    """How long before ``now`` something happened, compact: 3s, 4m, 2h, 5d."""
    if then is None or now <= 0:
        return "never"
    s = max(0.0, now - then)
    if s < 60:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{s // 60:.0f}m"
    if s < 86400:
        return f"{s // 3600:.0f}h"
    return f"{s // 86400:.0f}d"


def ms(value: float | None) -> str:
    """Milliseconds that read: ``820ms`` below a second, ``1.2s`` / ``35s`` above."""
    if value is None:
        return "-"
    if value >= 100_000:
        return f"{value / 1000:.0f}s"
    if value >= 1_000:
        return f"{value / 1000:.1f}s"
    return f"{value:.0f}ms"


def bar(used: float, total: float, width: int = 12) -> Text:
    """A block bar coloured by how full it is (green, then yellow past 75 %, red past 90 %)."""
    frac = 0.0 if total <= 0 else min(1.0, max(0.0, used / total))
    filled = round(frac * width)
    style = "green" if frac < 0.75 else "yellow" if frac < 0.9 else "red"
    out = Text()
    out.append("█" * filled, style=style)
    out.append("░" * (width - filled), style="dim")
    return out


def memory_cell(used: float | None, total: float | None, budget: float, width: int = 12) -> Text:
    """``██████░░ 3.1/8.0G``; an unknown reading says so instead of drawing an empty bar."""
    if used is None:
        return Text(f"{'?':^{width}} -/{total or budget:.1f}G", style="dim")
    cap = total if total else budget
    out = bar(used, cap, width)
    out.append(f" {used:.1f}/{cap:.1f}G")
    return out


def health_text(health: str) -> Text:
    return Text(health, style=HEALTH_STYLES.get(health, "dim"))


def state_text(state: str, deprecated: bool = False, sunset: str | None = None) -> Text:
    """Hot and cold look different at a glance; a deprecation is appended with its date."""
    out = Text(("● " if state == "hot" else "○ ") + state, style=STATE_STYLES.get(state, ""))
    if deprecated:
        out.append(" deprecated", style="bold red")
        if sunset:
            out.append(f" {sunset}", style="red")
    return out


def outcome_text(outcome: str) -> Text:
    style = {"pass": "bold green", "warn": "bold yellow", "fail": "bold red"}.get(outcome, "")
    return Text(outcome.upper(), style=style)


def short(text: str | None, limit: int) -> str:
    """One line, at most ``limit`` characters (an ellipsis marks the cut)."""
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: max(0, limit - 1)] + "…"


def route_label(header: str | None) -> str:
    """``role=r; model=m; host=h; backend=b`` (the x-forge-route header) as ``m @h/b``.

    Anything else the header carries (a fallback, say) is kept after it; an unknown shape is
    returned as it came.
    """
    if not header:
        return ""
    fields: dict[str, str] = {}
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return header
        fields[key] = value
    if "model" not in fields:
        return header
    out = fields.pop("model")
    host, backend = fields.pop("host", ""), fields.pop("backend", "")
    fields.pop("role", None)
    if host or backend:
        out += f" @{host}" + (f"/{backend}" if backend else "")
    extra = " ".join(f"(fallback for {v})" if k == "fallback" else f"{k}={v}" for k, v in fields.items())
    return f"{out} {extra}" if extra else out
