"""The Evals view: run a shipped suite on the selected role through the gateway, watch it, compare.

``r`` runs the suite on the role, ``c`` runs it on the role and on its previous model side by
side (the trial question: is the new route as good as the one it replaced), ``n`` picks the next
shipped suite. The run is a worker on this screen; cases arrive one by one (sequential, the
harness default) into the results table, and the compare table shows pass rate, p50 / p95
latency, tokens/s and errors per target. The console reaches the history only through its control,
so runs made here are shown, not stored (``forge-tui eval run`` stores them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, ProgressBar, Static
from textual.worker import Worker, WorkerState

from ...evals.runner import CaseResult, EvalRunner, RunResult, Target
from ...evals.suite import SuiteError, load_suite
from ...evals.summary import TargetSummary, compare_table, summarize
from ..format import ms, short

__all__ = ["SHIPPED_SUITES", "EvalsScreen"]

SHIPPED_SUITES = Path(__file__).resolve().parent.parent.parent / "data" / "evals"


class EvalsScreen(Screen[None]):
    BINDINGS = [
        Binding("r", "run", "Run on role", id="evals.run"),
        Binding("c", "compare", "Compare with previous", id="evals.compare"),
        Binding("n", "next_suite", "Next suite", id="evals.next-suite"),
        Binding("escape,q", "close", "Close", id="evals.close"),
    ]

    def __init__(
        self,
        gateway_url: str,
        role: str | None,
        *,
        previous: str | None = None,
        api_key: str | None = None,
        suites: Sequence[Path] | None = None,
        startup_wait_s: float = 300.0,
    ) -> None:
        super().__init__()
        self.url = gateway_url
        self.role = role
        self.previous = previous
        self.api_key = api_key
        self.suites = list(suites) if suites is not None else sorted(SHIPPED_SUITES.glob("*.yaml"))
        self.suite_index = 0
        self.startup_wait_s = startup_wait_s
        self.last_run: RunResult | None = None
        self._worker: Worker[RunResult] | None = None
        self._so_far: list[CaseResult] = []  # the cases of the run in progress, for the live compare table

    @property
    def suite_path(self) -> Path | None:
        return self.suites[self.suite_index] if self.suites else None

    def compose(self) -> ComposeResult:
        with Vertical(id="evals-view"):
            yield Label("", id="evals-title", markup=False)
            yield Static("", id="evals-status", markup=False)
            yield ProgressBar(id="evals-progress", show_eta=False)
            yield Label("Compare", classes="pane-title")
            yield DataTable(id="evals-compare", cursor_type="none", zebra_stripes=True)
            yield Label("Cases", classes="pane-title")
            yield DataTable(id="evals-cases", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        cases: DataTable[Text] = self.query_one("#evals-cases", DataTable)
        for col in ("#", "Target", "Test", "Result", "Latency", "Waits", "Served by", "Output / reason"):
            cases.add_column(col, key=col)
        self._title()
        self._status("r: run on the selected role" + (f", c: compare with {self.previous}" if self.previous else ""))

    def _title(self) -> None:
        name = self.suite_path.stem if self.suite_path else "no suite"
        role = self.role or "(no role selected)"
        self.query_one("#evals-title", Label).update(f"Evals: {name} on {role} via {self.url}")

    def _status(self, text: str, style: str = "") -> None:
        self.query_one("#evals-status", Static).update(Text(text, style=style))

    # ------------------------------------------------------------------ actions
    def action_close(self) -> None:
        if self._worker is not None and self._worker.state is WorkerState.RUNNING:
            self._worker.cancel()
        self.dismiss(None)

    def action_next_suite(self) -> None:
        if self.suites and not self.running:
            self.suite_index = (self.suite_index + 1) % len(self.suites)
            self._title()

    def action_run(self) -> None:
        if self.role:
            self._start([Target(self.role)])
        else:
            self._status("select a role on the main screen first", "bold red")

    def action_compare(self) -> None:
        if not (self.role and self.previous):
            self._status("this role has no previous model to compare with", "bold red")
            return
        self._start([Target(self.role), Target(self.previous)])

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.state in (WorkerState.PENDING, WorkerState.RUNNING)

    # ------------------------------------------------------------------ the run
    def _start(self, targets: list[Target]) -> None:
        if self.running:
            self._status("a run is in progress", "bold yellow")
            return
        path = self.suite_path
        if path is None:
            self._status("no suite to run", "bold red")
            return
        try:
            suite = load_suite(path)
            runner = EvalRunner(
                self.url,
                suite,
                [Target(t.route, t.host, suite.providers[0].config if suite.providers else {}) for t in targets],
                api_key=self.api_key,
                startup_wait_s=self.startup_wait_s,
                on_case=self._case_done,
            )
        except SuiteError as exc:
            self._status(str(exc), "bold red")
            return
        total = len(runner.plan())
        self._so_far = []
        self.query_one("#evals-cases", DataTable).clear()
        self.query_one("#evals-compare", DataTable).clear(columns=True)
        self.query_one(ProgressBar).update(total=total, progress=0)
        self._status(f"running {total} case(s) on {', '.join(t.label for t in targets)}, one at a time")
        self._worker = self.run_worker(runner.run(), group="evals", exclusive=True, exit_on_error=False, name="evals")

    async def _case_done(self, case: CaseResult, done: int, total: int) -> None:
        if not self.is_attached:
            return
        if case.error is not None:
            mark = Text("ERROR", style="bold red")
            said = case.reason
        else:
            mark = Text("PASS", style="bold green") if case.success else Text("FAIL", style="bold yellow")
            said = case.output if case.success else f"{case.output!r}: {case.reason}"
        served = f"{case.served_model}@{case.served_host}" if case.served_model else "-"
        table: DataTable[Text] = self.query_one("#evals-cases", DataTable)
        table.add_row(
            Text(str(done)),
            Text(case.target, style="bold"),
            Text(short(case.description, 40)),
            mark,
            Text(ms(case.latency_ms), justify="right"),
            # startup waits and 429 retries: the case told the truth because it waited, not because it was lucky
            Text(
                f"{case.startup_waits}/{case.saturation_retries}"
                if case.startup_waits or case.saturation_retries
                else "-"
            ),
            Text(short(served, 30), style="cyan"),
            Text(short(" ".join(said.split()), 70), style="dim"),
        )
        self.query_one(ProgressBar).update(progress=done)
        self._so_far.append(case)
        self._show_compare(summarize(self._so_far))

    def _show_compare(self, rows: Sequence[TargetSummary]) -> None:
        table: DataTable[Text] = self.query_one("#evals-compare", DataTable)
        grid = compare_table(rows)
        table.clear(columns=True)
        for col in grid[0]:
            table.add_column(col, key=col)
        for r in grid[1:]:
            table.add_row(*(Text(c) for c in r))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is not self._worker:
            return
        if event.state is WorkerState.SUCCESS:
            run = event.worker.result
            assert run is not None
            self.last_run = run
            self._show_compare(summarize(run.cases))
            passed = sum(c.success for c in run.cases)
            style = "bold green" if passed == len(run.cases) else "bold yellow"
            self._status(
                f"{passed}/{len(run.cases)} passed in {run.finished_at - run.started_at:.1f} s ({run.id})", style
            )
        elif event.state is WorkerState.ERROR:
            self._status(f"the run failed: {event.worker.error}", "bold red")
        elif event.state is WorkerState.CANCELLED:
            self._status("run cancelled", "bold yellow")
