"""Rolling in-memory windows: time buckets keyed by route (role, model, host), bounded samples.

One entry per distinct (role, model, host) route in a bucket, so a request costs one dict lookup
and one reservoir update however many views there are; the reader folds routes into the per-role,
per-model and per-host views (a route belongs to exactly one of each, so counts add up exactly and
percentiles merge the routes' samples, weighted).

Memory is fixed whatever the request rate: at most ``window_s / bucket_s`` buckets, at most
``2 * max_keys`` routes and ``max_keys`` error targets per bucket, and at most ``samples`` latencies
(and TTFTs) per route per bucket (reservoir sampling beyond that; the reader weighs a full reservoir
by what it stands for). Past ``max_keys`` routes in a bucket, a new route keeps its role but folds
its model and host into ``(other)``; past ``2 * max_keys`` everything folds, so a flood of odd model
or host names costs nothing more. Percentiles are computed by the reader (``_percentiles``),
never per request.
"""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass, field

from .records import ErrorClass, RequestRecord

__all__ = ["OVERFLOW", "UNROUTED", "Bucket", "RoleBucket", "RollingWindows", "Route"]

_OK = ErrorClass.OK
UNROUTED = "(unrouted)"  # requests that never resolved to a role / model / host (404, malformed body, ...)
OVERFLOW = "(other)"  # beyond the per-bucket key cap: memory stays bounded
_ALL_OTHER = (OVERFLOW, OVERFLOW, OVERFLOW)

Route = tuple[str, str, str]  # (role, model, host); each UNROUTED when the request never got that far


@dataclass(slots=True)
class RoleBucket:
    """Counters and samples of one route in one bucket."""

    count: int = 0
    errors: int = 0
    lat_seen: int = 0
    lat: array[float] = field(default_factory=lambda: array("d"))
    ttft_seen: int = 0
    ttft: array[float] = field(default_factory=lambda: array("d"))


@dataclass(slots=True)
class Bucket:
    index: int  # floor(time / bucket_s)
    routes: dict[Route, RoleBucket] = field(default_factory=dict)
    errors_by_class: dict[ErrorClass, int] = field(default_factory=dict)
    errors_by_target: dict[str, int] = field(default_factory=dict)


class RollingWindows:
    """Time-bucketed counters and latency samples per route over the last ``window_s`` seconds.

    Not locked: the owner (``Telemetry``) serialises ``add`` against ``snapshot``.
    """

    def __init__(self, window_s: float, bucket_s: float, *, samples: int = 256, max_keys: int = 64, seed: int = 0):
        if bucket_s <= 0 or window_s < bucket_s:
            raise ValueError(f"need 0 < bucket_s <= window_s (got bucket_s={bucket_s}, window_s={window_s})")
        self.window_s = float(window_s)
        self.bucket_s = float(bucket_s)
        self.nbuckets = round(window_s / bucket_s)
        self.samples = samples
        self.max_keys = max_keys
        self._random = random.Random(seed).random
        self._buckets: dict[int, Bucket] = {}
        self._head = -(2**62)  # newest bucket index seen
        self._cur: Bucket | None = None
        self._cur_lo = self._cur_hi = float("inf")  # time range of _cur: the common case skips the division
        self.first_time = float("inf")

    def _bucket_for(self, t: float) -> Bucket | None:
        idx = int(t // self.bucket_s)
        if idx > self._head:
            self._head = idx
            oldest = idx - self.nbuckets  # buckets at or below this index left the window
            for old in [k for k in self._buckets if k <= oldest]:
                del self._buckets[old]
        elif idx <= self._head - self.nbuckets:
            return None  # finished after its bucket left the window (a long stream): history has it
        b = self._buckets.get(idx)
        if b is None:
            b = self._buckets[idx] = Bucket(idx)
        if idx == self._head:
            self._cur = b
            self._cur_lo = idx * self.bucket_s
            self._cur_hi = self._cur_lo + self.bucket_s
        return b

    def add(self, rec: RequestRecord) -> None:
        # Hot path (every request): written flat, enum members and methods bound once.
        t = rec.time
        if t < self.first_time:
            self.first_time = t
        b = self._cur
        if b is None or not (self._cur_lo <= t < self._cur_hi):  # None: its range is empty anyway
            b = self._bucket_for(t)
            if b is None:
                return
        role = rec.role or UNROUTED
        key = (role, rec.model or UNROUTED, rec.host or UNROUTED)
        routes = b.routes
        rb = routes.get(key)
        if rb is None:
            n = len(routes)
            if n >= self.max_keys:  # fold the model and host first: the role view stays exact longest
                rb = routes.get(key := (role, OVERFLOW, OVERFLOW))
                if rb is None and n >= 2 * self.max_keys:
                    rb = routes.get(key := _ALL_OTHER)
            if rb is None:
                rb = routes[key] = RoleBucket()
        rb.count += 1
        cap = self.samples
        n = rb.lat_seen = rb.lat_seen + 1
        if n <= cap:
            rb.lat.append(rec.latency_ms)
        else:  # Algorithm R: every value seen so far is in the reservoir with equal chance
            j = int(self._random() * n)
            if j < cap:
                rb.lat[j] = rec.latency_ms
        ttft = rec.ttft_ms
        if ttft is not None:
            n = rb.ttft_seen = rb.ttft_seen + 1
            if n <= cap:
                rb.ttft.append(ttft)
            else:
                j = int(self._random() * n)
                if j < cap:
                    rb.ttft[j] = ttft
        ec = rec.error_class
        if ec is not _OK:
            rb.errors += 1
            by_class = b.errors_by_class
            by_class[ec] = by_class.get(ec, 0) + 1
            target = f"{role}/{rec.model or '-'}"
            by_target = b.errors_by_target
            if target not in by_target and len(by_target) >= self.max_keys:
                target = OVERFLOW
            by_target[target] = by_target.get(target, 0) + 1

    def live_buckets(self, now: float) -> tuple[int, list[Bucket]]:
        """(index of the bucket holding ``now``, buckets inside the window ending there, oldest first)."""
        now_idx = int(now // self.bucket_s)
        lo = now_idx - self.nbuckets
        return now_idx, sorted((b for k, b in self._buckets.items() if lo < k <= now_idx), key=lambda b: b.index)

    def bucket_count(self) -> int:
        return len(self._buckets)

    def sample_count(self) -> int:
        return sum(len(rb.lat) + len(rb.ttft) for b in self._buckets.values() for rb in b.routes.values())

    def route_count(self) -> int:
        return sum(len(b.routes) for b in self._buckets.values())
