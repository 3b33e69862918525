"""The main screen: every pane at 160x48; the Roles table plus one tabbed pane at 80x24.

It owns the selection (role, model, host) and turns keys into ``*Requested`` messages for the
app. Panes get the snapshot through data binding from this screen's reactive.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Container
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Tab, Tabs

from ...schema import Snapshot
from ..keymap import MAIN_KEYS, bindings
from ..messages import (
    DeprecationRequested,
    JobLogRequested,
    JobRequested,
    RollbackRequested,
    RollbackTrialRequested,
    SmokeRequested,
    SnapshotReady,
    SwapRequested,
)
from ..widgets import ErrorsPane, HostsList, LatencyPane, ModelsTable, RequestsPane, RolesTable, StatusBar

__all__ = ["PANES", "MainScreen"]

# The panes a narrow terminal shows one at a time, under the Roles table.
PANES: tuple[tuple[str, str], ...] = (
    ("hosts", "Hosts"),
    ("models", "Models"),
    ("latency", "Latency"),
    ("errors", "Errors"),
    ("requests", "Requests"),
)


class MainScreen(Screen[None]):
    BINDINGS = bindings(MAIN_KEYS)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]

    # repaint=False: the screen draws none of these itself, its data-bound panes do. A repaint of
    # the screen is a repaint of the whole terminal, on every poll.
    snapshot: reactive[Snapshot | None] = reactive(None, repaint=False)
    link_error: reactive[str | None] = reactive(None, repaint=False)
    mode: reactive[str] = reactive("", repaint=False)
    pane: reactive[str] = reactive("hosts", init=False)

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status").data_bind(MainScreen.snapshot, MainScreen.link_error, MainScreen.mode)
        with Container(id="panes"):
            yield RolesTable(id="pane-roles", classes="pane").data_bind(MainScreen.snapshot)
            tabs = Tabs(*(Tab(label, id=f"tab-{key}") for key, label in PANES), id="pane-tabs")
            tabs.can_focus = False
            yield tabs
            yield HostsList(id="pane-hosts", classes="pane").data_bind(MainScreen.snapshot)
            yield ModelsTable(id="pane-models", classes="pane").data_bind(MainScreen.snapshot)
            yield LatencyPane(id="pane-latency", classes="pane").data_bind(MainScreen.snapshot)
            yield ErrorsPane(id="pane-errors", classes="pane").data_bind(MainScreen.snapshot)
            yield RequestsPane(id="pane-requests", classes="pane").data_bind(MainScreen.snapshot)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(RolesTable).focus()
        self.watch_pane(self.pane)

    # ------------------------------------------------------------------ data in
    @on(SnapshotReady)
    def _snapshot_ready(self, message: SnapshotReady) -> None:
        self.snapshot = message.snapshot

    # ------------------------------------------------------------------ narrow view
    def watch_pane(self, pane: str) -> None:
        for key, _ in PANES:
            self.query_one(f"#pane-{key}").set_class(key == pane, "-shown")
        tabs = self.query_one(Tabs)
        if tabs.active != f"tab-{pane}":
            tabs.active = f"tab-{pane}"

    @on(Tabs.TabActivated, "#pane-tabs")
    def _tab_activated(self, event: Tabs.TabActivated) -> None:
        if event.tab is not None and event.tab.id:
            self.pane = event.tab.id.removeprefix("tab-")

    def show_pane(self, pane: str) -> None:
        self.pane = pane

    def action_cycle_pane(self, step: int) -> None:
        keys = [key for key, _ in PANES]
        self.pane = keys[(keys.index(self.pane) + step) % len(keys)]

    # ------------------------------------------------------------------ selection
    @property
    def selected_role(self) -> str | None:
        return self.query_one(RolesTable).selected_role

    @property
    def selected_model(self) -> str | None:
        return self.query_one(ModelsTable).selected_model

    @property
    def selected_host(self) -> str | None:
        return self.query_one(HostsList).selected_host

    def _need(self, value: str | None, what: str) -> str | None:
        if value is None:
            self.notify(f"no {what} selected yet (waiting for the gateway?)", severity="warning")
        return value

    # ------------------------------------------------------------------ keys -> requests
    def action_swap(self) -> None:
        if role := self._need(self.selected_role, "role"):
            self.post_message(SwapRequested(role))

    def action_rollback(self) -> None:
        if role := self._need(self.selected_role, "role"):
            self.post_message(RollbackRequested(role))

    def action_rollback_trial(self) -> None:
        self.post_message(RollbackTrialRequested())

    def action_deprecate(self) -> None:
        if model := self._need(self.selected_model, "model"):
            self.post_message(DeprecationRequested(model))

    def action_smoke(self) -> None:
        if role := self._need(self.selected_role, "role"):
            self.post_message(SmokeRequested([role]))

    def action_smoke_all(self) -> None:
        self.post_message(SmokeRequested(None))

    def action_job(self, kind: str) -> None:
        if host := self._need(self.selected_host, "host"):
            self.post_message(JobRequested(kind, host))

    def action_job_log(self) -> None:
        self.post_message(JobLogRequested(self.selected_host))

    def action_filter(self) -> None:
        self.pane = "requests"
        self.query_one(RequestsPane).open_filter()
