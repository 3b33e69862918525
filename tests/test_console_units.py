"""Pure parts of the console: formatting, the sunset date rule, the request filter, keys, palette."""

from __future__ import annotations

import datetime as dt

import pytest

from forge_tui.console.commands import commands_for
from forge_tui.console.format import age, bar, memory_cell, ms, route_label, short, state_text
from forge_tui.console.keymap import ALL_KEYS, APP_KEYS, MAIN_KEYS, bindings
from forge_tui.console.screens.audit import describe
from forge_tui.console.screens.deprecate import parse_sunset
from forge_tui.console.screens.help import key_table
from forge_tui.console.screens.swap import ineligible_reason
from forge_tui.console.widgets.requests import matches
from forge_tui.schema import ModelInfo, RequestInfo, RoleInfo, Snapshot

from .console_support import T0, RecordedControl, homelab_snapshot, widget_text


def test_age_is_measured_against_the_snapshot_not_the_wall_clock() -> None:
    assert age(100.0, 103.0) == "3s"
    assert age(0.0, 150.0) == "2m"
    assert age(0.0, 7300.0) == "2h"
    assert age(0.0, 200000.0) == "2d"
    assert age(None, 10.0) == "never"
    assert age(120.0, 100.0) == "0s"  # a probe stamped after the snapshot is not "negative"


def test_ms_and_short() -> None:
    assert ms(None) == "-"
    assert ms(812.4) == "812ms"
    assert ms(12_500) == "12.5s"
    assert short("a\n  b   c", 10) == "a b c"
    assert short("x" * 20, 8) == "xxxxxxx…"
    assert short(None, 5) == ""


def test_bar_colour_follows_fill() -> None:
    assert bar(1, 10, 10).plain == "█" + "░" * 9
    assert bar(50, 10, 4).plain == "████"  # clamped, never longer than its width
    assert "green" in str(bar(1, 10).spans[0].style)
    assert "red" in str(bar(95, 100).spans[0].style)
    unknown = memory_cell(None, None, 24.0)
    assert "?" in unknown.plain and "24.0G" in unknown.plain
    assert "3.0/8.0G" in memory_cell(3.0, 8.0, 96.0).plain


