"""Prometheus counters and histograms, kept as plain numbers and rendered on scrape.

One dict lookup per request: every counter of a (role, model, host, backend) target lives in one
``_Series``; the exposition aggregates them into each metric's own label set. The number of series
is capped so a flood of odd names cannot grow memory without bound.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

from .records import ErrorClass, RequestRecord

__all__ = ["DURATION_BUCKETS_S", "TTFT_BUCKETS_S", "PromMetrics", "escape_label", "render"]

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
    by_class: dict[ErrorClass, int] = field(default_factory=dict)
    dur_counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS_S) + 1))
    dur_sum: float = 0.0
    ttft_counts: list[int] = field(default_factory=lambda: [0] * (len(TTFT_BUCKETS_S) + 1))
    ttft_sum: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    thinking_injected: int = 0
    thinking_leaks: int = 0
    fallbacks: int = 0


def escape_label(value: str) -> str:
    """Label value escaping of the text format 0.0.4: backslash, double quote, line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    return ",".join(f'{n}="{escape_label(v)}"' for n, v in zip(names, values))


def _num(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


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
                agg.by_class[name] = agg.by_class.get(name, 0) + n  # type: ignore[index]
            _merge(agg, s)
        return list(out.items())


def _merge(agg: _Series, s: _Series) -> None:
    """Add everything but ``by_class`` of ``s`` into ``agg``."""
    agg.dur_counts = [a + b for a, b in zip(agg.dur_counts, s.dur_counts)]
    agg.dur_sum += s.dur_sum
    agg.ttft_counts = [a + b for a, b in zip(agg.ttft_counts, s.ttft_counts)]
    agg.ttft_sum += s.ttft_sum
    agg.tokens_in += s.tokens_in
    agg.tokens_out += s.tokens_out
    agg.thinking_injected += s.thinking_injected
    agg.thinking_leaks += s.thinking_leaks
    agg.fallbacks += s.fallbacks


def render(series: list[tuple[tuple[str, str, str, str], _Series]], extra: list[tuple[str, str, str, float]]) -> str:
    """Text exposition 0.0.4. ``extra``: (name, type, help, value) for unlabelled process-wide metrics."""
    out: list[str] = []

    def head(name: str, kind: str, help_: str) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")

    head("forge_requests_total", "counter", "Requests answered by the gateway, by route and error class.")
    for (role, model, host, backend), s in series:
        for ec, n in sorted(s.by_class.items()):
            lbl = _labels(("role", "model", "host", "backend", "error_class"), (role, model, host, backend, ec))
            out.append(f"forge_requests_total{{{lbl}}} {n}")

    # Histograms and route counters are labelled role/model/host: fold the backend away.
    rmh: dict[tuple[str, str, str], _Series] = {}
    for (role, model, host, _backend), s in series:
        agg = rmh.get((role, model, host))
        if agg is None:
            agg = rmh[(role, model, host)] = _Series()
        _merge(agg, s)
    names = ("role", "model", "host")

    def histogram(name: str, help_: str, bounds: tuple[float, ...], pick: str) -> None:
        head(name, "histogram", help_)
        for key, s in rmh.items():
            counts: list[int] = getattr(s, f"{pick}_counts")
            total = sum(counts)
            if pick == "ttft" and total == 0:
                continue  # no streamed request on this route yet
            lbl = _labels(names, key)
            acc = 0
            for bound, n in zip(bounds, counts):
                acc += n
                out.append(f'{name}_bucket{{{lbl},le="{_num(bound)}"}} {acc}')
            out.append(f'{name}_bucket{{{lbl},le="+Inf"}} {total}')
            out.append(f"{name}_sum{{{lbl}}} {_num(getattr(s, f'{pick}_sum'))}")
            out.append(f"{name}_count{{{lbl}}} {total}")

    histogram(
        "forge_request_duration_seconds",
        "Request latency as seen by the gateway, arrival to last byte.",
        DURATION_BUCKETS_S,
        "dur",
    )
    histogram("forge_ttft_seconds", "Time to first token of streamed requests.", TTFT_BUCKETS_S, "ttft")

    head("forge_tokens_total", "counter", "Tokens reported by the backends, prompt (in) and completion (out).")
    for key, s in rmh.items():
        for direction, n in (("in", s.tokens_in), ("out", s.tokens_out)):
            if n:
                out.append(f"forge_tokens_total{{{_labels(('direction',) + names, (direction,) + key)}}} {n}")
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
        head(name, "counter", help_)
        for key, s in rmh.items():
            n = getattr(s, attr)
            if n:
                out.append(f"{name}{{{_labels(names, key)}}} {n}")
    for name, kind, help_, value in extra:
        head(name, kind, help_)
        out.append(f"{name} {_num(value)}")
    return "\n".join(out) + "\n"
