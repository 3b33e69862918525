"""One row opened whole: every field of a request or an audit entry, wrapped, scrollable.

At 80 columns a table cannot show every column of a wide row; Enter on the row opens this view
instead of asking the operator to scroll sideways.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

__all__ = ["DetailScreen", "detail_table"]


def detail_table(fields: Sequence[tuple[str, Text | str]]) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False, expand=True)
    table.add_column("field", style="bold cyan", no_wrap=True)
    table.add_column("value", overflow="fold", ratio=1)
    for name, value in fields:
        table.add_row(name, value if isinstance(value, Text) else Text(value))
    return table


class DetailScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,enter", "close", "Close", id="detail.close")]

    def __init__(self, title: str, fields: Sequence[tuple[str, Text | str]]) -> None:
        super().__init__()
        self._title = title
        self.fields = list(fields)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog-wide", id="detail-dialog"):
            yield Label(self._title, classes="dialog-title", markup=False)
            with VerticalScroll(id="detail-scroll"):
                yield Static(detail_table(self.fields), id="detail-body")
            yield Static(Text("Esc closes · ↑/↓ scroll", style="dim"))

    def on_mount(self) -> None:
        self.query_one("#detail-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)
