"""Errors pane: counts per error class, per role/model and per host, then the last messages in full."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

from ...schema import Snapshot
from ..format import clock
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


def _counts(title: str, counts: dict[str, int]) -> Table:
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False, expand=False)
    table.add_column(title)
    table.add_column("n", justify="right")
    for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(Text(name, style=CLASS_STYLES.get(name, "red")), str(n))
    return table


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
        parts: list[object] = []
        for warning in snapshot.warnings:
            parts.append(Text(f"⚠ {warning}", style="yellow"))
        if not by_class and not tel.last_errors:
            parts.append(Text("no errors in the window", style="green"))
        else:
            grid = Table.grid(padding=(0, 3))
            tables = [_counts("class", by_class), _counts("role/model", tel.errors_by_target)]
            by_host = {h.role: h.errors for h in tel.hosts if h.errors}
            if by_host:  # "(unrouted)": errors before any host was chosen (404, bad body)
                tables.append(_counts("host", by_host))
            grid.add_row(*tables)
            parts.append(grid)
            parts.append(Text("last errors", style="bold underline"))
            for e in sorted(tel.last_errors, key=lambda e: e.time, reverse=True):
                head = Text(f"{clock(e.time)} ", style="dim")
                head.append(e.error_class, style=CLASS_STYLES.get(e.error_class, "red"))
                head.append(f" {e.status} {e.role or '-'}/{e.model or '-'}")
                if e.host:
                    head.append(f" @{e.host}", style="dim")
                parts.append(head)
                # The message is shown whole: the upstream's own words are the diagnosis.
                parts.append(Text(f"  {e.message}", style="red"))
        self.query_one("#errors-body", Static).update(Group(*parts))
