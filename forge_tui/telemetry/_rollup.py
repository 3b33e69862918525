"""Hourly rollups of the request history: counts, error classes, fixed log-bucket latency histograms.

One rollup row per (hour, role, model, host, source, error class, loaded, cold, fallback): the writer adds
every batch to them in the same transaction as the raw rows, so reports over weeks read a few
thousand rows instead of millions, and stay right after the raw rows expire.

Latency and TTFT live in a fixed histogram: bucket ``i >= 1`` holds [B**(i-1), B**i) ms with
B = 1.1 (each bucket 10 % wide, so a percentile read back is within 5 % of the true value);
bucket 0 holds everything under 1 ms. The same bucketing is used for raw rows at report time,
so a figure does not change when its raw rows are pruned.
"""

from __future__ import annotations

import math
import sys
from array import array
from dataclasses import dataclass, field

__all__ = [
    "BASE",
    "NBUCKETS",
    "Accum",
    "RollupKey",
    "bucket",
    "bucket_value",
    "decode_hist",
    "encode_hist",
]

BASE = 1.1
NBUCKETS = 200  # 1.1**199 ms is ~5 days: nothing a request takes falls off the end
_LOG_BASE = math.log(BASE)
_BIG_ENDIAN = sys.byteorder == "big"
_U32 = next(t for t in "IL" if array(t).itemsize == 4)  # the stored format: uint32 pairs

# (hour, role, model, host, source, error_class, loaded, cold, fallback); text fields "" when unknown.
# ``hour`` is unix time // 3600 for stored rollups, or time // bucket_s when raw rows are folded at report time.
RollupKey = tuple[int, str, str, str, str, str, int, int, int]


def bucket(ms: float) -> int:
    """Histogram bucket of a duration in milliseconds."""
    if ms < 1.0:
        return 0
    i = int(math.log(ms) / _LOG_BASE) + 1
    return i if i < NBUCKETS else NBUCKETS - 1


def bucket_value(i: int) -> float:
    """The value a bucket stands for: its geometric middle (0.5 ms for bucket 0)."""
    if i <= 0:
        return 0.5
    return float(BASE ** (i - 0.5))


def encode_hist(h: dict[int, int]) -> bytes:
    """Little-endian uint32 pairs (bucket, count): a report decodes thousands of these per second."""
    flat = array(_U32)
    for k, v in sorted(h.items()):
        flat.append(k)
        flat.append(v)
    if _BIG_ENDIAN:
        flat.byteswap()
    return flat.tobytes()


def decode_hist(blob: bytes | None) -> dict[int, int]:
    if not blob:
        return {}
    flat = array(_U32)
    flat.frombytes(blob)
    if _BIG_ENDIAN:
        flat.byteswap()
    return dict(zip(flat[::2], flat[1::2], strict=True))


@dataclass(slots=True)
class Accum:
    """Sums for one rollup key; ``add`` is one record, ``merge`` another Accum."""

    n: int = 0
    fallback: int = 0
    spill: int = 0
    leaked: int = 0
    structured: int = 0  # json_object / json_schema asked and answered
    structured_ok: int = 0  # ... and the answer parsed
    tps_n: int = 0
    tps_sum: float = 0.0
    lat: dict[int, int] = field(default_factory=dict)
    ttft: dict[int, int] = field(default_factory=dict)

    def add(
        self,
        latency_ms: float,
        ttft_ms: float | None,
        tokens_per_s: float | None,
        fallback: bool,
        spill: bool,
        leaked: bool,
        structured: bool | None,
    ) -> None:
        self.n += 1
        if fallback:
            self.fallback += 1
        if spill:
            self.spill += 1
        if leaked:
            self.leaked += 1
        if structured is not None:
            self.structured += 1
            if structured:
                self.structured_ok += 1
        if tokens_per_s is not None and tokens_per_s > 0:
            self.tps_n += 1
            self.tps_sum += tokens_per_s
        b = bucket(latency_ms)
        self.lat[b] = self.lat.get(b, 0) + 1
        if ttft_ms is not None:
            b = bucket(ttft_ms)
            self.ttft[b] = self.ttft.get(b, 0) + 1

    def merge(self, o: Accum) -> None:
        self.n += o.n
        self.fallback += o.fallback
        self.spill += o.spill
        self.leaked += o.leaked
        self.structured += o.structured
        self.structured_ok += o.structured_ok
        self.tps_n += o.tps_n
        self.tps_sum += o.tps_sum
        for k, v in o.lat.items():
            self.lat[k] = self.lat.get(k, 0) + v
        for k, v in o.ttft.items():
            self.ttft[k] = self.ttft.get(k, 0) + v

    def copy(self) -> Accum:
        return Accum(
            self.n,
            self.fallback,
            self.spill,
            self.leaked,
            self.structured,
            self.structured_ok,
            self.tps_n,
            self.tps_sum,
            dict(self.lat),
            dict(self.ttft),
        )
