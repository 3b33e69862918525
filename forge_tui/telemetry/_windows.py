"""Rolling in-memory windows: per-role time buckets with bounded latency samples.

Memory is fixed whatever the request rate: at most ``window_s / bucket_s + 1`` buckets, at most
``max_keys`` roles and error targets per bucket, and at most ``samples`` latencies per role per
bucket (reservoir sampling beyond that, with a weight so busy buckets still count for what they
saw). Percentiles are computed on demand by the reader, never when a request is recorded.
"""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass, field

from .records import ErrorClass, RequestRecord

__all__ = ["UNROUTED", "OVERFLOW", "RoleBucket", "Bucket", "RollingWindows", "weighted_percentile"]

UNROUTED = "(unrouted)"  # requests that never resolved to a role (404, malformed body, ...)
OVERFLOW = "(other)"  # beyond max_keys distinct names in one bucket: memory stays bounded


@dataclass(slots=True)
class RoleBucket:
    count: int = 0
    errors: int = 0
    lat_seen: int = 0
    lat: array = field(default_factory=lambda: array("d"))
    ttft_seen: int = 0
    ttft: array = field(default_factory=lambda: array("d"))


@dataclass(slots=True)
class Bucket:
    index: int  # floor(time / bucket_s)
    roles: dict[str, RoleBucket] = field(default_factory=dict)
    errors_by_class: dict[str, int] = field(default_factory=dict)
    errors_by_target: dict[str, int] = field(default_factory=dict)
    leaks: int = 0


def _sample(samples: array, seen: int, value: float, cap: int, rnd: random.Random) -> None:
    """Algorithm R: after ``seen`` values, every one of them is in ``samples`` with equal chance."""
    if seen <= cap:
        samples.append(value)
    else:
        j = int(rnd.random() * seen)
        if j < cap:
            samples[j] = value


def weighted_percentile(pairs: list[tuple[float, float]], q: float) -> float | None:
    """Nearest-rank percentile of (value, weight) pairs: the smallest value whose cumulative
    weight reaches ``q`` of the total. With unit weights, p50 of 1..100 is 50 and p95 is 95."""
    if not pairs:
        return None
    pairs.sort()
    total = sum(w for _, w in pairs)
    target = q * total
    acc = 0.0
    for value, weight in pairs:
        acc += weight
        if acc >= target - 1e-9 * total:
            return value
    return pairs[-1][0]


class RollingWindows:
    """Time-bucketed counters and latency samples per role over the last ``window_s`` seconds.

    Not locked: the owner (``Telemetry``) serialises ``add`` against ``snapshot``.
    """

    def __init__(self, window_s: float, bucket_s: float, *, samples: int = 256, max_keys: int = 64, seed: int = 0):
        if bucket_s <= 0 or window_s < bucket_s:
            raise ValueError(f"need 0 < bucket_s <= window_s (got bucket_s={bucket_s}, window_s={window_s})")
        self.window_s = float(window_s)
        self.bucket_s = float(bucket_s)
        self.nbuckets = int(round(window_s / bucket_s))
        self.samples = samples
        self.max_keys = max_keys
        self._rnd = random.Random(seed)
        self._buckets: dict[int, Bucket] = {}
        self._head = -1  # newest bucket index seen
        self._cur: Bucket | None = None
        self.first_time: float | None = None

    def _bucket_for(self, t: float) -> Bucket | None:
        idx = int(t // self.bucket_s)
        cur = self._cur
        if cur is not None and cur.index == idx:
            return cur
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
        return b

    def add(self, rec: RequestRecord) -> None:
        if self.first_time is None or rec.time < self.first_time:
            self.first_time = rec.time
        b = self._bucket_for(rec.time)
        if b is None:
            return
        role = rec.role or UNROUTED
        rb = b.roles.get(role)
        if rb is None:
            if len(b.roles) >= self.max_keys:
                role = OVERFLOW
                rb = b.roles.get(role)
            if rb is None:
                rb = b.roles[role] = RoleBucket()
        rb.count += 1
        rb.lat_seen += 1
        _sample(rb.lat, rb.lat_seen, rec.latency_ms, self.samples, self._rnd)
        if rec.ttft_ms is not None:
            rb.ttft_seen += 1
            _sample(rb.ttft, rb.ttft_seen, rec.ttft_ms, self.samples, self._rnd)
        if rec.thinking_leaked:
            b.leaks += 1
        ec = rec.error_class
        if ec is not ErrorClass.OK:
            rb.errors += 1
            key = ec.value
            b.errors_by_class[key] = b.errors_by_class.get(key, 0) + 1
            target = f"{role}/{rec.model or '-'}"
            if target not in b.errors_by_target and len(b.errors_by_target) >= self.max_keys:
                target = OVERFLOW
            b.errors_by_target[target] = b.errors_by_target.get(target, 0) + 1

    def live_buckets(self, now: float) -> tuple[int, list[Bucket]]:
        """(index of the bucket holding ``now``, buckets inside the window ending there, oldest first)."""
        now_idx = int(now // self.bucket_s)
        lo = now_idx - self.nbuckets
        return now_idx, sorted((b for k, b in self._buckets.items() if lo < k <= now_idx), key=lambda b: b.index)

    def bucket_count(self) -> int:
        return len(self._buckets)

    def sample_count(self) -> int:
        return sum(len(rb.lat) + len(rb.ttft) for b in self._buckets.values() for rb in b.roles.values())
