"""Eval runs in the history database file, in tables of their own (``eval_runs``, ``eval_cases``,
``eval_assertions``; ``CREATE TABLE IF NOT EXISTS``, no schema version of their own).

The file belongs to telemetry's ``History`` (its ``schema_version`` and ``requests`` tables): a file
that does not exist yet is created by opening a ``History`` on it first, so it is always a
forge-tui history the gateway will accept. ``pass_rates`` is what the trial scorecard reads.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .assertions import Outcome
from .runner import CaseResult, RunResult
from .suite import Prompt

__all__ = ["RunRow", "StoreError", "list_runs", "load_run", "pass_rates", "save_run"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS eval_runs (
        id TEXT PRIMARY KEY, suite TEXT NOT NULL, suite_path TEXT, url TEXT NOT NULL, targets TEXT NOT NULL,
        concurrency INTEGER NOT NULL, repeat INTEGER NOT NULL, started_at REAL NOT NULL, finished_at REAL NOT NULL,
        passed INTEGER NOT NULL, total INTEGER NOT NULL, errors INTEGER NOT NULL, config TEXT, prompts TEXT)""",
    """CREATE TABLE IF NOT EXISTS eval_cases (
        id INTEGER PRIMARY KEY, run_id TEXT NOT NULL REFERENCES eval_runs(id), idx INTEGER NOT NULL,
        target TEXT NOT NULL, route TEXT NOT NULL, host TEXT, test_idx INTEGER NOT NULL, prompt_idx INTEGER NOT NULL,
        repeat_idx INTEGER NOT NULL, description TEXT NOT NULL, vars TEXT NOT NULL, prompt TEXT NOT NULL,
        output TEXT NOT NULL, status INTEGER NOT NULL, error TEXT, served_model TEXT, served_host TEXT,
        served_backend TEXT, latency_ms REAL NOT NULL, tokens_in INTEGER, tokens_out INTEGER, tokens_per_s REAL,
        success INTEGER NOT NULL, score REAL NOT NULL, reason TEXT NOT NULL, startup_waits INTEGER NOT NULL,
        saturation_retries INTEGER NOT NULL, waited_s REAL NOT NULL, request_id TEXT, time REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS eval_assertions (
        case_id INTEGER NOT NULL REFERENCES eval_cases(id), idx INTEGER NOT NULL, type TEXT NOT NULL, value TEXT,
        pass INTEGER NOT NULL, score REAL NOT NULL, weight REAL NOT NULL, reason TEXT NOT NULL, metric TEXT)""",
    "CREATE INDEX IF NOT EXISTS eval_cases_run ON eval_cases (run_id, idx)",
    "CREATE INDEX IF NOT EXISTS eval_cases_model_time ON eval_cases (served_model, time)",
    "CREATE INDEX IF NOT EXISTS eval_assertions_case ON eval_assertions (case_id, idx)",
)


class StoreError(Exception):
    """The history file cannot hold or give eval runs; the message names the path."""


@dataclass(frozen=True, slots=True)
class RunRow:
    id: str
    suite: str
    targets: list[str]
    started_at: float
    finished_at: float
    passed: int
    total: int
    errors: int


def _ensure_history(path: Path) -> None:
    if path.exists():
        return
    from ..telemetry._history import History

    h = History(path)
    try:
        h.open()
    except Exception as exc:
        raise StoreError(str(exc)) from exc
    h.close()


@contextmanager
def _connect(path: str | Path, *, create: bool) -> Iterator[sqlite3.Connection]:
    p = Path(path).expanduser()
    if create:
        _ensure_history(p)
    elif not p.exists():
        raise StoreError(f"history {p} does not exist (no eval run stored there yet)")
    try:
        conn = sqlite3.connect(p, timeout=10)
    except sqlite3.Error as exc:
        raise StoreError(f"history {p}: {exc}") from exc
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        if create:
            with conn:
                for stmt in _SCHEMA:
                    conn.execute(stmt)
        yield conn
    except sqlite3.Error as exc:
        raise StoreError(f"history {p}: {exc}") from exc
    finally:
        conn.close()


