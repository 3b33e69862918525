"""The gateway's telemetry: one ``record`` per request feeds live windows, Prometheus and history.

``record`` runs on the request path: a lock, a few dict and deque operations, an append to the
history backlog. Percentiles, series and the exposition text are built only when someone reads
(``info`` for the console, ``prometheus`` for ``/metrics``).
"""

from __future__ import annotations

import asyncio
import threading
import time as _time
from array import array
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import Metric

from ..schema import ErrorInfo, RequestInfo, RoleStats, SeriesPoint, TelemetryInfo
from ._history import History
from ._metrics import Exposition, PromMetrics, families
from ._percentiles import merged_percentiles
from ._windows import OVERFLOW, RollingWindows, Route
from .records import ErrorClass, RequestRecord

__all__ = ["Telemetry"]

_OK = ErrorClass.OK

Listener = Callable[[RequestRecord], None]


@dataclass(slots=True)
class _RouteCopy:
    """One (role, model, host) route in one bucket, read under the lock so the maths runs outside it."""

    index: int
    route: Route
    count: int
    errors: int
    lat_seen: int
    ttft_seen: int
    lat: array[float] | None  # raw samples, or None when the sorted cache is still current
    ttft: array[float] | None


@dataclass(slots=True)
class _Sorted:
    """Sorted samples of one (bucket, route), kept until that route sees another request in that bucket."""

    lat_seen: int
    ttft_seen: int
    lat: list[float]
    ttft: list[float]


def _request_info(r: RequestRecord) -> RequestInfo:
    return RequestInfo(
        time=r.time,
        request_id=r.request_id,
        endpoint=r.endpoint,
        role=r.role,
        model=r.model,
        host=r.host,
        backend=r.backend,
        stream=r.stream,
        status=r.status,
        error_class=r.error_class.value,
        latency_ms=r.latency_ms,
        ttft_ms=r.ttft_ms,
        tokens_in=r.tokens_in,
        tokens_out=r.tokens_out,
        fallback=r.fallback,
        thinking_injected=r.thinking_injected,
        thinking_leaked=r.thinking_leaked,
        asked=r.asked,
        seq=r.seq,
    )


def _error_info(r: RequestRecord) -> ErrorInfo:
    return ErrorInfo(
        time=r.time,
        request_id=r.request_id,
        error_class=r.error_class.value,
        status=r.status,
        role=r.role,
        model=r.model,
        host=r.host,
        backend=r.backend,
        message=r.error or "",
    )


def _parts(items: list[tuple[_RouteCopy, _Sorted]], ttft: bool = False) -> list[tuple[list[float], float]]:
    """Sorted samples per route, each weighted by how many requests one sample stands for
    (a full reservoir stands for more requests than it holds)."""
    if ttft:
        return [(s.ttft, c.ttft_seen / len(s.ttft)) for c, s in items if s.ttft]
    return [(s.lat, c.lat_seen / len(s.lat)) for c, s in items if s.lat]


def _view(
    pairs: list[tuple[_RouteCopy, _Sorted]],
    dim: int,
    first_idx: int,
    now_idx: int,
    bucket_s: float,
    span: float,
    max_keys: int | None,
) -> list[RoleStats]:
    """Fold routes into one view: dim 0 by role, 1 by model, 2 by host; sorted by name. Past
    ``max_keys`` names, the busiest ``max_keys - 1`` stay and the rest fold into ``(other)``."""
    groups: dict[str, list[tuple[_RouteCopy, _Sorted]]] = {}
    for pair in pairs:
        groups.setdefault(pair[0].route[dim], []).append(pair)
    if max_keys is not None and len(groups) > max_keys:
        folded = groups.pop(OVERFLOW, [])  # already folded per bucket
        ranked = sorted(groups, key=lambda k: (-sum(c.count for c, _ in groups[k]), k))
        kept = {k: groups[k] for k in ranked[: max_keys - 1]}
        for k in ranked[max_keys - 1 :]:
            folded.extend(groups[k])
        kept[OVERFLOW] = folded
        groups = kept
    out: list[RoleStats] = []
    for name in sorted(groups):
        items = groups[name]
        by_idx: dict[int, list[tuple[_RouteCopy, _Sorted]]] = {}
        for pair in items:
            by_idx.setdefault(pair[0].index, []).append(pair)
        series = []
        for idx in range(first_idx, now_idx + 1):
            here = by_idx.get(idx)
            if here is None:
                series.append(SeriesPoint(t=idx * bucket_s, count=0))
            else:
                p50, p95 = merged_percentiles(_parts(here), (0.50, 0.95))
                series.append(
                    SeriesPoint(t=idx * bucket_s, count=sum(c.count for c, _ in here), p50_ms=p50, p95_ms=p95)
                )
        count = sum(c.count for c, _ in items)
        p50, p95 = merged_percentiles(_parts(items), (0.50, 0.95))
        ttft_p50, ttft_p95 = merged_percentiles(_parts(items, ttft=True), (0.50, 0.95))
        out.append(
            RoleStats(
                role=name,
                count=count,
                errors=sum(c.errors for c, _ in items),
                p50_ms=p50,
                p95_ms=p95,
                ttft_p50_ms=ttft_p50,
                ttft_p95_ms=ttft_p95,
                rps=count / span,
                series=series,
            )
        )
    return out


