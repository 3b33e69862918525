"""Smoke results: pass/fail, latency, the route taken, a snippet, and the reason when it failed."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, LoadingIndicator, Static

from ...smoke import SmokeResult
from ..format import ms, route_label, short

__all__ = ["SmokeScreen"]


class SmokeScreen(ModalScreen[None]):
    """Opened while the app's smoke worker runs; ``show_results`` fills it in."""

    BINDINGS = [Binding("escape,q,enter", "close", "Close", id="smoke.close")]

    def __init__(self, roles: Sequence[str], gateway_url: str, *, origin: str = "") -> None:
        super().__init__()
        self._origin = origin
        self._roles = list(roles)
        self._url = gateway_url
        self.results: list[SmokeResult] | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog dialog-wide", id="smoke-dialog"):
            where = f" ({self._origin})" if self._origin else ""
            yield Label(f"Smoke {', '.join(self._roles)}{where}", classes="dialog-title", markup=False)
            yield Static(f"through {self._url} (the route agents use)", classes="dialog-body", markup=False)
            yield LoadingIndicator(id="smoke-loading")
            table: DataTable[Text] = DataTable(id="smoke-table", cursor_type="row", zebra_stripes=True)
            table.display = False
            yield table
            yield Static("", id="smoke-reasons", markup=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for col in ("Role", "Result", "Status", "Latency", "Route", "Answer"):
            table.add_column(col, key=col)

    def show_results(self, results: list[SmokeResult]) -> None:
        self.results = results
        self.query_one(LoadingIndicator).display = False
        table = self.query_one(DataTable)
        table.display = True
        table.clear()
        # At 80 columns the route and the answer get what is left; the reasons below are never cut.
        narrow = self.app.size.width < 120
        route_w, snippet_w = (22, 14) if narrow else (48, 30)
        for r in results:
            table.add_row(
                Text(r.role, style="bold"),
                Text("PASS", style="bold green") if r.ok else Text("FAIL", style="bold red"),
                Text(str(r.status or "-")),
                Text(ms(r.latency_ms), justify="right"),
                Text(short(route_label(r.route), route_w) or "-", style="cyan" if r.route else "dim"),
                Text(short(r.snippet, snippet_w), style="dim"),
                key=r.role,
            )
        passed = sum(r.ok for r in results)
        reasons = Text(f"{passed}/{len(results)} passed", style="bold green" if passed == len(results) else "bold red")
        for r in results:
            if not r.ok:
                reasons.append(f"\n{r.role}: ", style="bold red")
                reasons.append(r.reason or "failed")
        self.query_one("#smoke-reasons", Static).update(reasons)
        table.focus()

    def show_error(self, message: str) -> None:
        self.query_one(LoadingIndicator).display = False
        self.query_one("#smoke-reasons", Static).update(Text(f"smoke could not run: {message}", style="bold red"))

    def action_close(self) -> None:
        self.dismiss(None)
