"""The Trial screen: per trial role, keep or roll back, and why.

A table with one row per trial role (verdict, requests, error rate, p95, TTFT, tok/s, structured
output, fallbacks, cold starts, trial vs baseline side by side), the selected role's chart (p95
and error rate over the window, swaps marked) and its reasons in words. ``r`` rolls the selected
role back, ``R`` the whole trial, ``p`` promotes (ends the role's trial); ``w`` picks another
window (any past range of the history: a replay), ``f5`` reloads. The scorecard comes through the
``Control`` (``trial_scorecard``), so it works embedded and attached alike.
"""

from __future__ import annotations

from typing import Protocol

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, Static

from ...schema import ChangeResult
from ...trial.fmt import fmt_ms, fmt_pct
from ...trial.schema import RoleCard, Scorecard
from ..messages import RollbackRequested, RollbackTrialRequested
from ..widgets.trial_chart import TrialChart
from .confirm import ConfirmScreen

__all__ = ["TrialScreen", "TrialSource", "WindowScreen", "row_cells"]

_VERDICT_STYLE = {"keep": "bold green", "roll back": "bold red", "not enough data": "yellow"}
COLUMNS = (
    "Role",
    "Verdict",
    "Req t/b",
    "Err t/b",
    "p95 t/b",
    "TTFT p95 t/b",
    "tok/s t/b",
    "JSON ok t/b",
    "Fallbk t/b",
    "Cold t/b",
)


_WIDTHS = (14, 15, 9, 13, 15, 14, 9, 11, 10, 8)


class TrialSource(Protocol):
    """What the screen needs: the Control (or the operator service itself, for the benchmark)."""

    async def trial_scorecard(self, since: float | None = None, until: float | None = None) -> Scorecard: ...

    async def promote(self, role: str, *, actor: str = "operator") -> ChangeResult: ...


def _pair(a: str, b: str) -> str:
    return f"{a} / {b}"


