"""The ``?`` screen: every key, generated from the same tables that bind them, and the flags legend.

It scrolls (Up/Down, PageUp/PageDown, Home/End) so it is whole at 80x24 too.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from ..keymap import HELP_KEYS, SCREEN_HELP, KeySpec
from ..widgets.requests import FLAGS

__all__ = ["HelpScreen", "flags_legend", "key_table"]


def key_table(specs: tuple[KeySpec, ...], keymap: dict[str, str]) -> Table:
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    table.add_column("Key", style="bold cyan", no_wrap=True)
    table.add_column("What it does")
    for spec in specs:
        key = keymap.get(spec.id) or spec.display or spec.key
        table.add_row(key, spec.help)
    table.add_row("ctrl+p", "Command palette: every action above, by name, for any role, model or host.")
    table.add_row(
        "tab", "Move between panes; [ and ] switch the pane on a narrow terminal, move the focus on a wide one."
    )
    return table


def screen_table() -> Table:
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    table.add_column("Key", style="bold cyan", no_wrap=True)
    table.add_column("Elsewhere")
    for key, what in SCREEN_HELP:
        table.add_row(key, what)
    return table


def flags_legend() -> Text:
    out = Text("Flags column of Requests: ", style="bold")
    for index, (letter, name, _) in enumerate(FLAGS):
        if index:
            out.append(" · ")
        out.append(letter, style="bold cyan")
        out.append(f" {name}")
    out.append(" (St: a stream with thinking switched off).", style="dim")
    return out


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close", id="help.close")]

    def __init__(self, keymap: dict[str, str] | None = None) -> None:
        super().__init__()
        self._keymap = keymap or {}

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog-wide", id="help-dialog"):
            yield Label("forge keys  (↑↓ PgUp PgDn Home End scroll · Esc closes)", classes="dialog-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(key_table(HELP_KEYS, self._keymap))
                yield Static(Text(""))
                yield Static(screen_table())
                yield Static(Text(""))
                yield Static(flags_legend())
                yield Static(
                    Text(
                        "Keys act on the selection of the focused pane (s/r/t a role, d a model, b/v a host; a row "
                        "of Roles also stands for its model, a row of Requests for its role, model and host); a "
                        "dialog says where its target was picked. Every change goes through the gateway's state "
                        "overlay and audit log and takes effect on the next request; a refused change changes "
                        "nothing. Text typed into a filter or a field never triggers a key.",
                        style="dim",
                    )
                )

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)
