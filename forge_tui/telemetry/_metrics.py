"""Prometheus metrics: plain numbers on the request path, families built by ``prometheus_client`` on scrape.

The request path (``PromMetrics.add``) does one dict lookup: every counter of a (role, model,
host, backend) target lives in one ``_Series``; the number of series is capped so a flood of odd
names cannot grow memory without bound. On scrape, ``families`` turns a snapshot of those series
into ``prometheus_client`` metric families (each aggregated to its own label set), and
``Exposition`` renders whatever families are registered with ``prometheus_client``'s own text
format writer (escaping, number formatting, ``# HELP`` / ``# TYPE``): nothing here writes the
format by hand.

Adding a family to ``/metrics`` is one line on the gateway's ``Exposition`` (``gw.metrics``); the
reader runs on each scrape, never on the request path, and returns (label values, value) pairs::

    gw.metrics.gauge("forge_host_up", "1 when the host answers its probe.", ("host",),
                     lambda: [((name, ), 1.0 if p.reachable else 0.0) for name, p in probes().items()])
    gw.metrics.counter("forge_backend_faults_total", "Faults by backend and kind.", ("backend", "kind"), read)
    gw.metrics.gauge("forge_inflight", "Requests in flight.", (), lambda: [((), gw.inflight)])

A counter's name ends in ``_total``. For anything richer (histograms), register an object whose
``collect()`` yields ``prometheus_client.core`` metric families: ``gw.metrics.register(obj)``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from .records import ErrorClass, RequestRecord

__all__ = [
    "CONTENT_TYPE",
    "DURATION_BUCKETS_S",
    "TTFT_BUCKETS_S",
    "Collector",
    "Exposition",
    "PromMetrics",
    "Samples",
    "families",
]

CONTENT_TYPE = CONTENT_TYPE_LATEST
# (label values, value) pairs, in the order of the family's label names.
Samples = Iterable[tuple[tuple[str, ...], float]]

# Local LLM requests range from a cached embed (ms) to a long generation (minutes).
DURATION_BUCKETS_S: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
TTFT_BUCKETS_S: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_OTHER = ("(other)", "(other)", "(other)", "(other)")


@dataclass(slots=True)
class _Series:
    by_class: dict[ErrorClass | str, int] = field(default_factory=dict)  # str: the class's name, in snapshots
    dur_counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS_S) + 1))
    dur_sum: float = 0.0
    ttft_counts: list[int] = field(default_factory=lambda: [0] * (len(TTFT_BUCKETS_S) + 1))
    ttft_sum: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    thinking_injected: int = 0
    thinking_leaks: int = 0
    fallbacks: int = 0


class PromMetrics:
    """Not locked: the owner (``Telemetry``) serialises ``add`` against ``render``."""

    def __init__(self, max_series: int = 2000):
        self.max_series = max_series
        self._series: dict[tuple[str | None, str | None, str | None, str | None], _Series] = {}

    def series_count(self) -> int:
        return len(self._series)

    def add(self, rec: RequestRecord) -> None:
        # Hot path: one dict lookup finds every counter of the route.
        key = (rec.role, rec.model, rec.host, rec.backend)
        s = self._series.get(key)
        if s is None:
            if len(self._series) >= self.max_series:
                key = _OTHER
                s = self._series.get(key)
            if s is None:
                s = self._series[key] = _Series()
        ec = rec.error_class
        by_class = s.by_class
        by_class[ec] = by_class.get(ec, 0) + 1
        d = rec.latency_ms * 0.001
        s.dur_counts[bisect_left(DURATION_BUCKETS_S, d)] += 1
        s.dur_sum += d
        ttft = rec.ttft_ms
        if ttft is not None:
            ttft *= 0.001
            s.ttft_counts[bisect_left(TTFT_BUCKETS_S, ttft)] += 1
            s.ttft_sum += ttft
        if rec.tokens_in:
            s.tokens_in += rec.tokens_in
        if rec.tokens_out:
            s.tokens_out += rec.tokens_out
        if rec.thinking_injected:
            s.thinking_injected += 1
        if rec.thinking_leaked:
            s.thinking_leaks += 1
        if rec.fallback:
            s.fallbacks += 1

    def snapshot(self) -> list[tuple[tuple[str, str, str, str], _Series]]:
        """Copy to render outside the owner's lock; a missing label becomes "" (merged if it collides)."""
        out: dict[tuple[str, str, str, str], _Series] = {}
        for k, s in self._series.items():
            key = (k[0] or "", k[1] or "", k[2] or "", k[3] or "")
            agg = out.get(key)
            if agg is None:
                agg = out[key] = _Series()
            for ec, n in s.by_class.items():
                name = str(getattr(ec, "value", ec))
                agg.by_class[name] = agg.by_class.get(name, 0) + n
            _merge(agg, s)
        return list(out.items())