def test_hot_and_cold_are_distinct_and_deprecation_shows_its_date() -> None:
    hot, cold = state_text("hot"), state_text("cold")
    assert hot.plain.startswith("●") and cold.plain.startswith("○")
    assert hot.style != cold.style
    dep = state_text("cold", deprecated=True, sunset="2030-01-01")
    assert "deprecated" in dep.plain and "2030-01-01" in dep.plain


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "not a date"),
        ("2030-13-01", "not a date"),
        ("01/02/2030", "not a date"),
        ("20300101", "YYYY-MM-DD"),
        ("2020-01-01", "in the past"),
    ],
)
def test_sunset_date_is_validated(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_sunset(text, today=dt.date(2026, 4, 10))


def test_sunset_date_today_and_future_are_accepted() -> None:
    assert parse_sunset(" 2026-04-10 ", today=dt.date(2026, 4, 10)) == dt.date(2026, 4, 10)
    assert parse_sunset("2030-01-31", today=dt.date(2026, 4, 10)) == dt.date(2030, 1, 31)


def test_request_filter_needs_every_term() -> None:
    r = RequestInfo(
        time=0,
        request_id="abc123",
        endpoint="/v1/chat/completions",
        role="vision",
        model="gemma-4-multimodal-8b-e4b",
        host="crucible",
        status=502,
        error_class="upstream_error",
    )
    assert matches(r, "vision 502")
    assert matches(r, "UPSTREAM crucible")
    assert not matches(r, "vision 200")
    assert matches(r, "")


def test_keymap_ids_are_unique_and_cover_the_issue_keys() -> None:
    ids = [k.id for k in ALL_KEYS]
    assert len(ids) == len(set(ids))
    keys = {k.key for k in ALL_KEYS}
    for key in ("s", "r", "R", "d", "t", "T", "a", "b", "v", "q", "question_mark", "slash"):
        assert key in keys
    assert all(b.id for b in bindings(APP_KEYS) + bindings(MAIN_KEYS))


def test_help_table_shows_remapped_keys() -> None:
    from rich.console import Console

    console = Console(width=140, record=True)
    console.print(key_table(ALL_KEYS, {"forge.swap": "ctrl+s"}))
    text = console.export_text()
    assert "ctrl+s" in text and "Swap the selected role" in text
    assert "?" in text and "Audit" not in text.split("\n")[0]


def test_ineligible_reason_names_the_missing_capability() -> None:
    role = RoleInfo(name="vision", model="x", requires=["chat", "vision"])
    text_only = ModelInfo(id="t", family="f", architecture="a", capabilities=["chat"], state="hot")
    disabled = ModelInfo(id="d", family="f", architecture="a", capabilities=["chat", "vision"], state="disabled")
    assert ineligible_reason(role, text_only) == "no vision"
    assert ineligible_reason(role, disabled) == "disabled"


def test_describe_audit_values() -> None:
    assert describe(None) == "-"
    assert describe({"model": "a", "previous": "b"}) == "model=a, previous=b"
    assert describe(True) == "true"


class _AppLike:
    """Only what ``commands_for`` reads: a snapshot and the begin_* entry points."""

    def __init__(self) -> None:
        self.snapshot = homelab_snapshot()
        self.calls: list[tuple[str, object]] = []

    def begin_swap(self, role: str) -> None:
        self.calls.append(("swap", role))

    def begin_rollback(self, role: str) -> None:
        self.calls.append(("rollback", role))

    def begin_rollback_trial(self) -> None:
        self.calls.append(("rollback-trial", None))

    def begin_smoke(self, roles: list[str] | None) -> None:
        self.calls.append(("smoke", roles))

    def begin_toggle_deprecation(self, model: str) -> None:
        self.calls.append(("deprecation", model))

    def begin_job(self, kind: str, host: str) -> None:
        self.calls.append((kind, host))

    def action_audit(self) -> None:
        self.calls.append(("audit", None))

    def action_help(self) -> None:
        self.calls.append(("help", None))

    def action_trial(self) -> None:
        self.calls.append(("trial", None))


def test_palette_commands_follow_the_snapshot() -> None:
    app = _AppLike()
    commands = {name: run for name, run, _ in commands_for(app)}  # type: ignore[arg-type]
    assert "Swap role vision" in commands
    assert "Roll back role vision" in commands
    assert "Roll back role embed" not in commands  # embed has no previous model
    assert "Remove deprecation of qwen3-8b" in commands
    assert "Deprecate model gemma-4-chat-31b" in commands
    assert "Rebuild llama.cpp on furnace" in commands
    commands["Swap role vision"]()
    commands["Verify host anvil"]()
    commands["Smoke every role"]()
    assert app.calls == [("swap", "vision"), ("verify", "anvil"), ("smoke", None)]


async def test_recorded_control_refuses_changes() -> None:
    control = RecordedControl()
    assert not (await control.swap("vision", "qwen3-vl-30b-a3b")).ok
    assert "qwen3-8b" in await control.eligible_models("default-chat")
    assert "nomic-embed-v1.5" not in await control.eligible_models("default-chat")


def test_route_label_reads_the_route_header() -> None:
    assert (
        route_label("role=vision; model=gemma-4-e4b; host=anvil; backend=anvil-mlx") == "gemma-4-e4b @anvil/anvil-mlx"
    )
    assert route_label("role=default-chat; model=qwen3-8b; host=crucible; backend=c-swap; fallback=gemma-4-31b") == (
        "qwen3-8b @crucible/c-swap (fallback for gemma-4-31b)"
    )
    assert route_label("") == ""
    assert route_label("something odd") == "something odd"


def test_table_cells_compare_their_style_too() -> None:
    from rich.text import Text

    from forge_tui.console.widgets._table import _same

    assert _same(Text("gemma", style="bold"), Text("gemma", style="bold"))
    assert not _same(Text("gemma", style="bold"), Text("gemma"))  # Text == alone says equal
    assert not _same(Text("a"), Text("b"))


# -- Latency grouping and Errors per host ---------------------------------------------------------


def _grouped_snapshot() -> Snapshot:
    """Hand-built: two roles, two models, two hosts, plus the "(unrouted)" pseudo-series in each view."""
    from forge_tui.schema import RoleStats, SeriesPoint, Snapshot, TelemetryInfo

    t0 = 1_775_822_400.0

    def stats(name: str, p50: float, errors: int = 0) -> RoleStats:
        series = [SeriesPoint(t=t0 - 60 + 10 * k, count=1, p50_ms=p50, p95_ms=2 * p50) for k in range(6)]
        return RoleStats(role=name, count=6, errors=errors, p50_ms=p50, p95_ms=2 * p50, rps=0.1, series=series)

    unrouted = RoleStats(
        role="(unrouted)",
        count=2,
        errors=2,
        p50_ms=1.0,
        p95_ms=1.0,
        rps=0.03,
        series=[SeriesPoint(t=t0 - 10, count=2, p50_ms=1.0, p95_ms=1.0)],
    )
    tel = TelemetryInfo(
        window_s=600,
        total=14,
        rps=0.23,
        roles=[unrouted, stats("default-chat", 800), stats("vision", 5000, errors=1)],
        models=[unrouted, stats("gemma-4-31b", 800), stats("gemma-4-e4b", 5000, errors=1)],
        hosts=[unrouted, stats("anvil", 5000, errors=1), stats("furnace", 800)],
        errors_by_class={"upstream_error": 1, "not_found": 2},
        errors_by_target={"vision/gemma-4-e4b": 1, "(unrouted)/-": 2},
    )
    return Snapshot(gateway_url="http://127.0.0.1:8600", telemetry=tel, taken_at=t0)


def test_latency_groups_skip_unrouted_but_keep_its_rate() -> None:
    from forge_tui.console.widgets.latency import group_stats, legend

    tel = _grouped_snapshot().telemetry
    assert [s.role for s in group_stats(tel, "role")] == ["default-chat", "vision"]
    assert [s.role for s in group_stats(tel, "model")] == ["gemma-4-31b", "gemma-4-e4b"]
    assert [s.role for s in group_stats(tel, "host")] == ["anvil", "furnace"]
    text = legend(tel, "host").plain
    assert "anvil 5.0s/10.0s 0.10/s" in text and "furnace 800ms/1.6s" in text and "unrouted" not in text


async def test_latency_pane_g_cycles_role_model_host() -> None:
    from textual.app import App, ComposeResult

    from forge_tui.console.widgets.latency import LatencyChart, LatencyPane

    from .console_support import widget_text

    class _Host(App[None]):
        def compose(self) -> ComposeResult:
            yield LatencyPane(id="pane-latency")

    app = _Host()
    async with app.run_test(size=(100, 24)) as pilot:
        pane = app.query_one(LatencyPane)
        pane.snapshot = _grouped_snapshot()
        pane.focus()
        await pilot.pause()
        chart = app.query_one(LatencyChart)
        summary = app.query_one("#latency-summary")
        assert "forge.latency.group" in {b.id for b in LatencyPane.BINDINGS}  # type: ignore[union-attr]
        assert pane.border_title == "Latency by role"
        assert chart.lines == ["default-chat p50", "default-chat p95", "vision p50", "vision p95"]
        assert "default-chat" in widget_text(summary) and "gemma-4-31b" not in widget_text(summary)
        await pilot.press("g")
        await pilot.pause()
        assert pane.border_title == "Latency by model"
        assert chart.lines == ["gemma-4-31b p50", "gemma-4-31b p95", "gemma-4-e4b p50", "gemma-4-e4b p95"]
        assert "gemma-4-31b" in widget_text(summary) and "default-chat" not in widget_text(summary)
        await pilot.press("g")
        await pilot.pause()
        assert pane.border_title == "Latency by host"
        assert [x for x in chart.lines if x.endswith("p50")] == ["anvil p50", "furnace p50"]
        assert "anvil" in widget_text(summary)
        await pilot.press("g")
        await pilot.pause()
        assert pane.group == "role" and chart.lines[0] == "default-chat p50"
        assert "0.23 req/s" in str(pane.border_subtitle)  # "(unrouted)" still counts toward the rate


async def test_errors_pane_counts_per_host() -> None:
    from textual.app import App, ComposeResult

    from forge_tui.console.widgets.errors import ErrorsPane

    from .console_support import widget_text

    class _Host(App[None]):
        def compose(self) -> ComposeResult:
            yield ErrorsPane()

    app = _Host()
    async with app.run_test(size=(80, 24)) as pilot:
        pane = app.query_one(ErrorsPane)
        pane.snapshot = _grouped_snapshot()
        await pilot.pause()
        text = widget_text(app.query_one("#errors-body"))
        # One labelled line per grouping: counts side by side read as if they belonged together.
        lines = text.splitlines()
        assert lines[0].startswith("by class") and "not_found 2" in lines[0]
        assert any(line.startswith("by role/model") for line in lines)
        assert any(line.startswith("by host") for line in lines)
        assert "anvil" in text and "furnace" not in text  # hosts without errors are not listed
        assert "vision/gemma-4-e4b" in text


# ---------------------------------------------------------------- panes follow polls without churn


def _spy(obj: object, name: str, calls: list[tuple[str, tuple[object, ...]]]) -> None:
    """Record every call of ``obj.name`` (still calling through) into ``calls``."""
    original = getattr(obj, name)

    def recorder(*args: object, **kwargs: object) -> object:
        calls.append((name, args))
        return original(*args, **kwargs)

    setattr(obj, name, recorder)


def _next_poll(snapshot: Snapshot, **changes: object) -> Snapshot:
    """The following poll: a later snapshot (so every bound pane hears of it) with ``changes``."""
    return snapshot.model_copy(update={"taken_at": snapshot.taken_at + 1.0, **changes}, deep=True)


def _table_host(table_type: type) -> type:
    from textual.app import App, ComposeResult

    class _Host(App[None]):
        def compose(self) -> ComposeResult:
            yield table_type(id="table")

    return _Host


async def test_table_second_identical_poll_removes_and_readds_nothing() -> None:
    from forge_tui.console.widgets import RolesTable

    app = _table_host(RolesTable)()
    async with app.run_test(size=(120, 20)) as pilot:
        table = app.query_one(RolesTable)
        first = homelab_snapshot()
        table.snapshot = first
        await pilot.pause()
        keys_before = list(table.rows)  # the RowKey objects themselves
        calls: list[tuple[str, tuple[object, ...]]] = []
        for name in ("clear", "add_row", "remove_row", "update_cell", "rows_for", "sort"):
            _spy(table, name, calls)
        table.snapshot = _next_poll(first, telemetry=first.telemetry.model_copy(update={"total": 99}))
        await pilot.pause()
        assert table.snapshot.taken_at == first.taken_at + 1.0  # the poll did reach the table
        assert calls == []  # same roles: not even rebuilt into rows
        table.refresh_rows(force=True)  # and forced through the diff, identical rows touch no cell
        assert [name for name, _ in calls] == ["rows_for"]
        assert all(a is b for a, b in zip(list(table.rows), keys_before, strict=True))
        assert table.rebuilds == 0


async def test_table_changed_cell_updates_in_place_and_keeps_the_cursor_row() -> None:
    from forge_tui.console.widgets import RolesTable

    app = _table_host(RolesTable)()
    async with app.run_test(size=(120, 20)) as pilot:
        table = app.query_one(RolesTable)
        first = homelab_snapshot()
        table.snapshot = first
        await pilot.pause()
        assert table.select_key("vision")
        await pilot.pause()
        cursor = table.cursor_row
        keys_before = list(table.rows)
        calls: list[tuple[str, tuple[object, ...]]] = []
        for name in ("clear", "add_row", "remove_row", "update_cell"):
            _spy(table, name, calls)
        roles = [r.model_copy() for r in first.roles]
        roles[0] = roles[0].model_copy(update={"model": "qwen3-8b"})
        roles[2] = roles[2].model_copy(update={"in_trial": False})
        table.snapshot = _next_poll(first, roles=roles)
        await pilot.pause()
        assert sorted((args[0], args[1]) for _, args in calls) == [("default-chat", "Model"), ("vision", "Trial until")]
        assert {name for name, _ in calls} == {"update_cell"}
        assert table.get_cell("default-chat", "Model").plain == "qwen3-8b"
        assert table.get_cell("vision", "Trial until").plain == "-"
        assert table.cursor_row == cursor and table.selected_role == "vision"
        assert all(a is b for a, b in zip(list(table.rows), keys_before, strict=True))


async def test_table_adds_and_removes_only_the_rows_that_came_and_went() -> None:
    from forge_tui.console.widgets import RolesTable
    from forge_tui.schema import RoleInfo

    app = _table_host(RolesTable)()
    async with app.run_test(size=(120, 20)) as pilot:
        table = app.query_one(RolesTable)
        first = homelab_snapshot()
        table.snapshot = first
        await pilot.pause()
        assert table.select_key("vision")
        calls: list[tuple[str, tuple[object, ...]]] = []
        for name in ("clear", "add_row", "remove_row"):
            _spy(table, name, calls)
        newcomer = RoleInfo(name="code", model="qwen3-8b", requires=["chat"])
        roles = [newcomer] + [r for r in first.roles if r.name != "priority-chat"]
        table.snapshot = _next_poll(first, roles=roles)
        await pilot.pause()
        assert [name for name, _ in calls] == ["remove_row", "add_row"]
        assert calls[0][1] == ("priority-chat",) and calls[1][1][0].plain == "code"
        assert [row.key.value for row in table.ordered_rows] == [r.name for r in roles]  # new row on top
        assert table.selected_role == "vision" and table.cursor_row == 2
        assert table.rebuilds == 0


async def test_requests_tail_prepends_new_records_and_drops_old_ones_in_place() -> None:
    from forge_tui.console.widgets import RequestsTable
    from forge_tui.schema import RequestInfo

    def record(i: int) -> RequestInfo:
        return RequestInfo(
            time=1_775_822_400.0 + i,
            request_id=f"req-{i}",
            endpoint="/v1/chat/completions",
            role="default-chat",
            model="gemma-4-chat-31b",
            status=200,
            latency_ms=10.0 + i,
            seq=100 + i,  # rows are keyed by the gateway's seq, never by the caller's request id
        )

    base = homelab_snapshot()
    app = _table_host(RequestsTable)()
    async with app.run_test(size=(120, 20)) as pilot:
        table = app.query_one(RequestsTable)
        table.snapshot = _next_poll(
            base, telemetry=base.telemetry.model_copy(update={"recent": [record(i) for i in range(10)]})
        )
        await pilot.pause()
        assert table.select_key("105")
        calls: list[tuple[str, tuple[object, ...]]] = []
        for name in ("clear", "add_row", "remove_row", "update_cell"):
            _spy(table, name, calls)
        table.snapshot = _next_poll(
            table.snapshot, telemetry=base.telemetry.model_copy(update={"recent": [record(i) for i in range(3, 13)]})
        )
        await pilot.pause()
        assert sorted(args[0] for name, args in calls if name == "remove_row") == ["100", "101", "102"]
        assert len([name for name, _ in calls if name == "add_row"]) == 3
        assert not [name for name, _ in calls if name in ("clear", "update_cell")]
        assert [row.key.value for row in table.ordered_rows] == [str(100 + i) for i in range(12, 2, -1)]
        assert table.selected_key == "105"  # the cursor stayed on its record as rows came in above it
        assert table.unseen == 3  # scrolled away from the newest: the border counts what came in
        table.query = "req-7"  # the filter still redraws at once, through the same diff
        await pilot.pause()
        assert [row.key.value for row in table.ordered_rows] == ["107"]


async def test_latency_chart_redraws_only_when_its_series_change() -> None:
    from textual.app import App, ComposeResult

    from forge_tui.console.widgets.latency import LatencyChart, LatencyPane
    from forge_tui.schema import SeriesPoint

    class _Host(App[None]):
        def compose(self) -> ComposeResult:
            yield LatencyPane(id="pane-latency")

    app = _Host()
    async with app.run_test(size=(100, 24)) as pilot:
        pane = app.query_one(LatencyPane)
        first = _grouped_snapshot()
        pane.snapshot = first
        await pilot.pause()
        chart = app.query_one(LatencyChart)
        drawn = chart.draws
        assert drawn >= 1
        # Same series one poll later: the plot would look the same, so it is not rebuilt.
        pane.snapshot = _next_poll(first, telemetry=first.telemetry.model_copy(update={"total": 999}))
        await pilot.pause()
        assert chart.draws == drawn
        roles = [s.model_copy() for s in first.telemetry.roles]
        assert roles[1].role == "default-chat"  # [0] is "(unrouted)", which gets no line
        roles[1] = roles[1].model_copy(
            update={"series": [*roles[1].series, SeriesPoint(t=first.taken_at, count=3, p50_ms=50.0, p95_ms=90.0)]}
        )
        pane.snapshot = _next_poll(pane.snapshot, telemetry=first.telemetry.model_copy(update={"roles": roles}))
        await pilot.pause()
        assert chart.draws == drawn + 1
        # An idle window still slides: far enough later, the plot is redrawn with the same series.
        pane.snapshot = pane.snapshot.model_copy(update={"taken_at": pane.snapshot.taken_at + 120.0})
        await pilot.pause()
        assert chart.draws == drawn + 2


async def test_errors_pane_skips_polls_that_bring_no_new_error() -> None:
    from textual.app import App, ComposeResult
    from textual.widgets import Static

    from forge_tui.console.widgets.errors import ErrorsPane

    class _Host(App[None]):
        def compose(self) -> ComposeResult:
            yield ErrorsPane()

    app = _Host()
    async with app.run_test(size=(80, 24)) as pilot:
        pane = app.query_one(ErrorsPane)
        first = _grouped_snapshot()
        pane.snapshot = first
        await pilot.pause()
        body = app.query_one("#errors-body", Static)
        calls: list[tuple[str, tuple[object, ...]]] = []
        _spy(body, "update", calls)
        by_class = dict(first.telemetry.errors_by_class, ok=first.telemetry.errors_by_class.get("ok", 0) + 500)
        pane.snapshot = _next_poll(
            first, telemetry=first.telemetry.model_copy(update={"errors_by_class": by_class, "total": 999})
        )
        await pilot.pause()
        assert calls == []  # 500 more good answers: nothing new in the Errors pane
        by_class["gateway_error"] = by_class.get("gateway_error", 0) + 1
        pane.snapshot = _next_poll(
            pane.snapshot, telemetry=first.telemetry.model_copy(update={"errors_by_class": dict(by_class)})
        )
        await pilot.pause()
        assert len(calls) == 1 and "gateway_error" in widget_text(body)


# ---------------------------------------------------------------- issue 11: what the panes say


def test_latency_scale_reads_in_seconds_and_clips_outliers() -> None:
    from forge_tui.console.widgets.latency import scale

    assert scale([]) == (1.0, "ms", None)
    assert scale([120.0, 300.0, 800.0]) == (1.0, "ms", None)
    assert scale([900.0, 1200.0, 3400.0]) == (1000.0, "s", None)  # past 1,000 ms the axis is in seconds
    bulk = [400.0, 420.0, 380.0, 410.0, 395.0, 405.0, 415.0, 390.0, 400.0, 410.0]
    div, unit, clip = scale([*bulk, 23_000.0])  # one 23 s stream among ~400 ms requests
    assert clip is not None and clip < 1000 and (div, unit) == (1.0, "ms")


def test_legend_entries_are_never_split_across_lines() -> None:
    from forge_tui.console.widgets.latency import legend

    tel = _grouped_snapshot().telemetry
    one_line = legend(tel, "role").plain
    narrow = legend(tel, "role", width=len(one_line) - 5).plain
    assert "\n" not in one_line and "\n" in narrow
    for line in narrow.splitlines():
        assert line.startswith("■ ")  # each line starts a whole entry


def test_tail_rows_show_the_asked_model_and_the_endpoint() -> None:
    from forge_tui.console.format import clean
    from forge_tui.console.widgets.requests import _route, status_label
    from forge_tui.schema import RequestInfo

    missing = RequestInfo(
        time=1.0, request_id="r", endpoint="/v1/chat/completions", status=404, error_class="not_found", asked="gpt-9"
    )
    assert _route(missing, None).plain == "gpt-9 ?"
    assert status_label(missing, narrow=True).plain == "404 no route"
    embed = RequestInfo(time=1.0, request_id="e", endpoint="/v1/embeddings", role="embed", model="nomic", status=200)
    assert _route(embed, None).plain == "embeddings embed → nomic"
    long = RequestInfo(time=1.0, request_id="x", endpoint="/v1/chat/completions", asked="m" * 500, status=404)
    assert len(_route(long, 20).plain) == 20
    assert clean("a\x1b[2Jb\x07") == "a\\x1b[2Jb\\x07" and clean("x" * 30, 10).endswith("… (+20 chars)")


def test_status_text_says_disconnected_since_and_how_old_the_values_are() -> None:
    from forge_tui.console.widgets.status import status_text

    snap = homelab_snapshot()
    text = status_text(snap, "attached", "gateway unreachable", down_since=T0 - 45, last_ok=T0 - 46, now=T0).plain
    assert "disconnected since" in text and "(45s)" in text and "values below are 46s old" in text
    assert "2/4 backends down" in text
    rolled = status_text(snap.model_copy(update={"trial_status": "rolled-back"}), "embedded").plain
    assert "gemma4-migration rolled back" in rolled and "until" not in rolled
