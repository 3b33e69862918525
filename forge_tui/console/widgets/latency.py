"""Latency pane: p50/p95 over the window as a plotext chart, plus requests/s.

The chart and its legend follow one grouping: per role (the default), per model or per host,
cycled with ``g`` while the pane has focus. Requests that never resolved a route ("(unrouted)":
404s, malformed bodies) count toward req/s but get no line: their latency says nothing about a
backend.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Static
from textual_plotext import PlotextPlot

from ...schema import RoleStats, Snapshot, TelemetryInfo
from ..format import ms
from ..keymap import PANE_KEYS, bindings
from ._quiet import same_text, set_subtitle, text_height

__all__ = ["GROUPS", "UNROUTED", "LatencyChart", "LatencyPane", "group_stats", "legend"]

# Fixed colours per series position so a series keeps its colour between redraws.
# (plotext colour, Rich colour) pairs: the two libraries name some colours differently.
PALETTE = (
    ("cyan", "cyan"),
    ("orange", "dark_orange"),
    ("green", "green"),
    ("magenta", "magenta"),
    ("yellow", "yellow"),
    ("blue", "blue"),
    ("red", "red"),
)

GROUPS: tuple[str, ...] = ("role", "model", "host")
UNROUTED = "(unrouted)"  # the telemetry's name for requests that never resolved a route


def group_stats(tel: TelemetryInfo, group: str) -> list[RoleStats]:
    """The window figures of one grouping, without the "(unrouted)" pseudo-series."""
    stats = {"role": tel.roles, "model": tel.models, "host": tel.hosts}[group]
    return [s for s in stats if s.role != UNROUTED]


def legend(tel: TelemetryInfo, group: str) -> Text:
    """One entry per charted series, coloured like its line: name p50/p95 rate."""
    line = Text()
    for index, stats in enumerate(group_stats(tel, group)):
        if line:
            line.append("  ")
        line.append("■ ", style=PALETTE[index % len(PALETTE)][1])
        line.append(f"{stats.role} ", style="bold")
        line.append(f"{ms(stats.p50_ms)}/{ms(stats.p95_ms)} {stats.rps:.2f}/s")
    if not line:
        line.append(f"p50/p95 per {group} appear here once requests arrive", style="dim")
    return line


class LatencyChart(PlotextPlot):
    """The chart alone; x is minutes before the snapshot, so a replayed window draws the same."""

    snapshot: reactive[Snapshot | None] = reactive(None, repaint=False)  # redraws what changed itself
    group: reactive[str] = reactive("role")

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None, disabled: bool = False
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.lines: list[str] = []  # labels of the lines last drawn (what the operator sees)
        self.draws = 0  # plots rebuilt (kept for tests and diagnosis)
        self._drawn: tuple[object, ...] | None = None  # what the last plot was drawn from
        self._drawn_at = 0.0  # the taken_at of the snapshot it was drawn for

    def watch_snapshot(self) -> None:
        self._draw()

    def watch_group(self) -> None:
        self._draw()

    def _draw(self) -> None:
        snapshot = self.snapshot
        if snapshot is None:
            return
        tel = snapshot.telemetry
        view = (self.group, tel.window_s, [(s.role, s.series) for s in group_stats(tel, self.group)])
        # x is relative to the snapshot's time, so an idle window still slides left: redraw once
        # it has slid by one braille sub-column, never for less (the plot would look the same).
        step = tel.window_s / max(2 * self.size.width, 1)
        if view == self._drawn and abs(snapshot.taken_at - self._drawn_at) < step:
            return
        self._drawn, self._drawn_at = view, snapshot.taken_at
        self.draws += 1
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        now = snapshot.taken_at
        lines: list[str] = []
        for index, stats in enumerate(group_stats(snapshot.telemetry, self.group)):
            color = PALETTE[index % len(PALETTE)][0]
            p50 = [((p.t - now) / 60.0, p.p50_ms) for p in stats.series if p.p50_ms is not None]
            p95 = [((p.t - now) / 60.0, p.p95_ms) for p in stats.series if p.p95_ms is not None]
            if p50:
                plt.plot(
                    [x for x, _ in p50], [y for _, y in p50], label=f"{stats.role} p50", color=color, marker="braille"
                )
                lines.append(f"{stats.role} p50")
            if p95:
                plt.plot([x for x, _ in p95], [y for _, y in p95], label=f"{stats.role} p95", color=color, marker="dot")
                lines.append(f"{stats.role} p95")
        window_min = snapshot.telemetry.window_s / 60.0
        plt.xlim(-window_min, 0)
        plt.xlabel("minutes ago")
        plt.ylabel("ms")
        if not lines:
            plt.title("no requests in the window yet")
        self.lines = lines
        self.refresh()


class LatencyPane(Vertical, can_focus=True):
    BINDINGS = bindings(PANE_KEYS)

    snapshot: reactive[Snapshot | None] = reactive(None, repaint=False)  # redraws what changed itself
    group: reactive[str] = reactive("role")

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._legend: Text | None = None  # the legend on screen
        self._legend_height: int | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="latency-summary")
        yield LatencyChart(id="latency-chart").data_bind(LatencyPane.snapshot, LatencyPane.group)

    def on_mount(self) -> None:
        self._title()

    def on_resize(self) -> None:
        self._legend_height = None  # measured at the old width; the next legend re-measures

    def action_cycle_group(self) -> None:
        self.group = GROUPS[(GROUPS.index(self.group) + 1) % len(GROUPS)]

    def _title(self) -> None:
        self.border_title = f"Latency by {self.group}"

    def watch_group(self) -> None:
        if self.is_mounted:
            self._title()
            self._summary()

    def watch_snapshot(self) -> None:
        if self.is_mounted:
            self._summary()

    def _summary(self) -> None:
        snapshot = self.snapshot
        if snapshot is None:
            return
        tel = snapshot.telemetry
        set_subtitle(self, f"{tel.rps:.2f} req/s · {tel.total} req in {tel.window_s / 60:.0f} min")
        text = legend(tel, self.group)
        if same_text(text, self._legend):
            return
        summary = self.query_one("#latency-summary", Static)
        height = text_height(summary, text)
        # A layout pass (the whole screen) only when the legend's line count changes.
        summary.update(text, layout=height is None or height != self._legend_height)
        self._legend, self._legend_height = text, height
