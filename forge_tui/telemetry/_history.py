"""SQLite request history: WAL, batched writes from one background thread, bounded backlog,
hourly rollups, retention.

The request path only appends to a deque (``put``); a writer thread owns the write connection and
commits a batch every ``flush_interval_s`` or every ``batch_size`` records. If the disk falls
behind and ``max_pending`` records are waiting, new ones are counted as dropped instead of growing
memory or blocking a request. Reads use their own short-lived connection (WAL lets them run beside
the writer).

Each batch also adds to the hourly ``rollups`` (see ``_rollup``) in the same transaction, so raw
rows and rollups never disagree, even after a kill -9. With ``retention_days`` the writer thread
deletes expired raw rows in small budgeted steps between batches (the request path never waits on
it); rollups are kept ``rollup_days``. The file and its WAL/SHM are created 0600.

Schema versions: 1 (raw rows only) is migrated in place to 2 (new record fields, rollups built
from the existing rows) the first time a newer forge-tui opens it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time as _time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from ._rollup import Accum, RollupKey, decode_hist, encode_hist
from .records import ErrorClass, RequestRecord

__all__ = [
    "COLUMNS",
    "SCHEMA_VERSION",
    "History",
    "HistoryError",
    "aggregate_raw",
    "count_raw",
    "open_for_read",
    "raw_bounds",
    "raw_complete_since",
    "read_rollups",
]

SCHEMA_VERSION = 2

# sqlite3 binds None through the adapter protocol when no adapter is registered for it: two failed
# attribute lookups, each raising and clearing an exception, for every NULL column of every row (a
# third of a record's write). ``{}.get`` returns None for any key: registered as None's adapter, a
# NULL costs one C call and is still bound as NULL. Process-wide, and the same meaning everywhere.
sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))

# (column, SQL type) in RequestRecord field order (live-only fields left out); ``extra`` is JSON text.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("time", "REAL NOT NULL"),
    ("request_id", "TEXT NOT NULL"),
    ("endpoint", "TEXT NOT NULL"),
    ("role", "TEXT"),
    ("model", "TEXT"),
    ("host", "TEXT"),
    ("backend", "TEXT"),
    ("stream", "INTEGER NOT NULL"),
    ("status", "INTEGER NOT NULL"),
    ("error_class", "TEXT NOT NULL"),
    ("error", "TEXT"),
    ("latency_ms", "REAL NOT NULL"),
    ("ttft_ms", "REAL"),
    ("tokens_in", "INTEGER"),
    ("tokens_out", "INTEGER"),
    ("tokens_per_s", "REAL"),
    ("fallback", "INTEGER NOT NULL"),
    ("thinking_injected", "INTEGER NOT NULL"),
    ("thinking_leaked", "INTEGER NOT NULL"),
    ("image", "INTEGER NOT NULL"),
    ("extra", "TEXT"),
    # version 2
    ("source", "TEXT"),
    ("inflight", "INTEGER"),
    ("cold_start", "INTEGER NOT NULL DEFAULT 0"),
    ("structured", "INTEGER"),
    ("spill", "INTEGER NOT NULL DEFAULT 0"),
)
_V1_COLUMNS = 21
_NAMES = tuple(c for c, _ in COLUMNS)
_IX = {c: i for i, c in enumerate(_NAMES)}
_INSERT = f"INSERT INTO requests ({', '.join(_NAMES)}) VALUES ({', '.join('?' * len(_NAMES))})"
_SELECT = f"SELECT id, {', '.join(_NAMES)} FROM requests"
_ROLLUP_COLS = (
    "hour, role, model, host, source, error_class, loaded, cold, fb, "
    "n, fallback, spill, leaked, structured, structured_ok, tps_n, tps_sum, lat, ttft"
)
_ROLLUP_UPSERT = f"INSERT OR REPLACE INTO rollups ({_ROLLUP_COLS}) VALUES ({', '.join('?' * 19)})"
_ROLLUPS_TABLE = (
    "CREATE TABLE IF NOT EXISTS rollups (hour INTEGER NOT NULL, role TEXT NOT NULL, model TEXT NOT NULL, "
    "host TEXT NOT NULL, source TEXT NOT NULL, error_class TEXT NOT NULL, loaded INTEGER NOT NULL, "
    "cold INTEGER NOT NULL, fb INTEGER NOT NULL, n INTEGER NOT NULL, fallback INTEGER NOT NULL, spill INTEGER NOT NULL, "
    "leaked INTEGER NOT NULL, structured INTEGER NOT NULL, structured_ok INTEGER NOT NULL, "
    "tps_n INTEGER NOT NULL, tps_sum REAL NOT NULL, lat BLOB NOT NULL, ttft BLOB NOT NULL, "
    "PRIMARY KEY (hour, role, model, host, source, error_class, loaded, cold, fb)) WITHOUT ROWID"
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY, " + ", ".join(f"{c} {t}" for c, t in COLUMNS) + ")",
    "CREATE INDEX IF NOT EXISTS requests_time ON requests (time)",
    "CREATE INDEX IF NOT EXISTS requests_role_time ON requests (role, time)",
    _ROLLUPS_TABLE,
    # raw_complete_since: raw rows at or after this time were never pruned (reports trust them)
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL)",
)
# What a rollup needs from a raw row (reports read edge hours from raw rows with the same shape).
_AGG_COLS = (
    "time, role, model, host, source, error_class, inflight, cold_start, latency_ms, ttft_ms, "
    "tokens_per_s, fallback, spill, thinking_leaked, structured"
)


class HistoryError(Exception):
    """The history file cannot be used; the message names the path and says why."""


_EC_TEXT: dict[object, str] = {ec: ec.value for ec in ErrorClass}
# ``extra`` holds a handful of distinct small dicts (e.g. {"thinking": "policy:off"}): their JSON
# is kept, keyed by their items, so the writer thread does not re-encode the same text per row.
_EXTRA_JSON: dict[tuple[Any, ...], str] = {}
_EXTRA_JSON_MAX = 256


def _extra_json(extra: dict[str, Any]) -> str | None:
    if not extra:
        return None
    key = tuple(extra.items())
    try:
        hit = _EXTRA_JSON.get(key)
    except TypeError:  # an unhashable value: encode it every time
        return json.dumps(extra)
    if hit is None:
        hit = json.dumps(extra)
        # only all-text dicts are kept: 1 == True would otherwise share a key with different JSON
        if len(_EXTRA_JSON) < _EXTRA_JSON_MAX and all(type(v) is str for v in extra.values()):
            _EXTRA_JSON[key] = hit
    return hit


def _row(r: RequestRecord) -> tuple[Any, ...]:
    ec = r.error_class
    ec_text = _EC_TEXT.get(ec)
    if ec_text is None:
        ec_text = ec.value if isinstance(ec, ErrorClass) else str(ec)
    st = r.structured
    return (
        r.time,
        r.request_id,
        r.endpoint,
        r.role,
        r.model,
        r.host,
        r.backend,
        int(r.stream),
        r.status,
        ec_text,
        r.error,
        r.latency_ms,
        r.ttft_ms,
        r.tokens_in,
        r.tokens_out,
        r.tokens_per_s,
        int(r.fallback),
        int(r.thinking_injected),
        int(r.thinking_leaked),
        int(r.image),
        _extra_json(r.extra),
        r.source,
        r.inflight,
        int(r.cold_start),
        None if st is None else int(st),
        int(r.spill),
    )


def _record(row: tuple[Any, ...]) -> RequestRecord:
    (
        _id,
        time,
        request_id,
        endpoint,
        role,
        model,
        host,
        backend,
        stream,
        status,
        ec,
        error,
        latency_ms,
        ttft_ms,
        tokens_in,
        tokens_out,
        tokens_per_s,
        fallback,
        injected,
        leaked,
        image,
        extra,
        source,
        inflight,
        cold_start,
        structured,
        spill,
    ) = row
    try:
        error_class = ErrorClass(ec)
    except ValueError:  # written by a newer forge-tui with more classes; keep the row readable
        error_class = ErrorClass.GATEWAY_ERROR
    return RequestRecord(
        time=time,
        request_id=request_id,
        endpoint=endpoint,
        role=role,
        model=model,
        host=host,
        backend=backend,
        stream=bool(stream),
        status=status,
        error_class=error_class,
        error=error,
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        tokens_per_s=tokens_per_s,
        fallback=bool(fallback),
        thinking_injected=bool(injected),
        thinking_leaked=bool(leaked),
        image=bool(image),
        extra=json.loads(extra) if extra else {},
        source=source,
        inflight=inflight,
        cold_start=bool(cold_start),
        structured=None if structured is None else bool(structured),
        spill=bool(spill),
    )


# ------------------------------------------------------------------------------ rollup maths
def _agg_key(
    t: float,
    role: str | None,
    model: str | None,
    host: str | None,
    source: str | None,
    ec: str,
    inflight: int | None,
    cold: object,
    fb: object,
    bucket_s: float,
) -> RollupKey:
    return (
        int(t // bucket_s),
        role or "",
        model or "",
        host or "",
        source or "",
        ec,
        1 if inflight else 0,
        1 if cold else 0,
        1 if fb else 0,
    )


def _fold(rows: Iterable[tuple[Any, ...]], into: dict[RollupKey, Accum], bucket_s: float = 3600.0) -> None:
    """Add rows shaped like ``_AGG_COLS`` to per-key sums."""
    for t, role, model, host, source, ec, inflight, cold, lat, ttft, tps, fb, spill, leaked, st in rows:
        key = _agg_key(t, role, model, host, source, ec, inflight, cold, fb, bucket_s)
        acc = into.get(key)
        if acc is None:
            acc = into[key] = Accum()
        acc.add(lat, ttft, tps, bool(fb), bool(spill), bool(leaked), None if st is None else bool(st))


def _rows_folding(batch: list[RequestRecord], sums: dict[RollupKey, Accum]) -> Iterator[tuple[Any, ...]]:
    # The writer's per-record step: the same key and sums as ``_fold`` over the row's ``_AGG_COLS``
    # (tests hold rollups equal to a fold of the raw rows), read from the record without a view tuple.
    for rec in batch:
        row = _row(rec)
        key = (
            int(rec.time // 3600.0),
            rec.role or "",
            rec.model or "",
            rec.host or "",
            rec.source or "",
            row[9],  # the error class as stored
            1 if rec.inflight else 0,
            1 if rec.cold_start else 0,
            1 if rec.fallback else 0,
        )
        acc = sums.get(key)
        if acc is None:
            acc = sums[key] = Accum()
        st = rec.structured
        acc.add(
            rec.latency_ms,
            rec.ttft_ms,
            rec.tokens_per_s,
            bool(rec.fallback),
            bool(rec.spill),
            bool(rec.thinking_leaked),
            None if st is None else bool(st),
        )
        yield row


def _rollup_row(key: RollupKey, a: Accum) -> tuple[Any, ...]:
    return (
        *key,
        a.n,
        a.fallback,
        a.spill,
        a.leaked,
        a.structured,
        a.structured_ok,
        a.tps_n,
        a.tps_sum,
        encode_hist(a.lat),
        encode_hist(a.ttft),
    )


def _accum_of(row: tuple[Any, ...]) -> tuple[RollupKey, Accum]:
    hour, role, model, host, source, ec, loaded, cold, fb = row[:9]
    n, fallback, spill, leaked, st, st_ok, tps_n, tps_sum, lat, ttft = row[9:]
    key: RollupKey = (hour, role, model, host, source, ec, loaded, cold, fb)
    return key, Accum(n, fallback, spill, leaked, st, st_ok, tps_n, tps_sum, decode_hist(lat), decode_hist(ttft))


def _add_rollups(
    conn: sqlite3.Connection, sums: dict[RollupKey, Accum], cache: dict[RollupKey, Accum]
) -> list[tuple[RollupKey, Accum]]:
    """Add ``sums`` to the stored rollups (inside the caller's transaction); ``cache`` mirrors stored rows."""
    out = []
    for key, add in sums.items():
        cur = cache.get(key)
        if cur is None:
            row = conn.execute(
                f"SELECT {_ROLLUP_COLS} FROM rollups WHERE hour = ? AND role = ? AND model = ? AND host = ? "
                "AND source = ? AND error_class = ? AND loaded = ? AND cold = ? AND fb = ?",
                key,
            ).fetchone()
            cur = _accum_of(row)[1] if row else Accum()
        else:
            cur = cur.copy()  # the cache changes only once the transaction commits
        cur.merge(add)
        out.append((key, cur))
    conn.executemany(_ROLLUP_UPSERT, [_rollup_row(k, a) for k, a in out])
    return out


# ------------------------------------------------------------------------------ schema
def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    for name, sqltype in COLUMNS[_V1_COLUMNS:]:
        conn.execute(f"ALTER TABLE requests ADD COLUMN {name} {sqltype}")
    conn.execute(_ROLLUPS_TABLE)
    # Rollups of the rows already there, one bounded chunk at a time (a v1 file can hold millions).
    last = 0
    while True:
        rows = conn.execute(f"SELECT id, {_AGG_COLS} FROM requests WHERE id > ? ORDER BY id LIMIT 50000", (last,))
        chunk = rows.fetchall()
        if not chunk:
            break
        last = chunk[-1][0]
        sums: dict[RollupKey, Accum] = {}
        _fold((r[1:] for r in chunk), sums)
        _add_rollups(conn, sums, {})
    conn.execute("UPDATE schema_version SET version = 2")


_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _migrate_1_to_2}


