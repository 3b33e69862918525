"""Latency pane: p50/p95 per role over the window as a plotext chart, plus requests/s."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import reactive
from textual.widgets import Static
from textual_plotext import PlotextPlot

from ...control.schema import Snapshot
from ..format import ms

__all__ = ["LatencyPane", "LatencyChart"]

# Fixed colours per role position so a role keeps its colour between redraws.
# (plotext colour, Rich colour) pairs: the two libraries name some colours differently.
PALETTE = (("cyan", "cyan"), ("orange", "dark_orange"), ("green", "green"), ("magenta", "magenta"),
           ("yellow", "yellow"), ("blue", "blue"), ("red", "red"))


class LatencyChart(PlotextPlot):
    """The chart alone; x is minutes before the snapshot, so a replayed window draws the same."""

    snapshot: reactive[Snapshot | None] = reactive(None)

    def watch_snapshot(self, snapshot: Snapshot | None) -> None:
        if snapshot is None:
            return
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        now = snapshot.taken_at
        drawn = 0
        for index, stats in enumerate(snapshot.telemetry.roles):
            color = PALETTE[index % len(PALETTE)][0]
            p50 = [((p.t - now) / 60.0, p.p50_ms) for p in stats.series if p.p50_ms is not None]
            p95 = [((p.t - now) / 60.0, p.p95_ms) for p in stats.series if p.p95_ms is not None]
            if p50:
                plt.plot([x for x, _ in p50], [y for _, y in p50], label=f"{stats.role} p50", color=color,
                         marker="braille")
                drawn += 1
            if p95:
                plt.plot([x for x, _ in p95], [y for _, y in p95], label=f"{stats.role} p95", color=color,
                         marker="dot")
        window_min = snapshot.telemetry.window_s / 60.0
        plt.xlim(-window_min, 0)
        plt.xlabel("minutes ago")
        plt.ylabel("ms")
        if not drawn:
            plt.title("no requests in the window yet")
        self.refresh()


class LatencyPane(Vertical):
    snapshot: reactive[Snapshot | None] = reactive(None)

    def compose(self) -> ComposeResult:
        yield Static(id="latency-summary")
        yield LatencyChart(id="latency-chart").data_bind(LatencyPane.snapshot)

    def on_mount(self) -> None:
        self.border_title = "Latency"

    def watch_snapshot(self, snapshot: Snapshot | None) -> None:
        if snapshot is None or not self.is_mounted:
            return
        tel = snapshot.telemetry
        self.border_subtitle = f"{tel.rps:.2f} req/s · {tel.total} req in {tel.window_s / 60:.0f} min"
        line = Text()
        for index, stats in enumerate(tel.roles):
            if line:
                line.append("  ")
            line.append("■ ", style=PALETTE[index % len(PALETTE)][1])
            line.append(f"{stats.role} ", style="bold")
            line.append(f"{ms(stats.p50_ms)}/{ms(stats.p95_ms)} {stats.rps:.2f}/s")
        if not tel.roles:
            line.append("p50/p95 per role appear here once requests arrive", style="dim")
        self.query_one("#latency-summary", Static).update(line)
