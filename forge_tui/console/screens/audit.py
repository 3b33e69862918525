"""The audit log: every change with who, when, before and after (newest first).

The table keeps one short line per change (before → after cut to fit); Enter opens the change
whole, so nothing needs sideways scrolling at 80 columns.
"""

from __future__ import annotations

import json

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label

from ...control.base import Control
from ...schema import AuditInfo
from ..format import clean, short
from .detail import DetailScreen

__all__ = ["AuditScreen", "audit_details", "describe"]


def describe(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return json.dumps(value, default=str)


def audit_details(e: AuditInfo) -> list[tuple[str, Text]]:
    return [
        ("time", Text(e.time)),
        ("actor", Text(clean(e.actor))),
        ("action", Text(e.action, style="bold")),
        ("target", Text(clean(e.target), style="cyan")),
        ("before", Text(clean(describe(e.before)))),
        ("after", Text(clean(describe(e.after)))),
        ("note", Text(clean(e.note) or "-")),
    ]


class AuditScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "close", "Back", id="audit.back"),
        Binding("f5,ctrl+r", "reload", "Reload", id="audit.reload"),
        Binding("enter", "open", "Open change", id="audit.open"),
    ]

    def __init__(self, control: Control, *, limit: int = 200) -> None:
        super().__init__()
        self._control = control
        self._limit = limit
        self.entries: list[AuditInfo] | None = None

    def compose(self) -> ComposeResult:
        yield Label(" Audit log ", id="audit-title")
        yield DataTable(id="audit-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for col in ("Time", "Actor", "Action", "Target", "Change", "Note"):
            table.add_column(col, key=col)
        table.focus()
        self.action_reload()

    def action_reload(self) -> None:
        self._load()

    @work(exclusive=True, group="audit", exit_on_error=False, name="audit log")
    async def _load(self) -> None:
        entries = await self._control.audit(self._limit)
        self.entries = entries
        table = self.query_one(DataTable)
        table.clear()
        narrow = self.app.size.width < 120
        change_w, note_w = (22, 8) if narrow else (70, 40)
        for index, e in enumerate(reversed(entries)):
            when = e.time.replace("T", " ")[5:16] if narrow else e.time  # 04-10 09:12 at 80 columns
            change = Text(short(clean(describe(e.before)), change_w // 2))
            change.append(" → ", style="dim")
            change.append(short(clean(describe(e.after)), change_w // 2))
            table.add_row(
                Text(when, style="dim"),
                Text(short(clean(e.actor), 10 if narrow else 40)),
                Text(e.action, style="bold"),
                Text(short(clean(e.target), 14 if narrow else 60), style="cyan"),
                change,
                Text(short(clean(e.note), note_w) or "-", style="yellow" if e.note else "dim"),
                key=str(index),
            )
        self.query_one("#audit-title", Label).update(f" Audit log · {len(entries)} changes · Enter opens one ")

    def action_open(self) -> None:
        table = self.query_one(DataTable)
        if not self.entries or not table.row_count:
            return
        entry = list(reversed(self.entries))[min(max(table.cursor_row, 0), table.row_count - 1)]
        self.app.push_screen(DetailScreen(f"Change {entry.time}", audit_details(entry)))

    @on(DataTable.RowSelected, "#audit-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_close(self) -> None:
        self.dismiss(None)