def _has_tables(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'eval_cases'").fetchone()
    return row is not None


def save_run(db_path: str | Path, run: RunResult) -> None:
    passed = sum(1 for c in run.cases if c.success)
    errors = sum(1 for c in run.cases if c.error is not None)
    with _connect(db_path, create=True) as conn, conn:
        conn.execute(
            "INSERT OR REPLACE INTO eval_runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                run.id,
                run.suite,
                run.suite_path,
                run.url,
                json.dumps(run.targets),
                run.concurrency,
                run.repeat,
                run.started_at,
                run.finished_at,
                passed,
                len(run.cases),
                errors,
                json.dumps(run.config, default=str),
                json.dumps([p.model_dump() for p in run.prompts]),
            ),
        )
        for c in run.cases:
            cur = conn.execute(
                "INSERT INTO eval_cases (run_id, idx, target, route, host, test_idx, prompt_idx, repeat_idx, "
                "description, vars, prompt, output, status, error, served_model, served_host, served_backend, "
                "latency_ms, tokens_in, tokens_out, tokens_per_s, success, score, reason, startup_waits, "
                "saturation_retries, waited_s, request_id, time) VALUES "
                "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run.id,
                    c.index,
                    c.target,
                    c.route,
                    c.host,
                    c.test_idx,
                    c.prompt_idx,
                    c.repeat_idx,
                    c.description,
                    json.dumps(c.vars, default=str),
                    c.prompt,
                    c.output,
                    c.status,
                    c.error,
                    c.served_model,
                    c.served_host,
                    c.served_backend,
                    c.latency_ms,
                    c.tokens_in,
                    c.tokens_out,
                    c.tokens_per_s,
                    int(c.success),
                    c.score,
                    c.reason,
                    c.startup_waits,
                    c.saturation_retries,
                    c.waited_s,
                    c.request_id,
                    c.time,
                ),
            )
            conn.executemany(
                "INSERT INTO eval_assertions VALUES (?,?,?,?,?,?,?,?,?)",
                [
                    (
                        cur.lastrowid,
                        i,
                        o.type,
                        json.dumps(o.value, default=str),
                        int(o.passed),
                        o.score,
                        o.weight,
                        o.reason,
                        o.metric,
                    )
                    for i, o in enumerate(c.assertions)
                ],
            )


