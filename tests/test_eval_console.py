"""The console's Evals view driving a real gateway (scripted vision upstreams, see test_eval_scripted)."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.widgets import DataTable, ProgressBar

from forge_tui.console.screens.evals import EvalsScreen
from tests.console_support import wait_until
from tests.support.scripted_upstream import Answer
from tests.test_eval_scripted import EVALS, Lab, lab  # noqa: F401  (the fixture)


class _Host(App[None]):
    def __init__(self, screen: EvalsScreen) -> None:
        super().__init__()
        self.evals = screen

    def on_mount(self) -> None:
        self.push_screen(self.evals)


async def test_evals_view_runs_on_the_role_then_compares_with_previous(lab: Lab) -> None:  # noqa: F811
    lab.furnace.script = {"bar chart": Answer("Apr 47")}
    lab.anvil.default = Answer("Apr 47 rotate_backups Python")
    screen = EvalsScreen(lab.gw.url, "vision", previous="vlm-small", suites=[EVALS / "vlm-bench.yaml"])
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
    assert len(lab.furnace.requests) == 6 and lab.furnace.max_active == 1


async def test_e_opens_the_evals_view_on_the_selected_role(lab: Lab, tmp_path: Path) -> None:  # noqa: F811
    """The real console (LocalControl over a Runtime on the same upstreams): e opens the view on the
    role selected in the roles table, and r runs the suite there."""
    from forge_tui.console import ForgeApp
    from forge_tui.console.screens.main import MainScreen
    from forge_tui.control.local import LocalControl
    from forge_tui.runtime import Runtime

    lab.furnace.default = Answer("Apr 47 rotate_backups Python")
    runtime = Runtime(
        tmp_path / "forge.yaml", catalog=lab.gw.state.catalog, state_dir=tmp_path, port=0, with_hosts=False
    )
    await runtime.start()
    try:
        app = ForgeApp(LocalControl(runtime), refresh_s=0.2)
        async with app.run_test(size=(140, 45)) as pilot:
            await wait_until(pilot, lambda: app.snapshot is not None, what="the first snapshot")
            main = app.screen
            assert isinstance(main, MainScreen)
            await wait_until(pilot, lambda: main.selected_role is not None, what="a selected role")
            role = main.selected_role
            await pilot.press("e")
            await wait_until(pilot, lambda: isinstance(app.screen, EvalsScreen), what="the Evals view")
            view = app.screen
            assert isinstance(view, EvalsScreen) and view.role == role and view.url == runtime.url
            view.suites, view.suite_index = [EVALS / "vlm-bench.yaml"], 0
            await pilot.press("r")
            await wait_until(pilot, lambda: view.last_run is not None, timeout=60, what="the run")
            assert view.last_run is not None and {c.route for c in view.last_run.cases} == {role}
            assert all(c.error is None for c in view.last_run.cases)
            await pilot.press("escape")
            await wait_until(pilot, lambda: isinstance(app.screen, MainScreen), what="back on the main screen")
    finally:
        await runtime.stop()
