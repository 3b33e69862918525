"""The audit log: every change with who, when, before and after (newest first)."""

from __future__ import annotations

import json

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label

from ...control.base import Control
from ...schema import AuditInfo

__all__ = ["AuditScreen", "describe"]


def describe(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return json.dumps(value, default=str)


class AuditScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "close", "Back", id="audit.back"),
        Binding("f5,ctrl+r", "reload", "Reload", id="audit.reload"),
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
        for col in ("Time", "Actor", "Action", "Target", "Before", "After", "Note"):
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
        for e in reversed(entries):
            table.add_row(
                Text(e.time, style="dim"),
                Text(e.actor),
                Text(e.action, style="bold"),
                Text(e.target, style="cyan"),
                Text(describe(e.before)),
                Text(describe(e.after)),
                Text(e.note, style="yellow" if e.note else "dim"),
            )
        self.query_one("#audit-title", Label).update(f" Audit log · {len(entries)} changes ")

    def action_close(self) -> None:
        self.dismiss(None)