def row_cells(c: RoleCard) -> list[Text | str]:
    t, b = c.trial, c.baseline

    def tps(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    return [
        c.role,
        Text(c.verdict, style=_VERDICT_STYLE.get(c.verdict, "")),
        _pair(str(t.requests), str(b.requests)),
        _pair(fmt_pct(t.errors.rate), fmt_pct(b.errors.rate)),
        _pair(fmt_ms(t.latency_ms.p95.value), fmt_ms(b.latency_ms.p95.value)),
        _pair(fmt_ms(t.ttft_ms.p95.value), fmt_ms(b.ttft_ms.p95.value)),
        _pair(tps(t.tokens_per_s), tps(b.tokens_per_s)),
        _pair(fmt_pct(t.structured.rate, 0), fmt_pct(b.structured.rate, 0)),
        _pair(fmt_pct(t.fallback.rate, 0), fmt_pct(b.fallback.rate, 0)),
        _pair(str(t.cold_starts), str(b.cold_starts)),
    ]


def _details(c: RoleCard) -> str:
    lines = [
        f"{c.role}: trial {c.trial_model or '-'} vs baseline {c.baseline_model or '-'} (now {c.current_model}, {c.status or '-'})"
    ]
    lines += [f"  • {r}" for r in c.reasons]
    t, b = c.trial, c.baseline
    lines.append(
        f"  load: p95 idle {fmt_ms(t.load.idle_p95_ms.value)} / {fmt_ms(b.load.idle_p95_ms.value)}, "
        f"busy {fmt_ms(t.load.loaded_p95_ms.value)} / {fmt_ms(b.load.loaded_p95_ms.value)} (trial / baseline)"
    )
    uses = " / ".join("-" if s.per_hour is None else f"{s.per_hour:.1f}" for s in (t, b))
    mem = " / ".join(
        "-" if s.memory_gb is None else f"{s.memory_gb:g} GB ({fmt_pct(s.budget_share, 0)} of {s.host})" for s in (t, b)
    )
    ev = " / ".join("-" if s.eval is None else fmt_pct(s.eval.rate) for s in (t, b))
    lines.append(f"  uses/hour {uses}; memory {mem}; eval pass {ev}")
    if c.excluded:
        lines.append(
            "  not compared: "
            + "; ".join(f"{s.source} on {s.model}: {s.requests} req, {s.errors} err" for s in c.excluded)
        )
    return "\n".join(lines)


class WindowScreen(ModalScreen["tuple[float | None, float | None] | None"]):
    """Pick a window: unix seconds, ISO dates/times, or -7d / -6h; empty for the default."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="trial.window.cancel")]

    def __init__(self, since: str = "", until: str = "") -> None:
        super().__init__()
        self._since, self._until = since, until

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Trial window (empty: a week before the trial began, until now)", classes="dialog-title")
            yield Input(self._since, placeholder="since: 2026-11-22, 2026-11-22T14:00, -7d", id="trial-since")
            yield Input(self._until, placeholder="until: empty for now", id="trial-until")
            yield Label("", id="trial-window-error")
            with Horizontal():
                yield Button("Show", variant="primary", id="trial-window-ok")
                yield Button("Cancel", id="trial-window-cancel")

    @on(Button.Pressed, "#trial-window-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted)
    @on(Button.Pressed, "#trial-window-ok")
    def _ok(self) -> None:
        from ...trial.when import parse_when

        out: list[float | None] = []
        for wid in ("#trial-since", "#trial-until"):
            text = self.query_one(wid, Input).value.strip()
            try:
                out.append(parse_when(text) if text else None)
            except Exception as exc:  # argparse.ArgumentTypeError: say it here, keep the dialog open
                self.query_one("#trial-window-error", Label).update(str(exc))
                return
        self.dismiss((out[0], out[1]))


class TrialScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "close", "Back", id="trial.back"),
        Binding("r", "rollback", "Rollback role", id="trial.rollback"),
        Binding("R", "rollback_trial", "Rollback all", id="trial.rollback-trial"),
        Binding("p", "promote", "Promote", id="trial.promote"),
        Binding("w", "window", "Window", id="trial.window"),
        Binding("f5,ctrl+r", "reload", "Reload", id="trial.reload"),
    ]

    def __init__(
        self, source: TrialSource, *, since: float | None = None, until: float | None = None, actor: str = "operator"
    ) -> None:
        super().__init__()
        self._source = source
        self.since, self.until = since, until
        self.actor = actor
        self.scorecard: Scorecard | None = None
        self.error: str | None = None
        self.loads = 0

    def compose(self) -> ComposeResult:
        yield Label(" Trial ", id="trial-title")
        yield DataTable(id="trial-table", cursor_type="row", zebra_stripes=True)
        yield TrialChart(id="trial-chart")
        yield Static("", id="trial-details", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        # fixed widths: the header never re-lays itself out as rows arrive
        for col, width in zip(COLUMNS, _WIDTHS, strict=True):
            table.add_column(col, key=col, width=width)
        table.focus()
        self.action_reload()

    # ------------------------------------------------------------------ data
    def action_reload(self) -> None:
        self._load()

    @work(exclusive=True, group="trial", exit_on_error=False, name="trial scorecard")
    async def _load(self) -> None:
        try:
            sc = await self._source.trial_scorecard(self.since, self.until)
        except Exception as exc:  # ControlError, an unreachable gateway: say it on the screen
            self.error = str(exc)
            self.query_one("#trial-title", Label).update(f" Trial: cannot build the scorecard: {exc} ")
            return
        self.error = None
        self.scorecard = sc
        self.loads += 1
        self._show(sc)

    def _show(self, sc: Scorecard) -> None:
        import datetime as dt

        def when(t: float) -> str:
            return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M")

        self.query_one("#trial-title", Label).update(
            Text.assemble(
                f" Trial {sc.trial or '-'}: ",
                (sc.overall, _VERDICT_STYLE.get(sc.overall, "")),
                f"  ·  {when(sc.since)} to {when(sc.until)} UTC  ·  w: other window ",
            )
        )
        table = self.query_one(DataTable)
        keep = table.cursor_row
        table.clear()
        for c in sc.roles:
            table.add_row(*row_cells(c), key=c.role)
        if sc.roles:
            table.move_cursor(row=min(max(keep, 0), len(sc.roles) - 1))
        self._select()

    def selected(self) -> RoleCard | None:
        sc = self.scorecard
        if sc is None or not sc.roles:
            return None
        row = self.query_one(DataTable).cursor_row
        return sc.roles[row] if 0 <= row < len(sc.roles) else None

    @on(DataTable.RowHighlighted)
    def _select(self) -> None:
        sc = self.scorecard
        card = self.selected()
        details = self.query_one("#trial-details", Static)
        if sc is None:
            return
        self.query_one(TrialChart).show(card, sc.since, sc.until)
        details.update(
            _details(card) if card else "no role is in a trial" + ("; " + "; ".join(sc.notes) if sc.notes else "")
        )

    # ------------------------------------------------------------------ keys
    def action_close(self) -> None:
        self.dismiss(None)

    def action_rollback(self) -> None:
        card = self.selected()
        if card is None:
            self.notify("no trial role selected", title="rollback", severity="warning")
            return
        self.post_message(RollbackRequested(card.role, origin="selected on the Trial screen"))

    def action_rollback_trial(self) -> None:
        self.post_message(RollbackTrialRequested())

    def action_promote(self) -> None:
        card = self.selected()
        if card is None:
            self.notify("no trial role selected", title="promote", severity="warning")
            return
        self._promote(card)

    @work(group="trial-change", exit_on_error=False, name="promote")
    async def _promote(self, card: RoleCard) -> None:
        body = (
            f"Keep {card.current_model} in {card.role} and end its trial: {card.baseline_model} stops being "
            f"its rollback target.\nScorecard says: {card.verdict}."
        )
        if not await self.app.push_screen_wait(ConfirmScreen(f"Promote {card.role}?", body, yes="Promote")):
            return
        try:
            result = await self._source.promote(card.role, actor=self.actor)
        except Exception as exc:  # ControlError
            result = ChangeResult(ok=False, message=str(exc))
        self.notify(
            result.message,
            title="promote" if result.ok else "promote refused",
            severity="information" if result.ok else "error",
        )
        self.action_reload()

    def action_window(self) -> None:
        self._pick_window()

    @work(group="trial-window", exit_on_error=False, name="trial window")
    async def _pick_window(self) -> None:
        got = await self.app.push_screen_wait(WindowScreen())
        if got is not None:
            self.since, self.until = got
            self.action_reload()
