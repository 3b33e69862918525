"""Telemetry history on a real SQLite file: batching off the request path, restart survival,
bounded backlog, and clear errors for unusable files."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import pytest

from forge_tui.telemetry import ErrorClass, HistoryError, RequestRecord, Telemetry
from forge_tui.telemetry._history import COLUMNS
from forge_tui.telemetry.records import LIVE_ONLY_FIELDS

from .test_telemetry import parse_prometheus, rec, value

SLOW = 3600.0  # a flush interval no test waits for: writes happen on batch size, flush or close


def rows_on_disk(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM requests").fetchone()[0]
    finally:
        conn.close()


def test_every_record_field_has_a_column() -> None:
    stored = [f.name for f in dataclasses.fields(RequestRecord) if f.name not in LIVE_ONLY_FIELDS]
    assert [c for c, _ in COLUMNS] == stored


async def test_records_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "history.sqlite3"
    tel = Telemetry(path)
    await tel.start()
    first = [
        rec(
            100.5,
            request_id="a",
            latency_ms=12.5,
            ttft_ms=3.25,
            tokens_in=4,
            tokens_out=9,
            tokens_per_s=40.0,
            stream=True,
            thinking_injected=True,
            extra={"client": "agent-7"},
        ),
        rec(
            101.0,
            request_id="b",
            role="vision",
            model="qwen2.5-vl",
            status=502,
            image=True,
            error_class=ErrorClass.UPSTREAM_ERROR,
            error="unknown model architecture: 'gemma4'",
        ),
        rec(
            102.0,
            request_id="c",
            role=None,
            model=None,
            host=None,
            backend=None,
            status=404,
            error_class=ErrorClass.NOT_FOUND,
            fallback=True,
            thinking_leaked=True,
        ),
    ]
    for r in first:
        tel.record(r)
    await tel.close()
    await tel.close()  # idempotent

    again = Telemetry(path)
    await again.start()
    assert again.history() == first
    again.record(rec(103.0, request_id="d"))
    await again.close()
    third = Telemetry(path)
    assert [r.request_id for r in third.history()] == ["a", "b", "c", "d"]  # readable without start()
    assert [r.request_id for r in third.history(role="vision")] == ["b"]
    assert [r.request_id for r in third.history(since=101.0, until=103.0)] == ["b", "c"]
    assert [r.request_id for r in third.history(limit=2, newest_first=True)] == ["d", "c"]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"requests_time", "requests_role_time"} <= indexes
        # None is written as SQL NULL (the writer binds it through a registered adapter, not as text or 0)
        nulls = conn.execute(
            "SELECT request_id, typeof(role), typeof(ttft_ms), typeof(error), typeof(extra) FROM requests ORDER BY id"
        ).fetchall()
        assert nulls[2] == ("c", "null", "null", "null", "null") and nulls[0][2] == "real"
    finally:
        conn.close()


async def test_writes_are_batched_off_the_request_path(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    tel = Telemetry(path, flush_interval_s=SLOW, batch_size=10_000)
    await tel.start()
    for i in range(50):
        tel.record(rec(i, request_id=f"r{i}"))
    assert rows_on_disk(path) == 0  # nothing written synchronously
    assert tel.history() == []
    assert tel.memory_stats()["history_pending"] == 50
    await tel.flush()
    assert rows_on_disk(path) == 50
    for i in range(50, 70):
        tel.record(rec(i, request_id=f"r{i}"))
    await tel.close()
    assert rows_on_disk(path) == 70
    _, samples = parse_prometheus(tel.prometheus())
    assert value(samples, "forge_history_written_total") == 70
    assert value(samples, "forge_history_pending") == 0


async def test_a_full_batch_is_written_without_waiting_for_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    tel = Telemetry(path, flush_interval_s=SLOW, batch_size=25)
    await tel.start()
    try:
        for i in range(25):
            tel.record(rec(i))
        for _ in range(200):  # bounded: at most ~10 s
            if rows_on_disk(path) == 25:
                break
            await asyncio.sleep(0.05)
        assert rows_on_disk(path) == 25
    finally:
        await tel.close()


async def test_backlog_is_bounded_and_drops_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    tel = Telemetry(path, flush_interval_s=SLOW, batch_size=10_000, max_pending=100)
    await tel.start()
    for i in range(150):
        tel.record(rec(i))
    assert tel.memory_stats()["history_pending"] == 100
    _, samples = parse_prometheus(tel.prometheus())
    assert value(samples, "forge_history_dropped_total") == 50
    assert tel.info(now=200).total == 150  # live windows still saw every request
    await tel.close()
    assert rows_on_disk(path) == 100


async def test_failed_writes_are_counted_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    tel = Telemetry(path, flush_interval_s=SLOW)
    await tel.start()
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE requests")  # someone broke the file under a running gateway
    conn.commit()
    conn.close()
    tel.record(rec(1))
    await tel.flush()
    assert "no such table: requests" in (tel.history_error or "")
    assert str(path) in (tel.history_error or "")
    _, samples = parse_prometheus(tel.prometheus())
    assert value(samples, "forge_history_dropped_total") == 1
    assert value(samples, "forge_history_write_errors_total") == 1
    await tel.close()


async def test_without_a_path_nothing_is_persisted() -> None:
    tel = Telemetry(None)
    await tel.start()
    tel.record(rec(1))
    await tel.flush()
    await tel.close()
    assert tel.history() == []


@pytest.mark.parametrize("kind", ["directory", "corrupt", "parent-is-file", "foreign", "newer-schema"])
async def test_unusable_history_file_fails_at_start_with_the_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "history.sqlite3"
    expected = {
        "directory": "not a regular file",
        "corrupt": "not a database",
        "parent-is-file": "cannot create its directory",
        "foreign": "not a forge-tui history",
        "newer-schema": "schema version [99]",
    }[kind]
    if kind == "directory":
        path.mkdir()
    elif kind == "corrupt":
        path.write_bytes(b"this is not sqlite at all\n" * 400)
    elif kind == "parent-is-file":
        (tmp_path / "blocker").write_text("x")
        path = tmp_path / "blocker" / "history.sqlite3"
    elif kind == "foreign":
        c = sqlite3.connect(path)
        c.execute("CREATE TABLE photos (id INTEGER)")
        c.commit()
        c.close()
    else:
        c = sqlite3.connect(path)
        c.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        c.execute("INSERT INTO schema_version VALUES (99)")
        c.commit()
        c.close()
    tel = Telemetry(path)
    with pytest.raises(HistoryError) as err:
        await tel.start()
    assert str(path) in str(err.value)
    assert expected in str(err.value)
    await tel.close()  # closing a telemetry that never started is fine


async def test_records_after_close_are_counted_as_dropped(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    tel = Telemetry(path, flush_interval_s=SLOW)
    tel.record(rec(1))  # before start: not persisted, but counted
    await tel.start()
    tel.record(rec(2))
    await tel.close()
    tel.record(rec(3))  # a straggler finishing during shutdown
    _, samples = parse_prometheus(tel.prometheus())
    assert value(samples, "forge_history_dropped_total") == 2
    assert value(samples, "forge_history_written_total") == 1
    assert [r.time for r in tel.history()] == [2]


# -- schema v2: rollups, migration, retention, permissions, crash safety ------------------------------


def _v1_file(path: Path, n: int) -> None:
    """A history as forge-tui wrote it before schema 2 (the v1 DDL, verbatim)."""
    from forge_tui.telemetry._history import COLUMNS as V2

    v1 = V2[:21]
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    c.execute("INSERT INTO schema_version VALUES (1)")
    c.execute("CREATE TABLE requests (id INTEGER PRIMARY KEY, " + ", ".join(f"{a} {b}" for a, b in v1) + ")")
    for i in range(n):
        c.execute(
            "INSERT INTO requests (time, request_id, endpoint, role, model, stream, status, error_class, latency_ms,"
            " fallback, thinking_injected, thinking_leaked, image) VALUES (?, ?, '/v1/chat/completions',"
            " 'default-chat', 'm', 0, 200, ?, ?, 0, 0, 0, 0)",
            (7200.0 + i, f"old{i}", "ok" if i % 4 else "upstream_error", float(10 + i)),
        )
    c.commit()
    c.close()


def _rollup_total(path: Path) -> int:
    c = sqlite3.connect(path)
    try:
        return c.execute("SELECT coalesce(sum(n), 0) FROM rollups").fetchone()[0]
    finally:
        c.close()


async def test_a_v1_history_is_migrated_with_rollups_of_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    _v1_file(path, 40)
    tel = Telemetry(path, flush_interval_s=SLOW)
    await tel.start()
    tel.record(rec(9000.0, request_id="new", source="agent", inflight=2, cold_start=True, structured=False))
    await tel.close()
    c = sqlite3.connect(path)
    try:
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
        assert c.execute("SELECT count(*) FROM requests").fetchone()[0] == 41
        by_ec = dict(c.execute("SELECT error_class, sum(n) FROM rollups GROUP BY error_class").fetchall())
    finally:
        c.close()
    assert by_ec == {"ok": 31, "upstream_error": 10}
    old = Telemetry(path).history(until=8000.0)
    assert len(old) == 40 and old[0].source is None and old[0].cold_start is False
    new = Telemetry(path).history(since=9000.0)[0]
    assert (new.source, new.inflight, new.cold_start, new.structured) == ("agent", 2, True, False)


async def test_rollups_match_the_raw_rows(tmp_path: Path) -> None:
    from forge_tui.telemetry._history import aggregate_raw, read_rollups

    path = tmp_path / "h.sqlite3"
    tel = Telemetry(path, flush_interval_s=SLOW, batch_size=37)  # batches cut across hours and keys
    await tel.start()
    for i in range(500):
        tel.record(
            rec(
                3600.0 * 5 + i * 29.0,
                latency_ms=float(i % 97) * 13,
                ttft_ms=float(i % 7) if i % 2 else None,
                source=("agent", "job", "smoke")[i % 3],
                inflight=i % 3,
                fallback=i % 11 == 0,
                error_class=ErrorClass.SATURATED if i % 13 == 0 else ErrorClass.OK,
                cold_start=i % 17 == 0,
                spill=i % 5 == 0,
                thinking_leaked=i % 19 == 0,
                structured=(None, True, False)[i % 3 if i % 4 else 0],
                tokens_per_s=float(i % 23) if i % 2 else None,
            )
        )
    await tel.close()
    stored = dict(read_rollups(path, 0, 10**9))
    folded = aggregate_raw(path, 0.0, 1e12)
    assert stored == folded
    assert sum(a.n for a in stored.values()) == 500


async def test_history_files_are_private(tmp_path: Path) -> None:
    import os
    import stat

    path = tmp_path / "h.sqlite3"
    old = os.umask(0o022)
    try:
        tel = Telemetry(path, flush_interval_s=SLOW)
        await tel.start()
        tel.record(rec(1.0))
        await tel.flush()
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            assert p.exists(), p
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        await tel.close()
    finally:
        os.umask(old)


def test_kill_9_mid_batch_leaves_a_readable_consistent_history(tmp_path: Path) -> None:
    """A real writer process killed with SIGKILL while it writes: the file opens, and raw rows and
    rollups agree (they commit in one transaction)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "h.sqlite3"
    code = (
        "import sys, itertools\n"
        "from pathlib import Path\n"
        "from forge_tui.telemetry._history import History\n"
        "from forge_tui.telemetry import RequestRecord\n"
        "h = History(Path(sys.argv[1]), batch_size=2000, flush_interval_s=0.01, max_pending=10**7)\n"
        "h.open()\n"
        "print('open', flush=True)\n"
        "for i in itertools.count():\n"
        "    h.put(RequestRecord(time=float(i), request_id=str(i), endpoint='/v1/chat/completions', role='r',"
        " model='m', status=200, latency_ms=float(i % 500)))\n"
        "    if i % 5000 == 0:\n"
        "        h.flush(1.0) if i % 20000 == 0 else None\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, cwd=Path(__file__).parents[1]
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"open"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # bounded: wait until some batches are on disk
            if rows_on_disk(path) >= 20000:
                break
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    n = rows_on_disk(path)
    assert n >= 20000
    assert _rollup_total(path) == n
    c = sqlite3.connect(path)
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        c.close()
    tel = Telemetry(path)  # and a new gateway carries on with it
    asyncio.run(tel.start())
    asyncio.run(tel.close())
