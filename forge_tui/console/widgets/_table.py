"""A DataTable that redraws from a snapshot with little churn and keeps its cursor on its row."""

from __future__ import annotations

from typing import ClassVar, Sequence

from rich.console import RenderableType
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import DataTable

from ...control.schema import Snapshot

__all__ = ["SnapshotTable", "Row"]

Row = tuple[str, Sequence[RenderableType]]


def _same(a: RenderableType, b: RenderableType) -> bool:
    # Text's own == ignores the base style (bold, dim...), which the panes use to show state.
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain == b.plain and a.style == b.style and a.spans == b.spans
    return a == b


class SnapshotTable(DataTable[RenderableType]):
    """Subclasses list their ``COLUMNS`` and turn a snapshot into keyed rows in ``rows_for``."""

    COLUMNS: ClassVar[tuple[str, ...]] = ()
    TITLE: ClassVar[str] = ""
    snapshot: reactive[Snapshot | None] = reactive(None)

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        # Textual runs every on_mount up the class chain, so subclasses set TITLE, not a handler.
        self.border_title = self.TITLE or None
        for name in self.COLUMNS:
            self.add_column(name, key=name)
        if self.snapshot is not None:
            self.sync(self.rows_for(self.snapshot))

    def watch_snapshot(self, snapshot: Snapshot | None) -> None:
        if snapshot is not None and self.is_mounted and self.columns:
            self.sync(self.rows_for(snapshot))

    def rows_for(self, snapshot: Snapshot) -> list[Row]:
        raise TypeError(f"{type(self).__name__} must define rows_for")

    @property
    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        row = min(max(self.cursor_row, 0), self.row_count - 1)
        return self.ordered_rows[row].key.value

    def select_key(self, key: str) -> bool:
        for index, row in enumerate(self.ordered_rows):
            if row.key.value == key:
                self.move_cursor(row=index)
                return True
        return False

    def sync(self, rows: list[Row]) -> None:
        """Update cells in place when the row keys are unchanged; otherwise rebuild in order."""
        new_keys = [key for key, _ in rows]
        old_keys = [row.key.value for row in self.ordered_rows]
        if new_keys == old_keys:
            for key, cells in rows:
                for column, cell in zip(self.COLUMNS, cells):
                    if not _same(self.get_cell(key, column), cell):
                        self.update_cell(key, column, cell, update_width=True)
            return
        selected = self.selected_key
        self.clear()
        for key, cells in rows:
            self.add_row(*cells, key=key)
        if selected is not None and selected in new_keys:
            self.move_cursor(row=new_keys.index(selected), animate=False)