def _private(path: Path) -> None:
    """The history holds prompts' metadata and callers' names: owner only, WAL and SHM included."""
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if p.exists() and (p.stat().st_mode & 0o777) != 0o600:
                os.chmod(p, 0o600)
        except OSError:
            pass  # not ours to change (read-only share): reading still works


def _prepare(path: Path) -> sqlite3.Connection:
    """Open (creating if needed), migrate and check the schema; raises HistoryError naming the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HistoryError(f"telemetry history {path}: cannot create its directory: {e}") from e
    if path.exists() and not path.is_file():
        raise HistoryError(f"telemetry history {path}: not a regular file")
    new = not path.exists()
    if new:
        try:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # SQLite gives WAL/SHM the same mode
        except OSError as e:
            raise HistoryError(f"telemetry history {path}: cannot create it: {e}") from e
    conn: sqlite3.Connection | None = None
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and "schema_version" not in tables:
            raise HistoryError(
                f"telemetry history {path}: an SQLite file that is not a forge-tui history "
                f"(tables: {', '.join(sorted(tables))}); choose another path"
            )
        if not tables:
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")  # pruned pages go back to the disk
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise HistoryError(f"telemetry history {path}: could not switch to WAL (journal_mode={mode})")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across crashes of forge
        conn.execute("BEGIN IMMEDIATE")  # proves we can write now rather than at the first batch
        versions = (
            [r[0] for r in conn.execute("SELECT version FROM schema_version")] if "schema_version" in tables else []
        )
        if len(versions) == 1 and versions[0] in _MIGRATIONS:
            v = versions[0]
            while v in _MIGRATIONS:
                _MIGRATIONS[v](conn)
                v += 1
            versions = [v]
        elif versions and versions != [SCHEMA_VERSION]:
            raise HistoryError(
                f"telemetry history {path}: schema version {versions} but this forge-tui reads "
                f"version {SCHEMA_VERSION}; move the file aside or upgrade forge-tui"
            )
        for stmt in _SCHEMA:
            conn.execute(stmt)
        if not versions:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
        _private(path)
        return conn
    except HistoryError:
        if conn is not None:
            conn.close()
        raise
    except sqlite3.Error as e:
        if conn is not None:
            conn.close()
        raise HistoryError(f"telemetry history {path}: cannot use it as an SQLite database: {e}") from e


def open_for_read(path: Path) -> None:
    """Make sure ``path`` is a current-schema history (migrating an older one); HistoryError if not."""
    if not Path(path).is_file():
        raise HistoryError(f"telemetry history {path}: no such file")
    _prepare(Path(path)).close()


def _reader(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def read_rollups(
    path: Path, since_hour: int, until_hour: int, roles: Iterable[str] | None = None
) -> Iterator[tuple[RollupKey, Accum]]:
    """Stored rollups with ``since_hour <= hour < until_hour`` (unix hours), optionally for some roles."""
    sql = f"SELECT {_ROLLUP_COLS} FROM rollups WHERE hour >= ? AND hour < ?"
    args: list[object] = [since_hour, until_hour]
    if roles is not None:
        rl = list(roles)
        sql += f" AND role IN ({', '.join('?' * len(rl))})"
        args += rl
    try:
        conn = _reader(path)
        try:
            rows = conn.execute(sql, args).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise HistoryError(f"telemetry history {path}: cannot read its rollups: {e}") from e
    return iter([_accum_of(r) for r in rows])


def aggregate_raw(
    path: Path, since: float, until: float, roles: Iterable[str] | None = None, bucket_s: float = 3600.0
) -> dict[RollupKey, Accum]:
    """Raw rows with ``since <= time < until`` folded like rollups, ``bucket_s`` wide (key[0] = time // bucket_s)."""
    sql = f"SELECT {_AGG_COLS} FROM requests WHERE time >= ? AND time < ?"
    args: list[object] = [since, until]
    if roles is not None:
        rl = list(roles)
        nulls = " OR role IS NULL" if "" in rl else ""  # "" stands for role-less requests, as in rollups
        sql += f" AND (role IN ({', '.join('?' * len(rl))}){nulls})"
        args += rl
    out: dict[RollupKey, Accum] = {}
    try:
        conn = _reader(path)
        try:
            cur = conn.execute(sql, args)
            while True:
                chunk = cur.fetchmany(20000)
                if not chunk:
                    break
                _fold(chunk, out, bucket_s)
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise HistoryError(f"telemetry history {path}: cannot read it: {e}") from e
    return out


def count_raw(path: Path, since: float, until: float, roles: Iterable[str] | None = None) -> int:
    """Raw rows with ``since <= time < until`` (for ``roles``; "" counts role-less rows)."""
    if until <= since:
        return 0
    sql = "SELECT count(*) FROM requests WHERE time >= ? AND time < ?"
    args: list[object] = [since, until]
    if roles is not None:
        rl = list(roles)
        nulls = " OR role IS NULL" if "" in rl else ""
        sql += f" AND (role IN ({', '.join('?' * len(rl))}){nulls})"
        args += rl
    try:
        conn = _reader(path)
        try:
            return int(conn.execute(sql, args).fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise HistoryError(f"telemetry history {path}: cannot read it: {e}") from e


def raw_complete_since(path: Path) -> float | None:
    """Raw rows at or after this time are all there (None: nothing was ever pruned)."""
    try:
        conn = _reader(path)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'raw_complete_since'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise HistoryError(f"telemetry history {path}: cannot read it: {e}") from e
    return row[0] if row else None


def raw_bounds(path: Path) -> tuple[float | None, float | None]:
    """Oldest and newest raw row times (None, None when there are none)."""
    try:
        conn = _reader(path)
        try:
            lo = conn.execute("SELECT time FROM requests ORDER BY time ASC LIMIT 1").fetchone()
            hi = conn.execute("SELECT time FROM requests ORDER BY time DESC LIMIT 1").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise HistoryError(f"telemetry history {path}: cannot read it: {e}") from e
    return (lo[0] if lo else None, hi[0] if hi else None)


# ------------------------------------------------------------------------------ the writer
class History:
    """One history file. ``open`` and ``close`` from the owner; ``put`` from the request path."""

    def __init__(
        self,
        path: Path,
        *,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        max_pending: int = 20_000,
        retention_days: float | None = None,
        rollup_days: float | None = None,
        prune_interval_s: float = 60.0,
        prune_step: int = 5000,
        clock: Callable[[], float] = _time.time,
    ):
        self.path = Path(path)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.retention_days = retention_days  # raw rows; None keeps them forever
        self.rollup_days = rollup_days
        self.prune_interval_s = prune_interval_s
        self.prune_step = prune_step  # rows deleted per transaction: a step never holds the writer long
        self.clock = clock
        self._pending: deque[RequestRecord] = deque()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self._open = False
        self._stopping = False
        self._rollups: dict[RollupKey, Accum] = {}  # writer thread only: stored rollups of recent keys
        self._next_prune = 0.0
        self.enqueued = 0  # written by the request path only
        self.processed = 0  # written by the writer thread only: records written or lost to an error
        self.written = 0
        self.pruned = 0  # raw rows deleted by retention
        self.prune_rounds = 0  # retention passes run to the end
        # dropped records, counted apart by the thread that drops them (no shared +=)
        self.dropped_unqueued = 0  # request path: backlog full, or history not open
        self.dropped_unwritten = 0  # writer: a failed batch, or put in the instant close began
        self.write_errors = 0
        self.last_error: str | None = None

    @property
    def dropped(self) -> int:
        return self.dropped_unqueued + self.dropped_unwritten

    @property
    def pending(self) -> int:
        return len(self._pending)

    def open(self) -> None:
        """Open the file and start the writer thread; blocking (call it off the event loop)."""
        if self._open:
            return
        conn = _prepare(self.path)
        self._stopping = False
        self._rollups = {}
        self._next_prune = 0.0
        self._thread = threading.Thread(target=self._run, args=(conn,), name="forge-telemetry-history", daemon=True)
        self._open = True
        self._thread.start()

    def put(self, rec: RequestRecord) -> None:
        """Hot path: O(1), never touches the disk."""
        pending = self._pending
        if not self._open or len(pending) >= self.max_pending:
            self.dropped_unqueued += 1
            return
        pending.append(rec)
        self.enqueued += 1
        if len(pending) == self.batch_size:
            self._wake.set()

    def flush(self, timeout: float = 30.0) -> bool:
        """Block until every record put before this call is written (or lost to an error)."""
        if not self._open:
            return True
        target = self.enqueued
        self._wake.set()
        with self._progress:
            return self._progress.wait_for(lambda: self.processed >= target or not self._open, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything pending, stop the writer, close the file. Idempotent."""
        thread = self._thread
        if thread is None:
            return
        self._open = False  # from here on ``put`` counts records as dropped
        self._stopping = True
        self._wake.set()
        thread.join(timeout)
        self._thread = None
        with self._progress:
            self._progress.notify_all()

    def _run(self, conn: sqlite3.Connection) -> None:
        more_to_prune = False
        try:
            while True:
                self._wake.wait(0 if more_to_prune else self.flush_interval_s)
                self._wake.clear()
                stopping = self._stopping  # read before draining: nothing is put after close begins
                self._drain(conn)
                if stopping:
                    self._drain(conn)
                    return
                more_to_prune = self._maybe_prune(conn)
        finally:
            self._open = False
            lost = len(self._pending)  # put in the instant close began, after the last drain
            self._pending.clear()
            self.dropped_unwritten += lost
            conn.close()

    def _drain(self, conn: sqlite3.Connection) -> None:
        pending = self._pending
        while pending:
            n = min(len(pending), self.batch_size)
            batch = [pending.popleft() for _ in range(n)]
            try:
                sums: dict[RollupKey, Accum] = {}
                conn.execute("BEGIN")
                # each row is built and folded into the rollups between inserts (each of which
                # releases the GIL): the event loop never waits behind a long pure-Python stretch
                conn.executemany(_INSERT, _rows_folding(batch, sums))
                stored = _add_rollups(conn, sums, self._rollups)
                conn.execute("COMMIT")
                if len(self._rollups) > 4096:  # bounded: old hours fall out, re-read if ever touched
                    self._rollups.clear()
                self._rollups.update(stored)
                self.written += n
            except (sqlite3.Error, TypeError, ValueError) as e:  # disk full, odd extra, ...: count, keep serving
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._rollups.clear()
                self.write_errors += 1
                self.dropped_unwritten += n
                self.last_error = f"telemetry history {self.path}: {e}"
            with self._progress:
                self.processed += n
                self._progress.notify_all()

    def _maybe_prune(self, conn: sqlite3.Connection) -> bool:
        """One budgeted retention step; True when expired rows remain (the loop comes back at once)."""
        now = self.clock()
        if now < self._next_prune or (self.retention_days is None and self.rollup_days is None):
            return False
        more = False
        try:
            if self.retention_days is not None:
                cutoff = now - self.retention_days * 86400.0
                cur = conn.execute(
                    "DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE time < ? ORDER BY time LIMIT ?)",
                    (cutoff, self.prune_step),
                )
                self.pruned += cur.rowcount
                more = cur.rowcount >= self.prune_step
                if cur.rowcount > 0:
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('raw_complete_since', ?) ON CONFLICT (key) "
                        "DO UPDATE SET value = max(value, excluded.value)",
                        (cutoff,),
                    )
            if not more and self.rollup_days is not None:
                conn.execute("DELETE FROM rollups WHERE hour < ?", (int((now - self.rollup_days * 86400.0) // 3600),))
                self._rollups.clear()
            # give freed pages back to the disk, a bounded number per step and the rest at the end;
            # executescript steps the pragma to its end (execute frees one page per call)
            conn.executescript(f"PRAGMA incremental_vacuum({2000 if more else 0});")
        except sqlite3.Error as e:
            self.last_error = f"telemetry history {self.path}: pruning: {e}"
            more = False
        if not more:
            self._next_prune = now + self.prune_interval_s
            with self._progress:
                self.prune_rounds += 1
                self._progress.notify_all()
        return more

    def prune_now(self, timeout: float = 60.0) -> bool:
        """Run retention to the end now and wait for it (tests and the benchmark; normally once a
        minute, a step at a time). Blocks: call it off the event loop."""
        if not self._open:
            return False
        target = self.prune_rounds + 1
        self._next_prune = 0.0
        self._wake.set()
        with self._progress:
            return self._progress.wait_for(lambda: self.prune_rounds >= target or not self._open, timeout)

    def read(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        role: str | None = None,
        limit: int = 1000,
        after_id: int | None = None,
        newest_first: bool = False,
    ) -> list[tuple[int, RequestRecord]]:
        """Rows written so far as (row id, record), by time; with ``after_id``, by row id (to page
        through a long range). A missing file reads as empty."""
        if not self.path.is_file():
            return []
        where: list[str] = []
        args: list[object] = []
        if since is not None:
            where.append("time >= ?")
            args.append(since)
        if until is not None:
            where.append("time < ?")
            args.append(until)
        if role is not None:
            where.append("role = ?")
            args.append(role)
        if after_id is not None:
            where.append("id > ?")
            args.append(after_id)
        order = "DESC" if newest_first else "ASC"
        by = f"id {order}" if after_id is not None else f"time {order}, id {order}"
        sql = f"{_SELECT}{' WHERE ' + ' AND '.join(where) if where else ''} ORDER BY {by} LIMIT ?"
        args.append(int(limit))
        try:
            conn = _reader(self.path)
            try:
                rows = conn.execute(sql, args).fetchall()
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise HistoryError(f"telemetry history {self.path}: cannot read it: {e}") from e
        return [(row[0], _record(row)) for row in rows]
