"""A pane that fails to draw says so and is logged; it never takes the console (or the gateway) down.

The console shares its process with the embedded gateway: an exception escaping a watcher would end
the Textual app and, with it, the gateway. ``guarded`` wraps a pane's drawing step; a failure is
logged with its traceback (the console's log file, see ``console.crashlog``), shown in the pane's
border and reported once to the app, and the next snapshot tries again.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from rich.text import Text
from textual.widget import Widget

__all__ = ["PaneFailed", "guarded", "pane_failed"]

log = logging.getLogger("forge_tui.console")

F = TypeVar("F", bound=Callable[..., Any])


class PaneFailed:
    """What the app is told about a pane that could not draw (kept in ``ForgeApp.pane_failures``)."""

    __slots__ = ("error", "pane")

    def __init__(self, pane: str, error: str) -> None:
        self.pane = pane
        self.error = error

    def __repr__(self) -> str:
        return f"PaneFailed({self.pane!r}, {self.error!r})"


def pane_failed(widget: Widget, exc: BaseException) -> None:
    """Log ``exc`` (call it inside the ``except``), mark the pane, tell the app once per pane and error."""
    name = widget.id or type(widget).__name__
    log.error("console pane %s could not draw", name, exc_info=exc)
    what = f"{type(exc).__name__}: {exc}"[:200]
    pane: Widget | None = widget
    while pane is not None and not pane.has_class("pane"):
        parent = pane.parent
        pane = parent if isinstance(parent, Widget) else None
    target = pane or widget
    target.border_subtitle = Text(f"⚠ could not draw: {type(exc).__name__} (logged)", style="bold red")
    report = getattr(widget.app, "pane_failed", None)
    if callable(report):
        report(PaneFailed(name, what))


def guarded(method: F) -> F:
    """Run a widget's drawing step; an exception is shown and logged instead of raised."""

    @functools.wraps(method)
    def run(self: Widget, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:  # the point: nothing a pane does may end the app
            pane_failed(self, exc)
            return None

    return run  # type: ignore[return-value]