def _merge(agg: _Series, s: _Series) -> None:
    """Add everything but ``by_class`` of ``s`` into ``agg``."""
    agg.dur_counts = [a + b for a, b in zip(agg.dur_counts, s.dur_counts, strict=True)]
    agg.dur_sum += s.dur_sum
    agg.ttft_counts = [a + b for a, b in zip(agg.ttft_counts, s.ttft_counts, strict=True)]
    agg.ttft_sum += s.ttft_sum
    agg.tokens_in += s.tokens_in
    agg.tokens_out += s.tokens_out
    agg.thinking_injected += s.thinking_injected
    agg.thinking_leaks += s.thinking_leaks
    agg.fallbacks += s.fallbacks


class Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class _Family:
    """One family whose samples are read at scrape time."""

    def __init__(
        self,
        kind: type[CounterMetricFamily | GaugeMetricFamily],
        name: str,
        help_: str,
        labels: tuple[str, ...],
        read: Callable[[], Samples],
    ) -> None:
        self.kind, self.name, self.help, self.labels, self.read = kind, name, help_, labels, read

    def collect(self) -> Iterator[Metric]:
        fam = self.kind(self.name, self.help, labels=self.labels)
        for values, v in self.read():
            fam.add_metric(list(values), v)
        yield fam


class Exposition:
    """The ``/metrics`` page: a ``prometheus_client`` registry of collectors read on each scrape."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry(auto_describe=False)

    def register(self, collector: Collector) -> None:
        self._registry.register(collector)

    def counter(self, name: str, help_: str, labels: tuple[str, ...], read: Callable[[], Samples]) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        self.register(_Family(CounterMetricFamily, name, help_, labels, read))

    def gauge(self, name: str, help_: str, labels: tuple[str, ...], read: Callable[[], Samples]) -> None:
        self.register(_Family(GaugeMetricFamily, name, help_, labels, read))

    def render(self) -> bytes:
        """The text exposition format (``CONTENT_TYPE``: what this prometheus_client writes)."""
        return generate_latest(self._registry)


_ROUTE = ("role", "model", "host")


def families(
    series: list[tuple[tuple[str, str, str, str], _Series]], extra: list[tuple[str, str, str, float]]
) -> Iterator[Metric]:
    """The request families from a ``PromMetrics.snapshot()``; ``extra``: (name, type, help, value) unlabelled."""
    req = CounterMetricFamily(
        "forge_requests_total",
        "Requests answered by the gateway, by route and error class.",
        labels=("role", "model", "host", "backend", "error_class"),
    )
    for (role, model, host, backend), s in series:
        for ec, n in sorted(s.by_class.items()):
            req.add_metric([role, model, host, backend, str(ec)], n)
    yield req

    # Histograms and route counters are labelled role/model/host: fold the backend away.
    rmh: dict[tuple[str, str, str], _Series] = {}
    for (role, model, host, _backend), s in series:
        agg = rmh.get((role, model, host))
        if agg is None:
            agg = rmh[(role, model, host)] = _Series()
        _merge(agg, s)

    def histogram(name: str, help_: str, bounds: tuple[float, ...], pick: str) -> HistogramMetricFamily:
        fam = HistogramMetricFamily(name, help_, labels=_ROUTE)
        for key, s in rmh.items():
            counts: list[int] = getattr(s, f"{pick}_counts")
            total = sum(counts)
            if pick == "ttft" and total == 0:
                continue  # no streamed request on this route yet
            acc, buckets = 0, []
            for bound, n in zip(bounds, counts, strict=False):
                acc += n
                buckets.append((repr(bound), acc))
            buckets.append(("+Inf", total))
            fam.add_metric(list(key), buckets, getattr(s, f"{pick}_sum"))
        return fam

    yield histogram(
        "forge_request_duration_seconds",
        "Request latency as seen by the gateway, arrival to last byte.",
        DURATION_BUCKETS_S,
        "dur",
    )
    yield histogram("forge_ttft_seconds", "Time to first token of streamed requests.", TTFT_BUCKETS_S, "ttft")

    tokens = CounterMetricFamily(
        "forge_tokens_total",
        "Tokens reported by the backends, prompt (in) and completion (out).",
        labels=("direction", *_ROUTE),
    )
    for key, s in rmh.items():
        for direction, n in (("in", s.tokens_in), ("out", s.tokens_out)):
            if n:
                tokens.add_metric([direction, *key], n)
    yield tokens
    for name, help_, attr in (
        (
            "forge_thinking_injected_total",
            "Requests where the gateway turned thinking off for the caller.",
            "thinking_injected",
        ),
        (
            "forge_thinking_leaks_total",
            "Responses that still opened with <think> while thinking was off.",
            "thinking_leaks",
        ),
        ("forge_fallbacks_total", "Requests served by a fallback model or a second placement.", "fallbacks"),
    ):
        fam = CounterMetricFamily(name, help_, labels=_ROUTE)
        for key, s in rmh.items():
            n = getattr(s, attr)
            if n:
                fam.add_metric(list(key), n)
        yield fam
    for name, kind, help_, value in extra:
        single = CounterMetricFamily(name, help_) if kind == "counter" else GaugeMetricFamily(name, help_)
        single.add_metric([], value)
        yield single