class Telemetry:
    """Live windows, Prometheus counters and SQLite history for every request the gateway answers.

    ``total`` and ``thinking_leaks`` in ``info()`` count since start (like ``/metrics``); every
    other figure in ``info()`` covers the last ``window_s`` seconds before ``now``.
    Without a ``history_path`` nothing is persisted and ``history()`` reads as empty.
    """

    def __init__(
        self,
        history_path: Path | None,
        *,
        window_s: float = 600.0,
        bucket_s: float = 10.0,
        recent: int = 300,
        last_errors: int = 50,
        samples_per_bucket: int = 256,
        max_series: int = 2000,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        max_pending: int = 20_000,
        history_retention_days: float | None = None,  # raw rows; None keeps them (hourly rollups kept apart)
        history_rollup_days: float | None = None,  # hourly rollups; None keeps them
    ):
        self.history_path = Path(history_path) if history_path is not None else None
        self._lock = threading.Lock()
        self._windows = RollingWindows(window_s, bucket_s, samples=samples_per_bucket)
        self._metrics = PromMetrics(max_series=max_series)
        self._recent: deque[RequestRecord] = deque(maxlen=recent)
        self._last_errors: deque[RequestRecord] = deque(maxlen=last_errors)
        self._history = (
            History(
                self.history_path,
                batch_size=batch_size,
                flush_interval_s=flush_interval_s,
                max_pending=max_pending,
                retention_days=history_retention_days,
                rollup_days=history_rollup_days,
            )
            if self.history_path is not None
            else None
        )
        self._listeners: tuple[Listener, ...] = ()
        self._sorted: dict[tuple[int, Route], _Sorted] = {}  # info()'s cache; replaced whole, never mutated
        self.total = 0
        self.thinking_leaks = 0
        self.listener_errors = 0

    # -- request path -------------------------------------------------------------------------

    def record(self, rec: RequestRecord) -> None:
        """Account one finished request. O(1); never touches the disk; listeners run inline."""
        lock = self._lock
        lock.acquire()  # cheaper than ``with`` on this path
        try:
            self._ingest(rec)
            if self._history is not None:
                self._history.put(rec)
        finally:
            lock.release()
        for cb in self._listeners:
            try:
                cb(rec)
            except Exception:  # a broken listener (console) must never fail a request
                self.listener_errors += 1

    def _ingest(self, rec: RequestRecord) -> None:
        self.total += 1
        if rec.thinking_leaked:
            self.thinking_leaks += 1
        self._windows.add(rec)
        self._metrics.add(rec)
        self._recent.append(rec)
        if rec.error_class is not _OK:
            self._last_errors.append(rec)

    def subscribe(self, cb: Listener) -> Callable[[], None]:
        """Call ``cb`` with every new record (on the recording thread; keep it cheap). Returns unsubscribe."""
        with self._lock:
            self._listeners = (*self._listeners, cb)

        def unsubscribe() -> None:
            with self._lock:
                self._listeners = tuple(x for x in self._listeners if x is not cb)

        return unsubscribe

    # -- readers ------------------------------------------------------------------------------

    def info(self, inflight: int = 0, now: float | None = None) -> TelemetryInfo:
        """The console's view: windows per role, model and host with percentiles and series,
        errors, recent requests."""
        now = _time.time() if now is None else now
        w = self._windows
        cache = self._sorted
        with self._lock:
            now_idx, buckets = w.live_buckets(now)
            copies: list[_RouteCopy] = []
            by_class: dict[str, int] = {}
            by_target: dict[str, int] = {}
            for b in buckets:
                for route, rb in b.routes.items():
                    hit = cache.get((b.index, route))
                    fresh = hit is not None and hit.lat_seen == rb.lat_seen and hit.ttft_seen == rb.ttft_seen
                    copies.append(
                        _RouteCopy(
                            b.index,
                            route,
                            rb.count,
                            rb.errors,
                            rb.lat_seen,
                            rb.ttft_seen,
                            None if fresh else rb.lat[:],
                            None if fresh else rb.ttft[:],  # array slices: memcpy
                        )
                    )
                for ec, n in b.errors_by_class.items():
                    name = str(getattr(ec, "value", ec))
                    by_class[name] = by_class.get(name, 0) + n
                for k, n in b.errors_by_target.items():
                    by_target[k] = by_target.get(k, 0) + n
            recent = list(self._recent)
            errors = list(self._last_errors)
            total, leaks, first = self.total, self.thinking_leaks, min(w.first_time, now)

        if len(by_target) > w.max_keys:  # many names over the window: keep the worst, fold the rest
            ranked = sorted(by_target.items(), key=lambda kv: (-kv[1], kv[0]))
            by_target = dict(ranked[: w.max_keys - 1])
            by_target[OVERFLOW] = by_target.get(OVERFLOW, 0) + sum(n for _, n in ranked[w.max_keys - 1 :])
        first_idx = now_idx - w.nbuckets + 1
        window_start = first_idx * w.bucket_s
        span = now - max(window_start, first)
        span = max(span, 1.0)  # right after the first request, do not report a rate of thousands
        live: dict[tuple[int, Route], _Sorted] = {}
        pairs: list[tuple[_RouteCopy, _Sorted]] = []
        for c in copies:
            key = (c.index, c.route)
            srt = cache.get(key) if c.lat is None else None
            if srt is None:
                srt = _Sorted(c.lat_seen, c.ttft_seen, sorted(c.lat or ()), sorted(c.ttft or ()))
            live[key] = srt
            pairs.append((c, srt))
        self._sorted = live  # only buckets still in the window stay cached
        # roles are few by construction (unknown names are 404s); models and hosts fold past max_keys
        views = [
            _view(pairs, dim, first_idx, now_idx, w.bucket_s, span, None if dim == 0 else w.max_keys)
            for dim in range(3)
        ]
        roles, models, hosts = views
        window_count = sum(r.count for r in roles)
        return TelemetryInfo(
            window_s=w.nbuckets * w.bucket_s,
            total=total,
            rps=window_count / span,
            inflight=inflight,
            roles=roles,
            models=models,
            hosts=hosts,
            errors_by_class=by_class,
            errors_by_target=by_target,
            last_errors=[_error_info(r) for r in reversed(errors)],
            recent=[_request_info(r) for r in reversed(recent)],
            thinking_leaks=leaks,
        )

    def prometheus(self) -> str:
        """These families alone as Prometheus text; the gateway's ``/metrics`` adds its own."""
        page = Exposition()
        page.register(self)
        return page.render().decode()

    def collect(self) -> Iterator[Metric]:
        """The request families (a ``prometheus_client`` custom collector over the in-memory series)."""
        with self._lock:
            series = self._metrics.snapshot()
        h = self._history
        extra: list[tuple[str, str, str, float]] = [
            (
                "forge_history_dropped_total",
                "counter",
                "Request records not persisted to SQLite (backlog full, history closed, or a failed write).",
                h.dropped if h else 0,
            ),
            (
                "forge_history_written_total",
                "counter",
                "Request records written to the SQLite history.",
                h.written if h else 0,
            ),
            (
                "forge_history_write_errors_total",
                "counter",
                "Failed SQLite history batch writes.",
                h.write_errors if h else 0,
            ),
            (
                "forge_history_pending",
                "gauge",
                "Request records waiting for the history writer.",
                h.pending if h else 0,
            ),
        ]
        return families(series, extra)

    def memory_stats(self) -> dict[str, int]:
        """Sizes of every structure that could grow; all are capped (the benchmark and tests read these)."""
        with self._lock:
            return {
                "buckets": self._windows.bucket_count(),
                "samples": self._windows.sample_count(),
                "routes": self._windows.route_count(),
                "series": self._metrics.series_count(),
                "recent": len(self._recent),
                "last_errors": len(self._last_errors),
                "history_pending": self._history.pending if self._history else 0,
            }

    # -- history ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the history (WAL) and start its writer thread. Raises HistoryError naming the path."""
        if self._history is not None:
            await asyncio.to_thread(self._history.open)

    async def flush(self) -> None:
        """Wait until every record so far is in SQLite (tests, and before reading history back)."""
        if self._history is not None:
            await asyncio.to_thread(self._history.flush)

    async def close(self) -> None:
        """Write everything pending and close the history. Idempotent."""
        if self._history is not None:
            await asyncio.to_thread(self._history.close)

    def history(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        role: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
    ) -> list[RequestRecord]:
        """Records persisted so far with ``since <= time < until``, oldest first unless ``newest_first``."""
        if self._history is None:
            return []
        rows = self._history.read(since=since, until=until, role=role, limit=limit, newest_first=newest_first)
        return [r for _, r in rows]

    @property
    def history_error(self) -> str | None:
        """The last failed history write, for the console's warnings (None when all is well)."""
        return self._history.last_error if self._history else None
