"""Errors pane: counts per error class, per role/model and per host, then the last messages in full."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

from ...schema import Snapshot
from ..format import clean, clock
from ._guard import guarded
from ._quiet import set_subtitle

__all__ = ["ErrorsPane"]

CLASS_STYLES = {
    "caller_error": "yellow",
    "not_found": "yellow",
    "payload_too_large": "yellow",
    "saturated": "magenta",
    "model_output": "blue",
    "gateway_error": "bold red",
}


def _counts(title: str, counts: dict[str, int]) -> Text:
    """One labelled line per grouping (``by class: a 3 · b 1``): lists side by side read as rows."""
    line = Text(f"{title:<14}", style="bold")
    for index, (name, n) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))):
        if index:
            line.append(" · ", style="dim")
        line.append(clean(name, 80), style=CLASS_STYLES.get(name, "red") if title == "by class" else "")
        line.append(f" {n}", style="bold")
    return line


MESSAGE_LIMIT = 600  # characters of one error message shown (a caller can make it 10 kB)


def _view(snapshot: Snapshot) -> tuple[object, ...]:
    """Everything the pane draws from a snapshot: equal views draw the same pane."""
    tel = snapshot.telemetry
    by_class = {k: v for k, v in tel.errors_by_class.items() if k != "ok" and v}  # "ok" grows every poll
    return (
        snapshot.warnings,
        by_class,
        tel.errors_by_target,
        tel.last_errors,
        tel.thinking_leaks,
        [(h.role, h.errors) for h in tel.hosts if h.errors],
    )


class ErrorsPane(VerticalScroll):
    snapshot: reactive[Snapshot | None] = reactive(None, repaint=False)  # redraws what changed itself

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._view: tuple[object, ...] | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="errors-body")

    def on_mount(self) -> None:
        self.border_title = "Errors"

    @guarded
    def watch_snapshot(self, snapshot: Snapshot | None) -> None:
        if snapshot is None or not self.is_mounted:
            return
        view = _view(snapshot)
        if view == self._view:  # the usual poll: nothing new went wrong, nothing to redraw
            return
        self._view = view
        tel = snapshot.telemetry
        by_class = {k: v for k, v in tel.errors_by_class.items() if k != "ok" and v}
        total = sum(by_class.values())
        set_subtitle(
            self, f"{total} in window" + (f" · {tel.thinking_leaks} think leaks" if tel.thinking_leaks else "")
        )
        parts: list[Text] = []
        for warning in snapshot.warnings:
            parts.append(Text(f"⚠ {clean(warning, MESSAGE_LIMIT)}", style="yellow"))
        if not by_class and not tel.last_errors:
            parts.append(Text("no errors in the window", style="green"))
        else:
            parts.append(_counts("by class", by_class))
            if tel.errors_by_target:
                parts.append(_counts("by role/model", tel.errors_by_target))
            by_host = {h.role: h.errors for h in tel.hosts if h.errors}
            if by_host:  # "(unrouted)": errors before any host was chosen (404, bad body)
                parts.append(_counts("by host", by_host))
            parts.append(Text("last errors (newest first)", style="bold underline"))
            for e in sorted(tel.last_errors, key=lambda e: e.time, reverse=True):
                head = Text(f"{clock(e.time)} ", style="dim")
                head.append(e.error_class, style=CLASS_STYLES.get(e.error_class, "red"))
                head.append(f" {e.status} ")
                head.append(f"{e.role or '-'}/{e.model or '-'}", style="bold")
                if e.host:
                    head.append(f" @{e.host}", style="dim")
                parts.append(head)
                # The message is shown whole up to a bound: the upstream's own words are the diagnosis.
                parts.append(Text(f"  {clean(e.message, MESSAGE_LIMIT)}", style="red"))
        self.query_one("#errors-body", Static).update(Group(*parts))
