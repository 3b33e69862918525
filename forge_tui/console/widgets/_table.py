"""A DataTable that follows a snapshot with the least churn and keeps its cursor on its row.

Rows are keyed (role name, model id, request id...). A poll only touches what changed: cells
whose value differs are updated in place, rows that appeared are added, rows that vanished are
removed, and the cursor stays on the row it was on. A poll whose slice of the snapshot is the
same as the last one costs one comparison: every redraw here is terminal output and event-loop
time taken from the gateway the console shares its process with.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import ClassVar

from rich.console import RenderableType
from rich.text import Text
from textual.reactive import reactive
from textual.widgets import DataTable

from ...schema import Snapshot
from ._guard import guarded

__all__ = ["Row", "SnapshotTable"]

Row = tuple[str, Sequence[RenderableType]]


def _same(a: RenderableType, b: RenderableType) -> bool:
    # Text's own == ignores the base style (bold, dim...), which the panes use to show state.
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain == b.plain and a.style == b.style and a.spans == b.spans and a.justify == b.justify
    return a == b


class SnapshotTable(DataTable[RenderableType]):
    """Subclasses list their ``COLUMNS``, turn a snapshot into keyed rows in ``rows_for`` and say
    in ``view_of`` which part of the snapshot those rows depend on."""

    COLUMNS: ClassVar[tuple[str, ...]] = ()
    TITLE: ClassVar[str] = ""
    # Past this share of rows gone at once, clearing and re-adding beats removing one by one
    # (DataTable.remove_row renumbers every row); the cursor still follows its key.
    REBUILD_SHARE: ClassVar[float] = 0.5
    snapshot: reactive[Snapshot | None] = reactive(None, repaint=False)  # redraws what changed itself

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self._view: object = None  # the slice of the snapshot the rows were last built from
        self.rebuilds = 0  # full clear-and-refill passes (kept for tests and diagnosis)

    def on_mount(self) -> None:
        # Textual runs every on_mount up the class chain, so subclasses set TITLE, not a handler.
        self.border_title = self.TITLE or None
        for name in self.COLUMNS:
            self.add_column(name, key=name)
        self.refresh_rows()

    def watch_snapshot(self, snapshot: Snapshot | None) -> None:
        self.refresh_rows()

    def rows_for(self, snapshot: Snapshot) -> list[Row]:
        raise TypeError(f"{type(self).__name__} must define rows_for")

    def view_of(self, snapshot: Snapshot) -> Hashable | object:
        """What ``rows_for`` reads from the snapshot (compared with ==): same view, same rows."""
        return snapshot

    @guarded
    def refresh_rows(self, *, force: bool = False) -> None:
        """Bring the rows up to date with the snapshot; nothing happens when its view is unchanged."""
        snapshot = self.snapshot
        if snapshot is None or not self.is_mounted or not self.columns:
            return
        view = self.view_of(snapshot)
        if not force and self._view is not None and view == self._view:
            return
        self._view = view
        self.sync(self.rows_for(snapshot))

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

    def _keys(self) -> list[str]:
        return [row.key.value for row in self.ordered_rows]  # type: ignore[misc]  # keys are always set here

    def sync(self, rows: list[Row]) -> None:
        """Patch the table to show ``rows`` in order: changed cells, new rows, gone rows only."""
        new_keys = [key for key, _ in rows]
        old_keys = self._keys()
        selected = self.selected_key
        wanted = set(new_keys)
        gone = [key for key in old_keys if key not in wanted]
        if old_keys and len(gone) > len(old_keys) * self.REBUILD_SHARE:
            self._rebuild(rows, selected)
            return
        for key in gone:
            self.remove_row(key)
        present = set(old_keys)
        for key, cells in rows:
            if key in present:
                for column, cell in zip(self.COLUMNS, cells, strict=True):
                    if not _same(self.get_cell(key, column), cell):
                        self.update_cell(key, column, cell, update_width=True)
            else:
                self.add_row(*cells, key=key)
        if self._keys() != new_keys and not self._reorder(new_keys):
            self._rebuild(rows, selected)
            return
        self._follow(selected, new_keys)

    def _reorder(self, new_keys: list[str]) -> bool:
        """Put the rows in ``new_keys`` order (new rows were added at the bottom)."""
        # DataTable.sort hands the key function a row's cells, not its key; each row's first
        # cell is its own object, so its identity names the row. Checked after: never trusted blind.
        first = self.COLUMNS[0]
        rank = {id(self.get_cell(key, first)): index for index, key in enumerate(new_keys)}
        if len(rank) != len(new_keys):
            return False
        self.sort(key=lambda cells: rank[id(cells[0])])
        return self._keys() == new_keys

    def _rebuild(self, rows: list[Row], selected: str | None) -> None:
        self.rebuilds += 1
        self.clear()
        for key, cells in rows:
            self.add_row(*cells, key=key)
        self._follow(selected, [key for key, _ in rows])

    def _follow(self, selected: str | None, keys: list[str]) -> None:
        # The cursor stays on its row; a row that vanished leaves it at the top, as a fresh table.
        if selected is None:
            return
        index = keys.index(selected) if selected in keys else 0
        if index != self.cursor_row:
            self.move_cursor(row=index, animate=False)