def list_runs(db_path: str | Path, limit: int = 50) -> list[RunRow]:
    with _connect(db_path, create=False) as conn:
        if not _has_tables(conn):
            return []
        rows = conn.execute(
            "SELECT id, suite, targets, started_at, finished_at, passed, total, errors FROM eval_runs "
            "ORDER BY started_at DESC LIMIT ?",
            (limit,),
        ).fetchall()
    return [RunRow(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows]


def load_run(db_path: str | Path, run_id: str) -> RunResult:
    """A stored run by its id or an unambiguous prefix of it ("latest" for the newest)."""
    with _connect(db_path, create=False) as conn:
        if not _has_tables(conn):
            raise StoreError(f"history {db_path} holds no eval runs")
        if run_id == "latest":
            found = conn.execute("SELECT id FROM eval_runs ORDER BY started_at DESC LIMIT 1").fetchall()
        else:
            found = conn.execute(
                "SELECT id FROM eval_runs WHERE id = ? OR id LIKE ? ORDER BY started_at DESC",
                (run_id, run_id.replace("%", "") + "%"),
            ).fetchall()
        if not found:
            raise StoreError(f"no eval run {run_id!r} in {db_path} (forge-tui eval list shows the stored ones)")
        exact = [f for f in found if f[0] == run_id]
        if len(found) > 1 and not exact:
            raise StoreError(f"{run_id!r} matches {len(found)} runs: {', '.join(f[0] for f in found[:5])}")
        rid = (exact or found)[0][0]
        r = conn.execute("SELECT * FROM eval_runs WHERE id = ?", (rid,)).fetchone()
        run = RunResult(
            id=r[0],
            suite=r[1],
            suite_path=r[2],
            url=r[3],
            targets=json.loads(r[4]),
            concurrency=r[5],
            repeat=r[6],
            started_at=r[7],
            finished_at=r[8],
            config=json.loads(r[12]) if r[12] else {},
            prompts=[Prompt.model_validate(p) for p in json.loads(r[13] or "[]")],
        )
        outcomes: dict[int, list[Outcome]] = {}
        for a in conn.execute(
            "SELECT a.case_id, a.type, a.value, a.pass, a.score, a.reason, a.weight, a.metric FROM eval_assertions a "
            "JOIN eval_cases c ON c.id = a.case_id WHERE c.run_id = ? ORDER BY a.case_id, a.idx",
            (rid,),
        ):
            outcomes.setdefault(a[0], []).append(
                Outcome(a[1], json.loads(a[2]) if a[2] else None, bool(a[3]), a[4], a[5], a[6], a[7])
            )
        cols = [d[1] for d in conn.execute("PRAGMA table_info(eval_cases)")]
        for row in conn.execute("SELECT * FROM eval_cases WHERE run_id = ? ORDER BY idx", (rid,)):
            d: dict[str, Any] = dict(zip(cols, row, strict=True))
            run.cases.append(
                CaseResult(
                    index=d["idx"],
                    target=d["target"],
                    route=d["route"],
                    host=d["host"],
                    test_idx=d["test_idx"],
                    prompt_idx=d["prompt_idx"],
                    repeat_idx=d["repeat_idx"],
                    description=d["description"],
                    vars=json.loads(d["vars"]),
                    prompt=d["prompt"],
                    output=d["output"],
                    status=d["status"],
                    error=d["error"],
                    served_model=d["served_model"],
                    served_host=d["served_host"],
                    served_backend=d["served_backend"],
                    latency_ms=d["latency_ms"],
                    tokens_in=d["tokens_in"],
                    tokens_out=d["tokens_out"],
                    tokens_per_s=d["tokens_per_s"],
                    success=bool(d["success"]),
                    score=d["score"],
                    reason=d["reason"],
                    assertions=outcomes.get(d["id"], []),
                    startup_waits=d["startup_waits"],
                    saturation_retries=d["saturation_retries"],
                    waited_s=d["waited_s"],
                    request_id=d["request_id"],
                    time=d["time"],
                )
            )
    return run


def _ts(v: float | dt.datetime | None) -> float | None:
    return v.timestamp() if isinstance(v, dt.datetime) else v


def pass_rates(
    db_path: str | Path, since: float | dt.datetime | None = None, until: float | dt.datetime | None = None
) -> dict[str, tuple[int, int]]:
    """model id -> (passed, total) over eval cases in [since, until) (unix seconds or datetimes).

    Keyed by the model that actually answered (``x-forge-route``), so a role's fallback is
    credited to the fallback. A case no model answered (gateway unreachable, a startup that
    never ended) names no model and is not counted; an answer that was an HTTP error counts as
    not passed. A missing file or a file without eval tables gives {}.
    """
    p = Path(db_path).expanduser()
    if not p.exists():
        return {}
    sql = "SELECT served_model, SUM(success), COUNT(*) FROM eval_cases WHERE served_model IS NOT NULL"
    args: list[float] = []
    lo, hi = _ts(since), _ts(until)
    if lo is not None:
        sql += " AND time >= ?"
        args.append(lo)
    if hi is not None:
        sql += " AND time < ?"
        args.append(hi)
    sql += " GROUP BY served_model"
    with _connect(p, create=False) as conn:
        if not _has_tables(conn):
            return {}
        return {str(m): (int(ok or 0), int(n)) for m, ok, n in conn.execute(sql, args)}
