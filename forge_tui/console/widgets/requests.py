"""Requests pane: a live tail of request records, newest first, filterable with ``/``.

Rows are keyed by the gateway's own sequence number (``RequestInfo.seq``), never by anything a
caller sent: two requests with the same ``X-Request-Id`` are two rows. Every value that came from
a request (ids, model names) is drawn through ``format.clean`` (no markup, no control characters,
bounded length). The newest row stays in view while the cursor is on it; once the operator moves
away, the rows that arrived since are counted in the border ("N new") until Home brings them back.
Enter opens the whole record.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import DataTable, Input

from ...schema import RequestInfo, Snapshot
from ..format import clean, clock, ms
from ._guard import guarded
from ._quiet import set_subtitle
from ._table import Row, SnapshotTable

__all__ = ["FLAGS", "RequestsPane", "RequestsTable", "endpoint_tag", "matches", "request_details", "status_label"]

# The flags column, in the order it is drawn; the help screen and the pane title explain them.
FLAGS: tuple[tuple[str, str, str], ...] = (
    ("S", "stream", "stream"),
    ("F", "fallback (another model or placement answered)", "fallback"),
    ("t", "thinking switched off by the gateway", "think off"),
    ("L", "thinking leaked into the answer", "think leak"),
)

# Short names of the error classes, for the Status column at 80 columns.
_SHORT_CLASS = {
    "caller_error": "caller",
    "not_found": "no route",
    "payload_too_large": "too big",
    "saturated": "busy",
    "upstream_unreachable": "unreach",
    "upstream_startup": "starting",
    "upstream_timeout": "timeout",
    "upstream_error": "upstream",
    "model_output": "output",
    "gateway_error": "gateway",
}

_ENDPOINT_TAGS = {
    "/v1/chat/completions": "",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/audio/transcriptions": "transcription",
    "/v1/audio_qa": "audio qa",
}

NARROW = 110  # below this table width, cells are abbreviated so every column fits


def endpoint_tag(endpoint: str) -> str:
    """What the row says about the endpoint: nothing for chat, a short name for the others."""
    return _ENDPOINT_TAGS.get(endpoint, clean(endpoint, 30))


def _haystack(r: RequestInfo) -> str:
    return " ".join(
        str(v)
        for v in (
            r.request_id,
            r.endpoint,
            r.role,
            r.model,
            r.asked,
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


def status_label(r: RequestInfo, narrow: bool = False) -> Text:
    style = "green" if r.status < 400 else "yellow" if r.status < 500 else "bold red"
    out = Text(str(r.status), style=style)
    if r.error_class != "ok":
        name = _SHORT_CLASS.get(r.error_class, r.error_class) if narrow else r.error_class
        out.append(f" {clean(name, 24)}", style=style)
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


def _route(r: RequestInfo, limit: int | None) -> Text:
    """role → model@host; a request that never got a route shows the model name it asked for."""
    tag = endpoint_tag(r.endpoint)
    out = Text()
    if tag:
        out.append(f"{tag} ", style="magenta")
    if r.role is None and r.model is None:
        if r.asked:
            out.append(clean(r.asked, 60), style="yellow")  # what the caller asked for (a 404)
            out.append(" ?", style="dim")
        elif not tag:
            out.append(clean(r.endpoint, 40), style="dim")  # refused before routing (bad body, bad key)
    else:
        out.append(r.role or "-", style="bold")
        out.append(f" → {r.model or '-'}")
        if r.host:
            out.append(f"@{r.host}", style="dim")
    if limit is not None and len(out) > limit:
        out.truncate(max(1, limit - 1))
        out.append("…", style="dim")
    return out


def request_details(r: RequestInfo) -> list[tuple[str, Text]]:
    """Every field of one record, as the detail view shows it."""
    flags = ", ".join(name for letter, name, _ in FLAGS if letter in _flags(r).plain) or "-"
    tokens = f"{r.tokens_in if r.tokens_in is not None else '-'} in / {r.tokens_out if r.tokens_out is not None else '-'} out"
    return [
        ("time", Text(clock(r.time))),
        ("request id", Text(clean(r.request_id, 200))),
        ("endpoint", Text(clean(r.endpoint, 200))),
        ("asked for", Text(clean(r.asked, 400) or "-")),
        ("role", Text(r.role or "-")),
        ("model", Text(r.model or "-")),
        ("host / backend", Text(f"{r.host or '-'} / {r.backend or '-'}")),
        ("status", status_label(r)),
        ("latency", Text(ms(r.latency_ms))),
        ("time to first token", Text(ms(r.ttft_ms))),
        ("tokens", Text(tokens)),
        ("flags", Text(flags)),
    ]


TAIL = 200  # rows drawn; the filter still searches every record the snapshot carries


class RequestsTable(SnapshotTable):
    COLUMNS = ("Time", "Route", "Status", "Latency", "TTFT", "Tokens", "Flags")
    BINDINGS = [Binding("home", "newest", "Newest", show=False)]
    # The filter text. It shadows DOMNode.query(), which this widget never calls (it has no children
    # to look up); the app and tests set it by this name.
    query: reactive[str] = reactive("")  # type: ignore[assignment]
    unseen: reactive[int] = reactive(0)  # rows that arrived while the operator was scrolled away

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.records: dict[str, RequestInfo] = {}  # row key -> the record it shows

    @property
    def narrow(self) -> bool:
        return 0 < self.size.width < NARROW

    def view_of(self, snapshot: Snapshot) -> object:
        return (self.query, self.narrow, self.size.width if self.narrow else 0, snapshot.telemetry.recent)

    def on_resize(self) -> None:
        self.refresh_rows()

    def rows_for(self, snapshot: Snapshot) -> list[Row]:
        records = sorted(snapshot.telemetry.recent, key=lambda r: (r.time, r.seq), reverse=True)
        narrow = self.narrow
        # At 80 columns the route gets what the other columns leave (they need about 58).
        limit = max(14, self.size.width - 58) if narrow else None
        rows: list[Row] = []
        keys: set[str] = set()
        self.records = {}
        for index, r in enumerate(records):
            if self.query and not matches(r, self.query):
                continue
            if len(rows) >= TAIL:
                break
            key = str(r.seq) if r.seq else f"~{index}"  # a gateway without seq: position (still unique)
            if key in keys:
                key = f"{key}~{index}"
            keys.add(key)
            self.records[key] = r
            tokens = (
                f"{r.tokens_in if r.tokens_in is not None else '-'}/{r.tokens_out if r.tokens_out is not None else '-'}"
            )
            rows.append(
                (
                    key,
                    (
                        Text(clock(r.time), style="dim"),
                        _route(r, limit),
                        status_label(r, narrow),
                        Text(ms(r.latency_ms), justify="right"),
                        Text(ms(r.ttft_ms), justify="right"),
                        Text(tokens, justify="right"),
                        _flags(r),
                    ),
                )
            )
        return rows

    @property
    def following(self) -> bool:
        """The operator is at the newest row (the tail keeps it in view)."""
        return self.cursor_row <= 0 and self.scroll_y <= 0

    def sync(self, rows: list[Row]) -> None:
        following = self.following
        before = set(self._keys())
        super().sync(rows)  # keeps the cursor on the row it was on
        if following:
            self.unseen = 0
            if self.row_count and self.cursor_row != 0:
                self.move_cursor(row=0, animate=False)
            self.scroll_to(y=0, animate=False)
        elif before:
            self.unseen += sum(1 for key, _ in rows if key not in before)

    def watch_cursor_coordinate(self, old: object, new: object) -> None:
        super().watch_cursor_coordinate(old, new)  # type: ignore[arg-type]
        if self.cursor_row == 0:
            self.unseen = 0

    def action_newest(self) -> None:
        self.unseen = 0
        if self.row_count:
            self.move_cursor(row=0, animate=False)
        self.scroll_to(y=0, animate=False)

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
        self.border_title = "Requests · " + " · ".join(f"{letter} {short}" for letter, _, short in FLAGS)
        self.watch(self.query_one(RequestsTable), "unseen", self._subtitle, init=False)

    @guarded
    def watch_snapshot(self, snapshot: Snapshot | None) -> None:
        self._subtitle()

    def _subtitle(self, _: object = None) -> None:
        snapshot = self.snapshot
        if snapshot is None:
            return
        unseen = self.query_one(RequestsTable).unseen
        text = f"{snapshot.telemetry.inflight} in flight"
        if unseen:
            text = f"{unseen} new (Home) · " + text
        set_subtitle(self, text)

    def open_filter(self) -> None:
        """Show the filter box and focus it (the pane must be shown first: a hidden input takes no focus)."""
        self.add_class("-filtering")
        box = self.query_one(Input)
        box.display = True
        box.focus()

    @on(Input.Changed, "#requests-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.query_one(RequestsTable).query = event.value.strip()

    @on(Input.Submitted, "#requests-filter")
    def _filter_kept(self, event: Input.Submitted) -> None:
        event.stop()
        if not event.value.strip():
            self._close_filter()
        self.query_one(RequestsTable).focus()

    @on(DataTable.RowSelected, "#requests-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        record = self.query_one(RequestsTable).records.get(str(event.row_key.value))
        if record is not None:
            from ..screens.detail import DetailScreen

            self.app.push_screen(DetailScreen(f"Request {clock(record.time)}", request_details(record)))

    def _close_filter(self) -> None:
        self.remove_class("-filtering")
        self.query_one(Input).display = False

    def action_clear_filter(self) -> None:
        self.query_one(Input).value = ""
        self.query_one(RequestsTable).query = ""
        self._close_filter()
        self.query_one(RequestsTable).focus()

    @property
    def filter_text(self) -> str:
        return self.query_one(RequestsTable).query
