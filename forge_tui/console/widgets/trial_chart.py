"""The Trial screen's chart: p95 latency and error rate over the window, trial vs baseline, with
the role's swaps and rollbacks marked as vertical lines."""

from __future__ import annotations

from textual_plotext import PlotextPlot

from ...trial.schema import RoleCard

__all__ = ["TrialChart", "chart_points"]


def chart_points(card: RoleCard, since: float) -> dict[str, list[tuple[float, float]]]:
    """(hours since the window start, value) per line; error rates in percent."""
    lines: dict[str, list[tuple[float, float]]] = {
        "trial p95": [],
        "baseline p95": [],
        "trial err%": [],
        "base err%": [],
    }
    for p in card.series:
        x = (p.t + p.width_s / 2 - since) / 3600.0
        if p.trial_p95_ms is not None:
            lines["trial p95"].append((x, p.trial_p95_ms))
        if p.baseline_p95_ms is not None:
            lines["baseline p95"].append((x, p.baseline_p95_ms))
        if p.trial_error_rate is not None:
            lines["trial err%"].append((x, 100 * p.trial_error_rate))
        if p.baseline_error_rate is not None:
            lines["base err%"].append((x, 100 * p.baseline_error_rate))
    return lines


class TrialChart(PlotextPlot):
    DEFAULT_CSS = "TrialChart { height: 14; }"

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self._card: RoleCard | None = None
        self._since = 0.0
        self._until = 1.0

    def show(self, card: RoleCard | None, since: float, until: float) -> None:
        self._card, self._since, self._until = card, since, until
        self.replot()

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        card = self._card
        span_h = max((self._until - self._since) / 3600.0, 1e-6)
        plt.xlim(0, span_h)
        plt.xlabel("hours into the window")
        if card is None or not card.series:
            plt.title("no trial or baseline requests in this window")
            self.refresh()
            return
        lines = chart_points(card, self._since)
        top = max((v for k in ("trial p95", "baseline p95") for _, v in lines[k]), default=0.0)
        secs = top >= 1000
        div = 1000.0 if secs else 1.0
        for name, color in (("trial p95", "cyan"), ("baseline p95", "gray")):
            pts = lines[name]
            if pts:
                plt.plot([x for x, _ in pts], [v / div for _, v in pts], label=name, color=color, marker="braille")
        for name, color in (("trial err%", "red"), ("base err%", "orange")):
            pts = lines[name]
            if pts:
                plt.scatter([x for x, _ in pts], [v for _, v in pts], label=name, color=color, yside="right")
        for m in card.marks:
            plt.vline((m.time - self._since) / 3600.0, "magenta" if m.forced else "yellow")
        plt.ylabel("p95 " + ("s" if secs else "ms"))
        plt.ylabel("error %", yside="right")  # type: ignore[call-arg]  # plotext takes yside; the stub says xside
        plt.title(f"{card.role}: p95 and error rate (| = swap / rollback)")
        self.refresh()
