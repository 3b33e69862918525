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
from ._guard import guarded
from ._quiet import same_text, set_subtitle, text_height

__all__ = ["GROUPS", "UNROUTED", "LatencyChart", "LatencyPane", "group_stats", "legend", "scale"]

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


def _entries(tel: TelemetryInfo, group: str) -> list[Text]:
    out: list[Text] = []
    for index, stats in enumerate(group_stats(tel, group)):
        entry = Text("■ ", style=PALETTE[index % len(PALETTE)][1])
        entry.append(f"{stats.role} ", style="bold")
        entry.append(f"{ms(stats.p50_ms)}/{ms(stats.p95_ms)} {stats.rps:.2f}/s")
        out.append(entry)
    return out


def legend(tel: TelemetryInfo, group: str, width: int = 0) -> Text:
    """One entry per charted series, coloured like its line: name p50/p95 rate. Entries are laid
    out whole on lines of ``width`` (0: one line); one never wraps in its middle."""
    line = Text()
    used = 0
    for entry in _entries(tel, group):
        if used and width and used + 2 + len(entry) > width:
            line.append("\n")
            used = 0
        elif used:
            line.append("  ")
            used += 2
        line.append_text(entry)
        used += len(entry)
    if not line:
        line.append(f"p50/p95 per {group} appear here once requests arrive", style="dim")
    return line


def scale(values: list[float]) -> tuple[float, str, float | None]:
    """(divisor, unit, clip): seconds once anything passes 1,000 ms; a clip above the bulk of the
    values when a few outliers would flatten every other line (None: nothing to clip)."""
    if not values:
        return 1.0, "ms", None
    ordered = sorted(values)
    bulk = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    top = ordered[-1]
    clip = bulk * 1.5 if len(ordered) >= 5 and top > 3 * bulk > 0 else None
    shown_top = clip if clip is not None else top
    return (1000.0, "s", clip) if shown_top >= 1000 else (1.0, "ms", clip)


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

    @guarded
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
        groups = group_stats(snapshot.telemetry, self.group)
        every = [p.p95_ms for st in groups for p in st.series if p.p95_ms is not None]
        every += [p.p50_ms for st in groups for p in st.series if p.p50_ms is not None]
        div, unit, clip = scale(every)
        top = clip if clip is not None else None
        clipped_x: list[float] = []
        for index, stats in enumerate(groups):
            color = PALETTE[index % len(PALETTE)][0]
            for name, marker in (("p50", "braille"), ("p95", "dot")):
                points = [((p.t - now) / 60.0, getattr(p, f"{name}_ms")) for p in stats.series]
                points = [(x, y) for x, y in points if y is not None]
                if not points:
                    continue
                if top is not None:
                    clipped_x += [x for x, y in points if y > top]
                    points = [(x, min(y, top)) for x, y in points]
                plt.plot(
                    [x for x, _ in points],
                    [y / div for _, y in points],
                    label=f"{stats.role} {name}",
                    color=color,
                    marker=marker,
                )
                lines.append(f"{stats.role} {name}")
        p95s = [st.p95_ms for st in groups if st.p95_ms is not None]
        if p95s:  # the window's p95 as a flat line: where most requests end
            window_p95 = min(max(p95s), top) if top is not None else max(p95s)
            plt.hline(window_p95 / div, "gray")
        if clipped_x and top is not None:  # outliers drawn at the clip, marked, never stretching the axis
            plt.scatter(clipped_x, [top / div] * len(clipped_x), marker="▲", color="red")
            plt.ylim(0, top / div * 1.05)
            plt.title(f"▲ {len(clipped_x)} point(s) above {ms(top)} clipped")
        window_min = snapshot.telemetry.window_s / 60.0
        plt.xlim(-window_min, 0)
        plt.xlabel("minutes ago")
        plt.ylabel(unit)
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
        self._legend = None
        self._summary()

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

    @guarded
    def _summary(self) -> None:
        snapshot = self.snapshot
        if snapshot is None:
            return
        tel = snapshot.telemetry
        set_subtitle(self, f"{tel.rps:.2f} req/s · {tel.total} req in {tel.window_s / 60:.0f} min")
        summary = self.query_one("#latency-summary", Static)
        text = legend(tel, self.group, summary.content_size.width)
        if same_text(text, self._legend):
            return
        height = text_height(summary, text)
        # A layout pass (the whole screen) only when the legend's line count changes.
        summary.update(text, layout=height is None or height != self._legend_height)
        self._legend, self._legend_height = text, height
