"""The main screen: every pane at 160x48; the Roles table plus one tabbed pane at 80x24.

Keys act on what the operator sees: the selection of the focused pane, if that pane is shown
(``selection``). A key whose kind of target the focused pane does not hold says so instead of
reaching into a hidden pane's cursor. The selected narrow pane has one source of truth, the tab
strip's ``active`` tab: ``[``/``]`` move it, and the strip's messages only show what it already
holds (they never write back, so a burst of keys cannot start a loop between the two).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.containers import Container
from textual.reactive import reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input, Tab, Tabs

from ...schema import Snapshot
from ..keymap import MAIN_KEYS, bindings, leading_app_bindings
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
from ..widgets.requests import RequestsTable

__all__ = ["PANES", "MainScreen", "Selection"]

# The panes a narrow terminal shows one at a time, under the Roles table.
PANES: tuple[tuple[str, str], ...] = (
    ("hosts", "Hosts"),
    ("models", "Models"),
    ("latency", "Latency"),
    ("errors", "Errors"),
    ("requests", "Requests"),
)
PANE_TITLES = {"roles": "Roles", **dict(PANES)}

# Actions that are keys of this screen: none of them may run while an input has the focus.
_SCREEN_ACTIONS = frozenset(spec.action.split("(")[0] for spec in MAIN_KEYS)


@dataclass(frozen=True, slots=True)
class Selection:
    """What the focused, shown pane has selected, as role / model / host (None: not that kind)."""

    pane: str  # roles, hosts, models, latency, errors, requests; "" when no pane has the focus
    role: str | None = None
    model: str | None = None
    host: str | None = None

    @property
    def where(self) -> str:
        return f"selected in {PANE_TITLES.get(self.pane, self.pane)}" if self.pane else "nothing focused"


class MainScreen(Screen[None]):
    BINDINGS = leading_app_bindings() + bindings(MAIN_KEYS)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]

    # repaint=False: the screen draws none of these itself, its data-bound panes do. A repaint of
    # the screen is a repaint of the whole terminal, on every poll.
    snapshot: reactive[Snapshot | None] = reactive(None, repaint=False)
    link_error: reactive[str | None] = reactive(None, repaint=False)
    link_down_since: reactive[float | None] = reactive(None, repaint=False)
    last_ok: reactive[float | None] = reactive(None, repaint=False)
    link_checked: reactive[float] = reactive(0.0, repaint=False)
    mode: reactive[str] = reactive("", repaint=False)

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status").data_bind(
            MainScreen.snapshot,
            MainScreen.link_error,
            MainScreen.mode,
            MainScreen.link_down_since,
            MainScreen.last_ok,
            MainScreen.link_checked,
        )
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
        self._show(self.pane)

    # ------------------------------------------------------------------ data in
    @on(SnapshotReady)
    def _snapshot_ready(self, message: SnapshotReady) -> None:
        self.snapshot = message.snapshot

    def watch_link_error(self, error: str | None) -> None:
        self.query_one("#panes").set_class(error is not None, "-stale")  # the values below are old

    # ------------------------------------------------------------------ narrow view
    @property
    def narrow(self) -> bool:
        return self.has_class("-narrow") or (not self.has_class("-wide") and self.size.width < 120)

    @property
    def pane(self) -> str:
        """The pane shown under Roles on a narrow terminal (the tab strip holds it)."""
        active = self.query_one(Tabs).active or "tab-hosts"
        return active.removeprefix("tab-")

    def _show(self, pane: str) -> None:
        for key, _ in PANES:
            self.query_one(f"#pane-{key}").set_class(key == pane, "-shown")

    @on(Tabs.TabActivated, "#pane-tabs")
    def _tab_activated(self, event: Tabs.TabActivated) -> None:
        # Read the strip, not the message: a queued message may be older than the strip.
        self._show(self.pane)

    def show_pane(self, pane: str) -> None:
        tabs = self.query_one(Tabs)
        tabs.active = f"tab-{pane}"
        self._show(pane)
        if self.narrow and self._focused_pane() not in ("roles", pane):
            self._focus_pane(pane)  # focus must not stay in a pane that is now hidden

    def action_cycle_pane(self, step: int) -> None:
        keys = [key for key, _ in PANES]
        if self.narrow:
            self.show_pane(keys[(keys.index(self.pane) + step) % len(keys)])
            return
        # Wide: every pane is shown; [ and ] move the focus through them in the same order.
        order = ["roles", *keys]
        here = self._focused_pane() or "roles"
        target = order[(order.index(here) + step) % len(order)]
        if target != "roles":
            self.show_pane(target)
        self._focus_pane(target)

    def _focus_pane(self, pane: str) -> None:
        widget: Widget = self.query_one(f"#pane-{pane}")
        if isinstance(widget, RequestsPane):
            widget = widget.query_one(RequestsTable)
        elif isinstance(widget, ErrorsPane):
            widget.can_focus = True
        # Screen.set_focus moves the focus now; Widget.focus() defers it, and the next key of a burst
        # would then step from the old pane (keys arriving together lost a step each).
        self.set_focus(widget)

    # ------------------------------------------------------------------ selection
    def _focused_pane(self) -> str | None:
        node = self.focused
        while node is not None:
            if isinstance(node, Widget) and node.has_class("pane") and node.id:
                return node.id.removeprefix("pane-")
            parent = node.parent
            node = parent if isinstance(parent, Widget) else None
        return None

    def _shown(self, pane: str) -> bool:
        return pane == "roles" or not self.narrow or pane == self.pane

    @property
    def selection(self) -> Selection:
        """The focused pane's selection, if that pane is shown; what each row stands for."""
        pane = self._focused_pane()
        snap = self.snapshot
        if pane is None or not self._shown(pane):
            return Selection("")
        if pane == "roles":
            role = self.query_one(RolesTable).selected_role
            info = next((r for r in snap.roles if r.name == role), None) if snap and role else None
            model = info.model if info else None
            return Selection(pane, role=role, model=model, host=self._only_host(model))
        if pane == "models":
            model = self.query_one(ModelsTable).selected_model
            m = next((x for x in snap.models if x.id == model), None) if snap and model else None
            role = m.roles[0] if m and len(m.roles) == 1 else None
            return Selection(pane, role=role, model=model, host=self._only_host(model))
        if pane == "hosts":
            return Selection(pane, host=self.query_one(HostsList).selected_host)
        if pane == "requests":
            table = self.query_one(RequestsTable)
            key = table.selected_key
            record = table.records.get(key) if key else None
            if record is None:
                return Selection(pane)
            return Selection(pane, role=record.role, model=record.model, host=record.host)
        return Selection(pane)

    def _only_host(self, model: str | None) -> str | None:
        snap = self.snapshot
        m = next((x for x in snap.models if x.id == model), None) if snap and model else None
        return m.hosts[0] if m and len(m.hosts) == 1 else None

    # Kept for the palette and tests: the selection of each kind, wherever the focus is.
    @property
    def selected_role(self) -> str | None:
        return self.selection.role

    @property
    def selected_model(self) -> str | None:
        return self.selection.model

    @property
    def selected_host(self) -> str | None:
        return self.selection.host

    def _pick(self, kind: str, key: str, hint: str) -> tuple[str, str] | None:
        """The ``kind`` (role, model, host) the focused pane has selected, with where it came from;
        else a notice saying what to select, and None."""
        sel = self.selection
        value = getattr(sel, kind)
        if value is not None:
            return value, sel.where
        if self.snapshot is None:
            self.notify(f"{key}: nothing to act on yet (waiting for the gateway)", severity="warning", markup=False)
        elif not sel.pane:
            self.notify(f"{key} needs a {kind}: {hint}", severity="warning", markup=False)
        else:
            self.notify(
                f"{key} needs a {kind} and {PANE_TITLES.get(sel.pane, sel.pane)} has none selected: {hint}",
                severity="warning",
                markup=False,
            )
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A key typed into an input is text, never a command (the filter box, a dialog's field).
        return not (action in _SCREEN_ACTIONS and isinstance(self.focused, Input))

    # ------------------------------------------------------------------ keys -> requests
    def action_swap(self) -> None:
        if got := self._pick("role", "s", "select one in Roles"):
            self.post_message(SwapRequested(got[0], origin=got[1]))

    def action_rollback(self) -> None:
        if got := self._pick("role", "r", "select one in Roles"):
            self.post_message(RollbackRequested(got[0], origin=got[1]))

    def action_rollback_trial(self) -> None:
        self.post_message(RollbackTrialRequested())

    def action_deprecate(self) -> None:
        if got := self._pick("model", "d", "select one in Models (or a role in Roles: its model)"):
            self.post_message(DeprecationRequested(got[0], origin=got[1]))

    def action_smoke(self) -> None:
        if got := self._pick("role", "t", "select one in Roles (T smokes every role)"):
            self.post_message(SmokeRequested([got[0]], origin=got[1]))

    def action_smoke_all(self) -> None:
        self.post_message(SmokeRequested(None))

    def action_job(self, kind: str) -> None:
        key = "b" if kind == "rebuild" else "v"
        if got := self._pick("host", key, "select one in Hosts"):
            self.post_message(JobRequested(kind, got[0], origin=got[1]))

    def action_job_log(self) -> None:
        self.post_message(JobLogRequested(self.selection.host))

    def action_filter(self) -> None:
        # Show the pane first (a hidden input takes no focus), then focus its filter box.
        self.show_pane("requests")
        self.query_one(RequestsPane).open_filter()
