"""The ``?`` screen: every key, generated from the same table that binds them."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from ..keymap import HELP_KEYS, KeySpec

__all__ = ["HelpScreen", "key_table"]


def key_table(specs: tuple[KeySpec, ...], keymap: dict[str, str]) -> Table:
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    table.add_column("Key", style="bold cyan", no_wrap=True)
    table.add_column("What it does")
    for spec in specs:
        key = keymap.get(spec.id) or spec.display or spec.key
        table.add_row(key, spec.help)
    table.add_row("ctrl+p", "Command palette: every action above, by name, for any role, model or host.")
    table.add_row("tab", "Move between panes (wide terminal); [ and ] switch the pane on a narrow one.")
    return table


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", id="help.close")]

    def __init__(self, keymap: dict[str, str] | None = None) -> None:
        super().__init__()
        self._keymap = keymap or {}

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog-wide", id="help-dialog"):
            yield Label("forge keys", classes="dialog-title")
            with VerticalScroll():
                yield Static(key_table(HELP_KEYS, self._keymap))
                yield Static(
                    Text(
                        "s/r/t act on the selected row of Roles, d on Models, b/v on Hosts. "
                        "Every change goes through the gateway's state overlay and audit log and takes "
                        "effect on the next request; a refused change changes nothing.",
                        style="dim",
                    )
                )

    def action_close(self) -> None:
        self.dismiss(None)
