"""Telemetry in memory: rolling windows, percentiles, error grouping, Prometheus text, bounds.

Every record carries an explicit time and every read passes ``now``, so nothing here depends on
the wall clock.
"""

from __future__ import annotations

import re
import threading

import pytest

from forge_tui.telemetry import ErrorClass, RequestRecord, Telemetry

CHAT = "/v1/chat/completions"


def rec(t: float, role: str | None = "default-chat", model: str | None = "gemma-4-26b", **kw: object) -> RequestRecord:
    kw.setdefault("request_id", f"r{t}")
    kw.setdefault("host", "furnace")
    kw.setdefault("backend", "furnace-swap")
    kw.setdefault("status", 200)
    return RequestRecord(time=t, endpoint=CHAT, role=role, model=model, **kw)  # type: ignore[arg-type]


# -- a tiny parser for the Prometheus text format 0.0.4 --------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")


def _parse_labels(s: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    i = 0
    while i < len(s):
        eq = s.index("=", i)
        name = s[i:eq]
        assert re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name), name
        assert s[eq + 1] == '"'
        j = eq + 2
        value = []
        while s[j] != '"':
            if s[j] == "\\":
                value.append({"\\": "\\", '"': '"', "n": "\n"}[s[j + 1]])
                j += 2
            else:
                value.append(s[j])
                j += 1
        labels[name] = "".join(value)
        i = j + 1
        if i < len(s):
            assert s[i] == ",", s[i:]
            i += 1
    return labels


