"""The trial scorecard over histories with known numbers, written through the real history writer
(real SQLite file, real writer thread); audit entries are built with chosen times."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forge_tui.cli import main
from forge_tui.config import load_catalog
from forge_tui.state import AuditEntry, RoutingState
from forge_tui.telemetry import ErrorClass, RequestRecord
from forge_tui.telemetry._history import History
from forge_tui.telemetry._rollup import bucket, bucket_value
from forge_tui.trial import Scorecard, render_markdown, scorecard
from forge_tui.trial.stats import quantile_interval, wilson

DEMO = Path(__file__).resolve().parents[1] / "forge_tui" / "data" / "demo.yaml"
T0 = 1_800_000_000.0  # a whole hour
SWAP = T0 + 3600.0
A, B = "gemma3-270m-a", "gemma3-270m-b"


def iso(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")


def swap(t: float, model: str, before: str, action: str = "swap", note: str = "", role: str = "default-chat"):
    return AuditEntry(iso(t), "op", action, role, {"model": before}, {"model": model}, note)


def write(path: Path, records: list[RequestRecord], **kw: object) -> History:
    h = History(path, flush_interval_s=3600.0, **kw)  # type: ignore[arg-type]
    h.open()
    for r in records:
        h.put(r)
    assert h.flush()
    h.close()
    assert h.written == len(records) and h.dropped == 0
    return h


def req(t: float, model: str, *, role: str | None = "default-chat", lat: float = 100.0, **kw: object) -> RequestRecord:
    kw.setdefault("status", 200)
    return RequestRecord(
        time=t, request_id=f"r{t}", endpoint="/v1/chat/completions", role=role, model=model, latency_ms=lat, **kw
    )  # type: ignore[arg-type]


def roles_of(tmp_path: Path) -> list:
    st = RoutingState(load_catalog(DEMO), tmp_path / "state")
    return [st.role("default-chat")]


def card(sc: Scorecard, role: str = "default-chat"):
    return next(c for c in sc.roles if c.role == role)


def test_known_history_gives_the_exact_scorecard(tmp_path: Path) -> None:
    recs = []
    for i in range(400):  # baseline hour: 400 requests, 100 ms, 4 upstream errors
        ec = ErrorClass.UPSTREAM_ERROR if i % 100 == 0 else ErrorClass.OK
        recs.append(req(T0 + i * 9, A, lat=100.0, error_class=ec, status=502 if ec != ErrorClass.OK else 200))
    for i in range(400):  # trial hour: 400 requests, 300 ms, 40 upstream errors, 20 json asks (10 parse)
        ec = ErrorClass.UPSTREAM_TIMEOUT if i % 10 == 0 else ErrorClass.OK
        recs.append(
            req(
                SWAP + i * 9,
                B,
                lat=300.0,
                ttft_ms=50.0,
                error_class=ec,
                inflight=1 if i % 2 else 0,
                structured=(i % 4 == 1) if i < 80 and i % 2 else None,
                tokens_per_s=20.0,
            )
        )
    recs.append(req(SWAP + 10, B, source="smoke", error_class=ErrorClass.MODEL_OUTPUT))  # kept apart
    recs.append(req(SWAP + 11, B, source="bench"))
    recs.append(req(SWAP + 12, A, role=None))  # the deprecated id asked directly during the trial: baseline
    recs.append(req(SWAP + 13, A, fallback=True))  # a fallback answer during the trial: the trial's fallback
    recs.append(req(SWAP + 14, B, role="priority-chat"))  # another role: not counted
    path = tmp_path / "h.sqlite3"
    write(path, recs)
    cat = load_catalog(DEMO)
    sc = scorecard(cat, roles_of(tmp_path), [swap(SWAP, B, A)], path, since=T0, until=T0 + 7200, now=T0 + 7200)
    c = card(sc)
    assert (c.trial_model, c.baseline_model, c.verdict) == (B, A, "roll back")
    assert sc.exit_code == 1 and sc.overall == "roll back"
    assert c.trial.requests == 401 and c.baseline.requests == 401
    assert c.trial.errors.count == 40 and c.baseline.errors.count == 4
    assert c.trial.errors_by_class == {"upstream_timeout": 40}
    p, lo, hi = wilson(40, 401)
    assert (c.trial.errors.rate, c.trial.errors.low, c.trial.errors.high) == (p, lo, hi)
    assert c.trial.fallback.count == 1 and c.baseline.fallback.count == 0
    assert c.trial.latency_ms.samples == 361  # 360 ok at 300 ms + the fallback at 100 ms
    assert c.trial.latency_ms.p50.value == bucket_value(bucket(300.0))
    assert c.baseline.latency_ms.p95.value == bucket_value(bucket(100.0))
    assert c.trial.ttft_ms.p50.value == bucket_value(bucket(50.0))
    assert c.trial.load.loaded_samples == 200 and c.trial.load.idle_samples == 161  # errors were all idle
    assert (c.trial.structured.count, c.trial.structured.total) == (20, 40)
    assert c.trial.tokens_per_s == 20.0
    assert c.trial.hours == 1.0 and c.trial.per_hour == 401.0
    assert [(s.source, s.model, s.requests, s.errors) for s in c.excluded] == [("bench", B, 1, 0), ("smoke", B, 1, 1)]
    assert [m.label for m in c.marks] == [f"swap -> {B}"]
    assert any("error rate" in r and "higher" in r for r in c.reasons)
    assert any(r.startswith("p95") and "slower" in r for r in c.reasons)
    assert c.trial.memory_gb == 0.4 and c.trial.budget_share == pytest.approx(0.1)
    assert c.trial.eval is None
    # JSON round trip and Markdown
    again = Scorecard.model_validate_json(sc.model_dump_json())
    assert again == sc and again.schema_id == "forge-trial-scorecard/1"
    md = render_markdown(sc)
    assert "### default-chat: **roll back**" in md and "| Requests | 401 | 401 |" in md
    assert "smoke on gemma3-270m-b: 1 requests, 1 errors" in md


def test_order_statistic_interval_brackets_the_quantile() -> None:
    h = {bucket(float(v)): 0 for v in range(1, 101)}
    for v in range(1, 101):
        h[bucket(float(v))] += 1
    value, lo, hi = quantile_interval(h, 0.5)
    assert lo is not None and hi is not None and value is not None
    assert lo < value < hi


def _two_sides(n_trial: int, n_base: int, trial_lat: float = 100.0) -> list[RequestRecord]:
    return [req(T0 + i * 3, A) for i in range(n_base)] + [req(SWAP + i * 3, B, lat=trial_lat) for i in range(n_trial)]


def test_similar_sides_keep_and_exit_0(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    write(path, _two_sides(300, 300, trial_lat=101.0))
    sc = scorecard(load_catalog(DEMO), roles_of(tmp_path), [swap(SWAP, B, A)], path, since=T0, until=T0 + 7200)
    assert card(sc).verdict == "keep" and sc.exit_code == 0
    assert any("no clear difference" in r for r in card(sc).reasons)


def test_too_few_requests_say_how_many_more(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    write(path, _two_sides(50, 300))
    sc = scorecard(load_catalog(DEMO), roles_of(tmp_path), [swap(SWAP, B, A)], path, since=T0, until=T0 + 7200)
    c = card(sc)
    assert (c.verdict, c.needs_trial_requests, c.needs_baseline_requests, sc.exit_code) == (
        "not enough data",
        150,
        0,
        2,
    )
    assert c.reasons == ["needs 150 more trial requests (50 of 200)"]


def test_no_baseline_traffic(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    write(path, _two_sides(300, 0))
    sc = scorecard(load_catalog(DEMO), roles_of(tmp_path), [swap(SWAP, B, A)], path, since=T0, until=T0 + 7200)
    c = card(sc)
    assert (c.verdict, c.needs_baseline_requests, c.baseline.requests) == ("not enough data", 200, 0)
    assert c.baseline.latency_ms.p95.value is None


def test_rollback_and_reswap_mid_window_and_a_forced_swap(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    write(path, _two_sides(10, 10))
    audit = [
        swap(T0 + 600, B, A, note="forced past failed preflight: architecture"),
        swap(T0 + 1800, A, B, action="rollback"),
        swap(T0 + 3000, B, A),
    ]
    sc = scorecard(load_catalog(DEMO), roles_of(tmp_path), audit, path, since=T0, until=T0 + 3600)
    c = card(sc)
    assert [(m.action, m.forced) for m in c.marks] == [("swap", True), ("rollback", False), ("swap", False)]
    assert c.trial.hours == pytest.approx((1200 + 600) / 3600)
    assert c.baseline.hours == pytest.approx((600 + 1200) / 3600)
    assert c.trial.requests == 0 and c.baseline.requests == 10  # trial traffic came after this window


def test_clock_stepping_back_across_a_restart_keeps_requests_on_their_model(tmp_path: Path) -> None:
    """After a restart the clock was 5 minutes behind: trial-model requests carry times before the swap."""
    path = tmp_path / "h.sqlite3"
    recs = [req(SWAP - 300 + i, B) for i in range(20)] + [req(T0 + i, A) for i in range(20)]
    write(path, recs)
    sc = scorecard(load_catalog(DEMO), roles_of(tmp_path), [swap(SWAP, B, A)], path, since=T0, until=T0 + 7200)
    c = card(sc)
    assert (c.trial.requests, c.baseline.requests) == (20, 20)


def test_rolled_back_role_still_compares_its_last_trial_model(tmp_path: Path) -> None:
    st = RoutingState(load_catalog(DEMO), tmp_path / "state")
    st.rollback_role("default-chat", actor="op")  # now on the baseline
    path = tmp_path / "h.sqlite3"
    write(path, _two_sides(5, 5))
    sc = scorecard(st.catalog, [st.role("default-chat")], [swap(SWAP, B, A)], path, since=T0, until=T0 + 7200)
    c = card(sc)
    assert (c.trial_model, c.current_model, c.status) == (B, A, "rolled-back")


def test_long_window_reads_rollups_and_survives_pruning(tmp_path: Path) -> None:
    """Three days of traffic; raw rows older than one day pruned: the scorecard does not change."""
    path = tmp_path / "h.sqlite3"
    recs = []
    for h in range(72):
        for i in range(10):
            t = T0 + h * 3600 + i * 300 + 7
            model = A if h < 24 else B
            recs.append(
                req(t, model, lat=50.0 + h + i, error_class=ErrorClass.UPSTREAM_ERROR if i == 0 else ErrorClass.OK)
            )
    write(path, recs)
    cat = load_catalog(DEMO)
    audit = [swap(T0 + 24 * 3600, B, A)]
    since, until = T0 + 1800, T0 + 72 * 3600 - 1800  # unaligned: edge hours come from raw rows
    before = scorecard(cat, roles_of(tmp_path), audit, path, since=since, until=until)
    h = History(path, retention_days=1.0, prune_step=100, clock=lambda: T0 + 72 * 3600)
    h.open()
    assert h.prune_now(60.0)  # 100 rows a step, the writer loops at once while expired rows remain
    h.close()
    assert h.pruned == 480  # 48 hours x 10 raw rows older than one day
    after = scorecard(cat, roles_of(tmp_path), audit, path, since=since, until=until)
    cb, ca = card(before), card(after)
    assert (
        ca.trial.requests == cb.trial.requests and ca.baseline.requests == cb.baseline.requests + 6
    )  # 4 of 10 in the window before
    # the pruned edge hour is counted whole (a note says so); every other figure is unchanged
    assert any("pruned" in n for n in after.notes)
    assert ca.trial.latency_ms == cb.trial.latency_ms and ca.trial.errors == cb.trial.errors


def test_cli_report_md_and_json_with_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sdir = tmp_path / "state"
    st = RoutingState(load_catalog(DEMO), sdir)
    st.swap_role("default-chat", A, actor="op")
    st.swap_role("default-chat", B, actor="op")  # the audit log now has a swap to B at "now"
    path = tmp_path / "h.sqlite3"
    write(path, _two_sides(300, 300, trial_lat=1000.0))
    args = ["trial", "report", "--config", str(DEMO), "--state-dir", str(sdir), "--history", str(path)]
    window = ["--since", str(T0), "--until", str(T0 + 7200)]
    assert main([*args, *window, "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["schema_id"] == "forge-trial-scorecard/1" and data["exit_code"] == 1
    dc = next(r for r in data["roles"] if r["role"] == "default-chat")
    assert dc["verdict"] == "roll back" and dc["trial"]["requests"] == 300
    pe = next(r for r in data["roles"] if r["role"] == "prompt-enhance")
    assert pe["verdict"] == "not enough data"
    out = tmp_path / "post.md"
    assert main([*args, *window, "--format", "md", "-o", str(out)]) == 1
    assert "### default-chat: **roll back**" in out.read_text()
    assert main([*args, "--since", str(T0 + 7200), "--until", str(T0 + 9000), "--format", "md"]) == 2
    capsys.readouterr()
    assert main([*args, "--since", "yesterday-ish"]) == 3
    assert "ISO date" in capsys.readouterr().err


def test_eval_pass_rates_from_the_eval_store_join_the_verdict(tmp_path: Path) -> None:
    """Eval results saved by the eval helper's store into the same history file (real save_run)."""
    from forge_tui.evals.runner import CaseResult, RunResult
    from forge_tui.evals.store import save_run

    path = tmp_path / "h.sqlite3"
    write(path, _two_sides(300, 300, trial_lat=100.0))
    cases = []
    for i in range(80):  # baseline passes 40 of 40, the trial model 20 of 40
        model = A if i % 2 == 0 else B
        ok = model == A or i % 4 == 1
        cases.append(
            CaseResult(
                index=i,
                target="default-chat",
                route="default-chat",
                host=None,
                test_idx=i,
                prompt_idx=0,
                repeat_idx=0,
                description="case",
                vars={},
                prompt="p",
                output="o",
                status=200,
                served_model=model,
                success=ok,
                time=SWAP + i,
            )
        )
    save_run(
        path,
        RunResult(
            id="eval-1",
            suite="s",
            suite_path=None,
            url="http://x",
            targets=["default-chat"],
            concurrency=1,
            repeat=1,
            started_at=SWAP,
            finished_at=SWAP + 100,
            cases=cases,
        ),
    )
    sc = scorecard(load_catalog(DEMO), roles_of(tmp_path), [swap(SWAP, B, A)], path, since=T0, until=T0 + 7200)
    c = card(sc)
    assert c.trial.eval is not None and (c.trial.eval.count, c.trial.eval.total) == (20, 40)
    assert c.baseline.eval is not None and (c.baseline.eval.count, c.baseline.eval.total) == (40, 40)
    assert c.verdict == "roll back"
    assert any(r.startswith("eval pass rate") and "lower" in r for r in c.reasons)


def test_cli_prints_the_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trial", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "Scorecard" and "roles" in schema["properties"]
    assert schema["properties"]["schema_id"]["const"] == "forge-trial-scorecard/1"
