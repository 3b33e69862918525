"""SQLite request history: WAL, batched writes from one background thread, bounded backlog.

The request path only appends to a deque (``put``); a writer thread owns the write connection and
commits a batch every ``flush_interval_s`` or every ``batch_size`` records. If the disk falls
behind and ``max_pending`` records are waiting, new ones are counted as dropped instead of growing
memory or blocking a request. Reads use their own short-lived connection (WAL lets them run beside
the writer).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import deque
from pathlib import Path

from .records import ErrorClass, RequestRecord

__all__ = ["COLUMNS", "SCHEMA_VERSION", "History", "HistoryError"]

SCHEMA_VERSION = 1

# (column, SQL type) in RequestRecord field order; ``extra`` is stored as JSON text.
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
)
_NAMES = tuple(c for c, _ in COLUMNS)
_INSERT = f"INSERT INTO requests ({', '.join(_NAMES)}) VALUES ({', '.join('?' * len(_NAMES))})"
_SELECT = f"SELECT id, {', '.join(_NAMES)} FROM requests"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY, " + ", ".join(f"{c} {t}" for c, t in COLUMNS) + ")",
    "CREATE INDEX IF NOT EXISTS requests_time ON requests (time)",
    "CREATE INDEX IF NOT EXISTS requests_role_time ON requests (role, time)",
)


class HistoryError(Exception):
    """The history file cannot be used; the message names the path and says why."""


_EC_TEXT: dict[object, str] = {ec: ec.value for ec in ErrorClass}
# ``extra`` holds a handful of distinct small dicts (e.g. {"thinking": "policy:off"}): their JSON
# is kept, keyed by their items, so the writer thread does not re-encode the same text per row.
_EXTRA_JSON: dict[tuple, str] = {}
_EXTRA_JSON_MAX = 256


def _extra_json(extra: dict) -> str | None:
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


def _row(r: RequestRecord) -> tuple:
    ec = r.error_class
    ec_text = _EC_TEXT.get(ec)
    if ec_text is None:
        ec_text = ec.value if isinstance(ec, ErrorClass) else str(ec)
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
    )


def _record(row: tuple) -> RequestRecord:
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
    )


def _prepare(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) and check the schema; raises HistoryError naming the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HistoryError(f"telemetry history {path}: cannot create its directory: {e}") from e
    if path.exists() and not path.is_file():
        raise HistoryError(f"telemetry history {path}: not a regular file")
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
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise HistoryError(f"telemetry history {path}: could not switch to WAL (journal_mode={mode})")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across crashes of forge
        conn.execute("BEGIN IMMEDIATE")  # proves we can write now rather than at the first batch
        for stmt in _SCHEMA:
            conn.execute(stmt)
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version")]
        if not versions:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        elif versions != [SCHEMA_VERSION]:
            raise HistoryError(
                f"telemetry history {path}: schema version {versions} but this forge-tui reads "
                f"version {SCHEMA_VERSION}; move the file aside or upgrade forge-tui"
            )
        conn.execute("COMMIT")
        return conn
    except HistoryError:
        if conn is not None:
            conn.close()
        raise
    except sqlite3.Error as e:
        if conn is not None:
            conn.close()
        raise HistoryError(f"telemetry history {path}: cannot use it as an SQLite database: {e}") from e


class History:
    """One history file. ``open`` and ``close`` from the owner; ``put`` from the request path."""

    def __init__(self, path: Path, *, batch_size: int = 500, flush_interval_s: float = 0.5, max_pending: int = 20_000):
        self.path = Path(path)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self._pending: deque[RequestRecord] = deque()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._thread: threading.Thread | None = None
        self._open = False
        self._stopping = False
        self.enqueued = 0  # written by the request path only
        self.processed = 0  # written by the writer thread only: records written or lost to an error
        self.written = 0
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
        try:
            while True:
                self._wake.wait(self.flush_interval_s)
                self._wake.clear()
                stopping = self._stopping  # read before draining: nothing is put after close begins
                self._drain(conn)
                if stopping:
                    self._drain(conn)
                    return
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
                conn.execute("BEGIN")
                # rows built one at a time between inserts (each of which releases the GIL): the
                # event loop never waits behind a long pure-Python stretch of this thread
                conn.executemany(_INSERT, map(_row, batch))
                conn.execute("COMMIT")
                self.written += n
            except (sqlite3.Error, TypeError, ValueError) as e:  # disk full, odd extra, ...: count, keep serving
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self.write_errors += 1
                self.dropped_unwritten += n
                self.last_error = f"telemetry history {self.path}: {e}"
            with self._progress:
                self.processed += n
                self._progress.notify_all()

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
            conn = sqlite3.connect(self.path, check_same_thread=False)
            try:
                conn.execute("PRAGMA busy_timeout = 5000")
                rows = conn.execute(sql, args).fetchall()
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise HistoryError(f"telemetry history {self.path}: cannot read it: {e}") from e
        return [(row[0], _record(row)) for row in rows]
