"""Requests pane: a live tail of request records, newest first, filterable with ``/``."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Input

from ...schema import RequestInfo, Snapshot
from ..format import clock, ms
from ._quiet import set_subtitle
from ._table import Row, SnapshotTable

__all__ = ["RequestsPane", "RequestsTable", "matches"]


def _haystack(r: RequestInfo) -> str:
    return " ".join(
        str(v)
        for v in (
            r.request_id,
            r.endpoint,
            r.role,
            r.model,
            r.host,
            r.backend,
            r.status,
            r.error_class,
            "stream" if r.stream else "",
            "fallback" if r.fallback else "",
            "leak" if r.thinking_leaked else "",
        )
        if v
    ).lower()


def matches(record: RequestInfo, query: str) -> bool:
    """Every whitespace-separated term must appear somewhere in the record (case-insensitive)."""
    hay = _haystack(record)
    return all(term in hay for term in query.lower().split())


def _status(r: RequestInfo) -> Text:
    style = "green" if r.status < 400 else "yellow" if r.status < 500 else "bold red"
    out = Text(str(r.status), style=style)
    if r.error_class != "ok":
        out.append(f" {r.error_class}", style=style)
    return out


def _flags(r: RequestInfo) -> Text:
    out = Text()
    if r.stream:
        out.append("S", style="cyan")
    if r.fallback:
        out.append("F", style="bold yellow")
    if r.thinking_injected:
        out.append("t", style="dim")
    if r.thinking_leaked:
        out.append("L", style="bold red")
    return out


TAIL = 200  # rows drawn; the filter still searches every record the snapshot carries


class RequestsTable(SnapshotTable):
    COLUMNS = ("Time", "Route", "Status", "Latency", "TTFT", "Tok in/out", "Flags")
    query: reactive[str] = reactive("")

    def view_of(self, snapshot: Snapshot) -> object:
        return (self.query, snapshot.telemetry.recent)

    def rows_for(self, snapshot: Snapshot) -> list[Row]:
        records = sorted(snapshot.telemetry.recent, key=lambda r: r.time, reverse=True)
        rows: list[Row] = []
        for r in records:
            if self.query and not matches(r, self.query):
                continue
            if len(rows) >= TAIL:
                break
            if r.role is None and r.model is None:
                route = Text(r.endpoint, style="dim")  # refused before routing (unknown role, bad body)
            else:
                route = Text(r.role or "-", style="bold")
                route.append(f" → {r.model or '-'}")
            if r.host:
                route.append(f"@{r.host}", style="dim")
            tokens = (
                f"{r.tokens_in if r.tokens_in is not None else '-'}/{r.tokens_out if r.tokens_out is not None else '-'}"
            )
            rows.append(
                (
                    r.request_id,
                    (
                        Text(clock(r.time), style="dim"),
                        route,
                        _status(r),
                        Text(ms(r.latency_ms), justify="right"),
                        Text(ms(r.ttft_ms), justify="right"),
                        Text(tokens, justify="right"),
                        _flags(r),
                    ),
                )
            )
        return rows

    def watch_query(self) -> None:
        self.refresh_rows()


class RequestsPane(Vertical):
    """The tail plus its filter box (shown while editing or while a filter is set)."""

    BINDINGS = [Binding("escape", "clear_filter", "Clear filter", show=False)]

    snapshot: reactive[Snapshot | None] = reactive(None, repaint=False)  # redraws what changed itself

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder="filter: role, model, status, error class… (Enter keeps, Esc clears)", id="requests-filter"
        )
        yield RequestsTable(id="requests-table").data_bind(RequestsPane.snapshot)

    def on_mount(self) -> None:
        self.border_title = "Requests"

    def watch_snapshot(self, snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            set_subtitle(self, f"{snapshot.telemetry.inflight} in flight")

    def open_filter(self) -> None:
        self.add_class("-filtering")
        self.query_one(Input).focus()

    @on(Input.Changed, "#requests-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.query_one(RequestsTable).query = event.value.strip()

    @on(Input.Submitted, "#requests-filter")
    def _filter_kept(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value.strip():
            self.remove_class("-filtering")
        self.query_one(RequestsTable).focus()

    def action_clear_filter(self) -> None:
        self.query_one(Input).value = ""
        self.query_one(RequestsTable).query = ""
        self.remove_class("-filtering")
        self.query_one(RequestsTable).focus()

    @property
    def filter_text(self) -> str:
        return self.query_one(RequestsTable).query
