"""The console's Evals view driving a real gateway (scripted vision upstreams, see test_eval_scripted)."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.widgets import DataTable, ProgressBar

from forge_tui.console.screens.evals import EvalsScreen
from forge_tui.evals import store
from tests.console_support import wait_until
from tests.support.scripted_upstream import Answer
from tests.test_eval_scripted import EVALS, Lab, lab  # noqa: F401  (the fixture)


class _Host(App[None]):
    def __init__(self, screen: EvalsScreen) -> None:
        super().__init__()
        self.evals = screen

    def on_mount(self) -> None:
        self.push_screen(self.evals)


async def test_evals_view_runs_on_the_role_then_compares_with_previous(lab: Lab, tmp_path: Path) -> None:  # noqa: F811
    lab.furnace.script = {"bar chart": Answer("Apr 47")}
    lab.anvil.default = Answer("Apr 47 rotate_backups Python")
    db = tmp_path / "history.sqlite3"
    screen = EvalsScreen(lab.gw.url, "vision", previous="vlm-small", suites=[EVALS / "vlm-bench.yaml"], db_path=db)
    app = _Host(screen)
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.press("r")
        await wait_until(pilot, lambda: screen.last_run is not None, what="the run on vision")
        cases = screen.query_one("#evals-cases", DataTable)
        assert cases.row_count == 3 and screen.query_one(ProgressBar).progress == 3
        compare = screen.query_one("#evals-compare", DataTable)
        assert compare.row_count == 1
        assert [str(c) for c in compare.get_row_at(0)[:3]] == ["vision", "1/3", "33%"]
        first = screen.last_run
        await pilot.press("c")
        await wait_until(pilot, lambda: screen.last_run is not first, what="the compare run")
        assert compare.row_count == 2 and cases.row_count == 6
        rows = {str(compare.get_row_at(i)[0]): str(compare.get_row_at(i)[1]) for i in range(2)}
        assert rows == {"vision": "1/3", "vlm-small": "2/3"}
        await pilot.press("escape")
    assert len(store.list_runs(db)) == 2  # both runs stored in the history file
    assert len(lab.furnace.requests) == 6 and lab.furnace.max_active == 1
