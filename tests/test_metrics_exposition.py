"""``/metrics`` through ``prometheus_client``: the whole page of a real gateway (with label values that need
escaping) passes ``promtool check metrics`` (the real tool, Debian package ``prometheus``), parses back to
exact values, and a family added from outside the gateway is one line."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator

import httpx
import pytest

from forge_tui.telemetry import Exposition, RequestRecord, Telemetry
from forge_tui.telemetry.records import ErrorClass
from tests.support.gateway_harness import Harness, make_catalog, running_gateway
from tests.support.recording_upstream import RecordingUpstream
from tests.test_telemetry import parse_prometheus, value

ODD = 'we"ird\\model\nname'


@pytest.fixture
async def gw() -> AsyncIterator[Harness]:
    up = await RecordingUpstream("a").start()
    cat = make_catalog(
        backends={"a": {"base_url": up.url}},
        models={"m": {"placements": [{"backend": "a"}]}},
        roles={"default-chat": {"model": "m"}},
    )
    try:
        async with running_gateway(cat) as h:
            yield h
    finally:
        await up.stop()


def _record(tel: Telemetry, model: str, **kw: object) -> None:
    tel.record(
        RequestRecord(
            request_id=f"r-{model}-{len(kw)}",
            time=1000.0,
            endpoint="chat",
            role="default-chat",
            model=model,
            host="local",
            backend="a",
            status=200,
            latency_ms=12.0,
            **kw,  # type: ignore[arg-type]
        )
    )


async def _page(h: Harness) -> str:
    async with httpx.AsyncClient(base_url=h.url) as c:
        r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=")
    return r.text


async def test_the_whole_page_passes_promtool(gw: Harness) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    await gw.client().chat.completions.create(model="default-chat", messages=[{"role": "user", "content": "hi"}])
    _record(gw.telemetry, ODD, stream=True, ttft_ms=5.0, tokens_in=3, tokens_out=4)
    _record(gw.telemetry, ODD, error_class=ErrorClass.UPSTREAM_ERROR, error="boom")
    text = await _page(gw)
    out = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (out.stdout + out.stderr).strip() == "", out.stdout + out.stderr  # no lint warnings either
    _, samples = parse_prometheus(text)
    assert value(samples, "forge_requests_total", model=ODD, error_class="upstream_error") == 1
    assert value(samples, "forge_ttft_seconds_count", model=ODD) == 1
    assert value(samples, "forge_backend_up", backend="a", host="local") == 1


async def test_a_family_is_one_line_and_read_on_each_scrape(gw: Harness) -> None:
    faults = {"a": 0}
    gw.gw.metrics.counter(
        "forge_test_faults_total",
        "Faults seen, by backend.",
        ("backend",),
        lambda: list(((b,), n) for b, n in faults.items()),
    )
    _, samples = parse_prometheus(await _page(gw))
    assert value(samples, "forge_test_faults_total", backend="a") == 0
    faults["a"] = 3
    _, samples = parse_prometheus(await _page(gw))
    assert value(samples, "forge_test_faults_total", backend="a") == 3
    with pytest.raises(ValueError, match="must end in _total"):
        Exposition().counter("forge_faults", "x", (), list)