def parse_prometheus(text: str) -> tuple[dict[str, str], list[tuple[str, dict[str, str], float]]]:
    """(family -> type, samples). Fails on any line the format does not allow."""
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: list[tuple[str, dict[str, str], float]] = []
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helps.add(line.split(" ")[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            assert name not in types, f"TYPE twice for {name}"
            types[name] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"bad sample line: {line!r}"
            name, _, body, value = m.groups()
            family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
            assert family in types, f"sample before its TYPE: {line}"
            samples.append((name, _parse_labels(body or ""), float(value)))
    assert set(types) <= helps
    return types, samples


def value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    hits = [v for n, lb, v in samples if n == name and all(lb.get(k) == x for k, x in labels.items())]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


# -- windows and percentiles ---------------------------------------------------------------------


def test_role_window_counts_percentiles_and_rate_exact() -> None:
    tel = Telemetry(None)
    for i in range(100):  # one request a second, latencies 1..100 ms
        tel.record(rec(1000 + i, latency_ms=float(i + 1), ttft_ms=float(100 - i) if i % 2 == 0 else None))
    info = tel.info(now=1100.0)
    assert info.total == 100
    assert info.rps == pytest.approx(1.0)
    [role] = info.roles
    assert (role.role, role.count, role.errors) == ("default-chat", 100, 0)
    assert role.p50_ms == 50.0 and role.p95_ms == 95.0  # nearest rank
    # ttft: 100, 98, ..., 2 (50 values) -> nearest-rank median is the 25th smallest = 50
    assert role.ttft_p50_ms == 50.0
    assert role.rps == pytest.approx(1.0)
    assert len(role.series) == 60
    assert [p.t for p in role.series[-11:]] == [1000.0 + 10 * k for k in range(11)]
    assert [p.count for p in role.series[-11:]] == [10] * 10 + [0]
    first = role.series[-11]
    assert (first.p50_ms, first.p95_ms) == (5.0, 10.0)
    assert role.series[-1].p50_ms is None


def test_roles_are_separate_and_unrouted_requests_get_their_own_row() -> None:
    tel = Telemetry(None)
    tel.record(rec(10, role="vision", latency_ms=300.0))
    tel.record(rec(11, role="vision", latency_ms=100.0))
    tel.record(rec(12, role="default-chat", latency_ms=7.0))
    tel.record(rec(13, role=None, model=None, status=404, error_class=ErrorClass.NOT_FOUND, error="unknown role 'x'"))
    stats = {r.role: r for r in tel.info(now=20).roles}
    assert set(stats) == {"vision", "default-chat", "(unrouted)"}
    assert (stats["vision"].count, stats["vision"].p50_ms, stats["vision"].p95_ms) == (2, 100.0, 300.0)
    assert stats["default-chat"].p50_ms == 7.0
    assert (stats["(unrouted)"].count, stats["(unrouted)"].errors) == (1, 1)


def test_errors_grouped_by_class_and_target_with_full_messages() -> None:
    tel = Telemetry(None, last_errors=3)
    msg = "unknown model architecture: 'gemma4'"
    tel.record(rec(1, model="gemma-4-26b", status=502, error_class=ErrorClass.UPSTREAM_ERROR, error=msg))
    tel.record(rec(2, model="gemma-4-26b", status=502, error_class=ErrorClass.UPSTREAM_ERROR, error=msg))
    tel.record(
        rec(
            3,
            role="vision",
            model="qwen2.5-vl",
            status=503,
            error_class=ErrorClass.UPSTREAM_STARTUP,
            error="startup timeout after 120 s",
        )
    )
    tel.record(rec(4, status=429, error_class=ErrorClass.SATURATED))
    tel.record(rec(5))  # ok: not an error anywhere
    tel.record(rec(6, role=None, model=None, status=400, error_class=ErrorClass.CALLER_ERROR, error="bad json"))
    info = tel.info(now=10)
    assert info.errors_by_class == {"upstream_error": 2, "upstream_startup": 1, "saturated": 1, "caller_error": 1}
    assert info.errors_by_target == {
        "default-chat/gemma-4-26b": 3,
        "vision/qwen2.5-vl": 1,
        "(unrouted)/-": 1,
    }
    # newest first, bounded to 3, messages verbatim
    assert [e.request_id for e in info.last_errors] == ["r6", "r4", "r3"]
    assert info.last_errors[2].message == "startup timeout after 120 s"
    assert info.last_errors[2].role == "vision" and info.last_errors[2].status == 503
    early = tel.info(now=2.5)  # errors still in the window include the first two
    assert early.errors_by_class["upstream_error"] == 2
    first = Telemetry(None)
    first.record(rec(1, status=502, error_class=ErrorClass.UPSTREAM_ERROR, error=msg))
    assert first.info(now=2).last_errors[0].message == msg


def test_recent_is_newest_first_and_bounded() -> None:
    tel = Telemetry(None, recent=5)
    for i in range(12):
        tel.record(rec(100 + i, request_id=f"q{i}", tokens_in=3, tokens_out=i, fallback=i == 11))
    recent = tel.info(now=120).recent
    assert [r.request_id for r in recent] == ["q11", "q10", "q9", "q8", "q7"]
    assert recent[0].fallback and recent[0].tokens_out == 11 and recent[0].endpoint == CHAT


def test_window_expiry_and_late_records() -> None:
    tel = Telemetry(None, window_s=60, bucket_s=10)
    tel.record(rec(1000, latency_ms=5.0))
    assert tel.info(now=1059.9).roles[0].count == 1
    assert tel.info(now=1060).roles == []  # its bucket [1000, 1010) left the window
    tel.record(rec(2000, latency_ms=1.0))
    tel.record(rec(1500, latency_ms=9.0))  # a stream that finished long after its bucket expired
    info = tel.info(now=2001)
    assert info.total == 3
    assert [(r.count, r.p50_ms) for r in info.roles] == [(1, 1.0)]


def test_thinking_leaks_counted_since_start() -> None:
    tel = Telemetry(None, window_s=60, bucket_s=10)
    tel.record(rec(1, thinking_injected=True, thinking_leaked=True))
    tel.record(rec(500, thinking_injected=True))
    assert tel.info(now=501).thinking_leaks == 1


def test_busy_bucket_percentiles_from_reservoir_stay_close() -> None:
    """Beyond the per-bucket sample cap the reservoir stands in for the bucket; weights keep a busy
    bucket from being outvoted by a quiet one."""
    tel = Telemetry(None, samples_per_bucket=64)
    for i in range(5000):
        tel.record(rec(1000 + i / 1000, latency_ms=float(i % 1000 + 1)))  # uniform 1..1000, one bucket
    tel.record(rec(1015, latency_ms=100000.0))  # one slow request in a quiet bucket
    role = tel.info(now=1020).roles[0]
    assert role.count == 5001
    assert 350 <= role.p50_ms <= 650
    assert 850 <= role.p95_ms <= 1000
    assert tel.memory_stats()["samples"] == 65


def test_inflight_passes_through() -> None:
    assert Telemetry(None).info(inflight=7, now=1).inflight == 7


# -- Prometheus ----------------------------------------------------------------------------------


def test_prometheus_exposition_parses_back_with_exact_values() -> None:
    tel = Telemetry(None)
    tel.record(rec(1, latency_ms=40.0, tokens_in=10, tokens_out=20, thinking_injected=True))
    tel.record(
        rec(
            2,
            latency_ms=2000.0,
            ttft_ms=30.0,
            stream=True,
            tokens_in=5,
            tokens_out=7,
            thinking_injected=True,
            thinking_leaked=True,
        )
    )
    tel.record(
        rec(
            3,
            latency_ms=10.0,
            status=502,
            error_class=ErrorClass.UPSTREAM_ERROR,
            error="unknown model architecture: 'gemma4'",
        )
    )
    tel.record(rec(4, model="qwen3-30b", backend="furnace-swap-2", latency_ms=1.0, fallback=True))
    types, samples = parse_prometheus(tel.prometheus())
    assert types["forge_requests_total"] == "counter"
    assert types["forge_request_duration_seconds"] == "histogram"
    assert types["forge_ttft_seconds"] == "histogram"
    for name in (
        "forge_tokens_total",
        "forge_thinking_injected_total",
        "forge_thinking_leaks_total",
        "forge_fallbacks_total",
        "forge_history_dropped_total",
    ):
        assert types[name] == "counter"
    g = {"role": "default-chat", "model": "gemma-4-26b", "host": "furnace"}
    assert value(samples, "forge_requests_total", **g, backend="furnace-swap", error_class="ok") == 2
    assert value(samples, "forge_requests_total", **g, error_class="upstream_error") == 1
    assert value(samples, "forge_requests_total", model="qwen3-30b", backend="furnace-swap-2") == 1
    d = "forge_request_duration_seconds"
    assert value(samples, f"{d}_count", **g) == 3
    assert value(samples, f"{d}_sum", **g) == pytest.approx(2.05)
    assert value(samples, f"{d}_bucket", **g, le="0.01") == 1
    assert value(samples, f"{d}_bucket", **g, le="0.05") == 2
    assert value(samples, f"{d}_bucket", **g, le="1.0") == 2
    assert value(samples, f"{d}_bucket", **g, le="2.5") == 3
    assert value(samples, f"{d}_bucket", **g, le="+Inf") == 3
    buckets = [v for n, lb, v in samples if n == f"{d}_bucket" and lb["model"] == "gemma-4-26b"]
    assert buckets == sorted(buckets)  # cumulative
    assert value(samples, "forge_ttft_seconds_count", **g) == 1
    assert value(samples, "forge_ttft_seconds_bucket", **g, le="0.025") == 0
    assert value(samples, "forge_ttft_seconds_bucket", **g, le="0.05") == 1
    assert value(samples, "forge_tokens_total", **g, direction="in") == 15
    assert value(samples, "forge_tokens_total", **g, direction="out") == 27
    assert value(samples, "forge_thinking_injected_total", **g) == 2
    assert value(samples, "forge_thinking_leaks_total", **g) == 1
    assert value(samples, "forge_fallbacks_total", model="qwen3-30b") == 1
    assert value(samples, "forge_history_dropped_total") == 0


def test_prometheus_escapes_label_values() -> None:
    tel = Telemetry(None)
    odd = 'we"ird\\model\nname'
    tel.record(rec(1, model=odd))
    text = tel.prometheus()
    assert 'model="we\\"ird\\\\model\\nname"' in text
    _, samples = parse_prometheus(text)
    assert value(samples, "forge_requests_total", model=odd, error_class="ok") == 1


# -- bounds, listeners, threads -----------------------------------------------------------------


def test_memory_stays_bounded_over_200k_records() -> None:
    tel = Telemetry(None, window_s=600, bucket_s=10, recent=300, last_errors=50, samples_per_bucket=32, max_series=50)
    roles = ["default-chat", "priority-chat", "vision", "prompt-enhance", "embed"]
    sizes = []
    for i in range(200_000):
        err = ErrorClass.UPSTREAM_ERROR if i % 7 == 0 else ErrorClass.OK
        tel.record(
            rec(
                i * 0.1,
                role=roles[i % 5],
                model=f"m{i % 997}",
                latency_ms=float(i % 300),
                ttft_ms=1.0,
                error_class=err,
                error="x" if i % 7 == 0 else None,
            )
        )
        if i in (99_999, 199_999):
            sizes.append(tel.memory_stats())
    for s in sizes:
        assert s["buckets"] <= 61
        assert s["samples"] <= 61 * 5 * 2 * 32
        assert s["series"] <= 51
        assert (s["recent"], s["last_errors"], s["history_pending"]) == (300, 50, 0)
    assert sizes[0] == sizes[1]  # flat over the second half
    info = tel.info(now=19_999.95)  # window = buckets [19_400, 20_000)
    assert info.total == 200_000
    assert sum(r.count for r in info.roles) == 6000  # 600 s at 10 requests/s
    assert len(info.errors_by_target) == 64  # the worst 63 targets and "(other)"
    assert sum(info.errors_by_target.values()) == sum(info.errors_by_class.values()) == 857


def test_listeners_get_records_and_cannot_break_recording() -> None:
    tel = Telemetry(None)
    seen: list[str] = []
    unsubscribe = tel.subscribe(lambda r: seen.append(r.request_id))

    def broken(_r: RequestRecord) -> None:
        raise RuntimeError("console crashed")

    tel.subscribe(broken)
    tel.record(rec(1, request_id="a"))
    unsubscribe()
    tel.record(rec(2, request_id="b"))
    assert seen == ["a"]
    assert tel.listener_errors == 2
    assert tel.info(now=3).total == 2


def test_reader_thread_while_recording() -> None:
    tel = Telemetry(None, window_s=60, bucket_s=1)
    failures: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        n = 0
        while not stop.is_set() and n < 10_000:
            n += 1
            try:
                tel.info(now=50)
                tel.prometheus()
            except BaseException as e:
                failures.append(e)
                return

    th = threading.Thread(target=reader)
    th.start()
    try:
        for i in range(30_000):
            tel.record(rec(i / 600, role=f"r{i % 9}", model=f"m{i % 13}", latency_ms=1.0))
    finally:
        stop.set()
        th.join(30)
    assert failures == []
    assert tel.info(now=50).total == 30_000


def test_merged_percentiles_weigh_full_reservoirs() -> None:
    from forge_tui.telemetry._percentiles import merged_percentiles, rank_percentile

    assert rank_percentile([], 0.5) is None
    assert rank_percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
    assert rank_percentile([7.0], 0.95) == 7.0
    # a quiet part (weight 1 each) and a reservoir standing for 3 requests per sample
    parts = [([1.0, 2.0, 3.0], 1.0), ([10.0], 3.0)]
    assert merged_percentiles(parts, (0.5, 0.95)) == [3.0, 10.0]
    assert merged_percentiles([([1.0, 2.0, 3.0], 1.0), ([10.0], 1.0)], (0.5, 0.75, 0.76)) == [2.0, 3.0, 10.0]
    assert merged_percentiles([([], 2.0)], (0.5,)) == [None]


def test_info_sees_requests_recorded_after_a_previous_read() -> None:
    """info() caches sorted samples per bucket; a new request in a cached bucket must show."""
    tel = Telemetry(None, window_s=60, bucket_s=10)
    for ms in (1.0, 2.0, 3.0):
        tel.record(rec(100, latency_ms=ms))
    tel.record(rec(115, latency_ms=4.0))
    assert tel.info(now=119).roles[0].p95_ms == 4.0
    tel.record(rec(101, latency_ms=50.0, ttft_ms=5.0))  # late, into the older (cached) bucket
    tel.record(rec(116, latency_ms=60.0))
    role = tel.info(now=119).roles[0]
    assert (role.count, role.p50_ms, role.p95_ms, role.ttft_p50_ms) == (6, 3.0, 60.0, 5.0)
    assert [p.p95_ms for p in role.series if p.count] == [50.0, 60.0]


def test_telemetry_never_imports_textual() -> None:
    import subprocess
    import sys

    code = "import sys, forge_tui.telemetry; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


# -- per-model and per-host windows ----------------------------------------------------------------


def test_model_and_host_windows_exact() -> None:
    """The same records seen by role, by model and by host: counts add up, percentiles per view."""
    tel = Telemetry(None, window_s=60, bucket_s=10)
    for i, ms in enumerate((10.0, 20.0, 30.0, 40.0)):  # bucket [100, 110)
        tel.record(
            rec(100 + i, role="default-chat", model="gemma-4-31b", host="furnace", latency_ms=ms, ttft_ms=float(i + 1))
        )
    tel.record(rec(105, role="priority-chat", model="gemma-4-31b", host="crucible", latency_ms=100.0, ttft_ms=50.0))
    tel.record(rec(115, role="priority-chat", model="gemma-4-31b", host="crucible", latency_ms=200.0, ttft_ms=60.0))
    tel.record(
        rec(
            116,
            role="vision",
            model="gemma-4-e4b",
            host="crucible",
            latency_ms=1000.0,
            status=502,
            error_class=ErrorClass.UPSTREAM_ERROR,
            error="unknown model architecture: 'gemma4'",
        )
    )
    tel.record(rec(117, role=None, model=None, host=None, status=404, error_class=ErrorClass.NOT_FOUND))
    info = tel.info(now=119)

    models = {m.role: m for m in info.models}
    assert list(models) == ["(unrouted)", "gemma-4-31b", "gemma-4-e4b"]
    big = models["gemma-4-31b"]
    assert (big.count, big.errors) == (6, 0)
    assert (big.p50_ms, big.p95_ms) == (30.0, 200.0)  # of 10 20 30 40 100 200
    assert (big.ttft_p50_ms, big.ttft_p95_ms) == (3.0, 60.0)  # of 1 2 3 4 50 60
    assert big.rps == pytest.approx(6 / 19)
    # its series merges both roles' samples within a bucket
    points = [(p.t, p.count, p.p50_ms, p.p95_ms) for p in big.series if p.count]
    assert points == [(100.0, 5, 30.0, 100.0), (110.0, 1, 200.0, 200.0)]
    assert (models["gemma-4-e4b"].count, models["gemma-4-e4b"].errors, models["gemma-4-e4b"].p50_ms) == (1, 1, 1000.0)
    assert models["gemma-4-e4b"].ttft_p95_ms is None
    assert (models["(unrouted)"].count, models["(unrouted)"].errors) == (1, 1)

    hosts = {h.role: h for h in info.hosts}
    assert list(hosts) == ["(unrouted)", "crucible", "furnace"]
    assert (hosts["furnace"].count, hosts["furnace"].p50_ms, hosts["furnace"].p95_ms) == (4, 20.0, 40.0)
    assert (hosts["furnace"].ttft_p50_ms, hosts["furnace"].ttft_p95_ms) == (2.0, 4.0)
    crucible = hosts["crucible"]
    assert (crucible.count, crucible.errors, crucible.p50_ms, crucible.p95_ms) == (3, 1, 200.0, 1000.0)
    assert (crucible.ttft_p50_ms, crucible.ttft_p95_ms) == (50.0, 60.0)
    assert len(crucible.series) == 6 and [p.count for p in crucible.series] == [0, 0, 0, 0, 1, 2]

    roles = {r.role: r for r in info.roles}  # the role view is unchanged by the new keying
    assert (roles["priority-chat"].count, roles["priority-chat"].p50_ms, roles["priority-chat"].p95_ms) == (
        2,
        100.0,
        200.0,
    )
    assert roles["default-chat"].ttft_p95_ms == 4.0
    for view in (info.roles, info.models, info.hosts):
        assert sum(s.count for s in view) == 8
        assert sum(s.errors for s in view) == 2
    assert info.errors_by_target == {"vision/gemma-4-e4b": 1, "(unrouted)/-": 1}


def test_model_view_weighs_each_routes_reservoir() -> None:
    """One model on two hosts in one bucket: a busy route's full reservoir stands for 5000 requests,
    so ten slow requests on the quiet route are 0.2 % of the model, not 13 % (unweighted)."""
    tel = Telemetry(None, samples_per_bucket=64)
    for i in range(5000):
        tel.record(rec(1000 + i / 1000, host="furnace", latency_ms=float(i % 1000 + 1)))
    for i in range(10):
        tel.record(rec(1005 + i / 10, host="crucible", latency_ms=100_000.0))
    [model] = tel.info(now=1009).models
    assert model.count == 5010
    assert 850 <= model.p95_ms <= 1000
    hosts = {h.role: h for h in tel.info(now=1009).hosts}
    assert hosts["crucible"].p50_ms == 100_000.0 and hosts["furnace"].count == 5000


def test_many_distinct_models_and_hosts_keep_memory_fixed() -> None:
    """Every request names a new model and host: routes per bucket stop at 2 * max_keys (64), samples
    and the info() views stay bounded, and every request is still counted in every view."""
    tel = Telemetry(None, window_s=60, bucket_s=10, samples_per_bucket=16)
    roles = ["default-chat", "vision", "embed"]
    sizes = []
    for i in range(60_000):  # 100 requests a second for 600 s: the window turns over ten times
        tel.record(rec(i / 100, role=roles[i % 3], model=f"m{i}", host=f"h{i}", latency_ms=float(i % 100), ttft_ms=2.0))
        if i in (29_999, 59_999):
            sizes.append(tel.memory_stats())
    for s in sizes:
        assert s["buckets"] <= 7
        assert s["routes"] <= 7 * 128
        assert s["samples"] <= 7 * 128 * 2 * 16
    assert sizes[0] == sizes[1]  # flat: the second half costs nothing more
    info = tel.info(now=599.995)  # window = buckets [540, 600), 6000 requests
    assert len(info.models) == len(info.hosts) == 64  # the busiest 63 and "(other)"
    for view in (info.roles, info.models, info.hosts):
        assert sum(s.count for s in view) == 6000
    assert {r.role: r.count for r in info.roles} == {"default-chat": 2000, "vision": 2000, "embed": 2000}
    other = next(m for m in info.models if m.role == "(other)")
    assert other.count == 6000 - 63 and other.p50_ms is not None
