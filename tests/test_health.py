"""The one backend-state model (forge_tui.health): the prober against a real llama.cpp server and
the llama-swap stand-in (tests/support/llama_swap_standin.py: llama-swap is a Go binary no registry
here carries; the model process behind it is a real llama.cpp server), host reachability, and
matching what a backend reports to the catalog."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from forge_tui.config.models import Catalog
from forge_tui.health import DOWN, READY, BackendProber, Reachability, answers_as, known_names, matches, models_held
from forge_tui.hosts.preflight import serves_check
from tests.support.gateway_harness import make_catalog
from tests.support.llama_swap_standin import LlamaSwapStandin, SwapModel


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cat(**backends: dict[str, Any]) -> Catalog:
    return make_catalog(
        backends=backends,
        models={
            "gemma": {"gguf": "@gemma3-270m", "placements": [{"backend": n} for n in backends]},
            "small": {"placements": [{"backend": n, "name": "gemma-small"} for n in backends]},
        },
        roles={"default-chat": {"model": "gemma"}},
    )


def test_reachability_takes_the_latest_unreachable_word_and_tells_listeners() -> None:
    r = Reachability()
    seen: list[tuple[str, bool | None]] = []
    r.subscribe(lambda h, ok: seen.append((h, ok)))
    assert r.get("a").reachable is None
    r.observe("a", "ssh", True)
    r.observe("a", "network", True)
    assert r.get("a").reachable is True
    r.observe("a", "network", False, "no answer from its backends (b: connect timed out after 1s)")
    a = r.get("a")
    assert a.reachable is False and a.detail and "connect timed out" in a.detail
    r.observe("a", "network", True)
    assert r.get("a").reachable is True
    r.observe("a", "ssh", False, "a: SSH refused")
    assert r.get("a").reachable is False and r.get("a").detail == "a: SSH refused"
    assert seen == [("a", True), ("a", False), ("a", True), ("a", False)]
    with pytest.raises(ValueError, match="unknown reachability source"):
        r.observe("a", "ping", True)


def test_matching_what_a_backend_reports_to_the_catalog() -> None:
    cat = _cat(a={"base_url": "http://127.0.0.1:1"})
    names = known_names(cat, "gemma", "a")
    assert "gemma-3-270m-q4_k_m.gguf" in names  # the bundled spec's file
    assert matches(["/root/.cache/x/gemma-3-270m-q4_k_m.gguf"], names)  # by file name, any directory
    assert not matches(["/models/qwen3-8b.gguf"], names)
    assert matches(["gemma-small"], known_names(cat, "small", "a"))  # llama-swap ids: the placement name
    assert models_held(cat, "a", ["/srv/gemma-3-270m-q4_k_m.gguf"]) == ["gemma"]
    assert answers_as(cat)["small"] == frozenset({"small", "gemma-small"})


@pytest.mark.llama
async def test_prober_reads_what_a_real_llama_server_holds_and_a_dead_one(llama_server: Any) -> None:
    cat = _cat(live={"base_url": llama_server.url}, dead={"base_url": f"http://127.0.0.1:{_dead_port()}"})
    prober = BackendProber(cat, interval_s=0.2)
    seen: list[str] = []
    prober.subscribe(lambda st: seen.append(st.name))
    try:
        got = await prober.probe_all()
    finally:
        await prober.stop()
    live, dead = got["live"], got["dead"]
    assert live.health is READY and live.reachable is True
    assert live.model_path == str(llama_server.gguf) and live.holds is not None and str(llama_server.gguf) in live.holds
    assert live.serves == live.holds  # a llama-server serves what it holds, whatever a request asks
    assert live.build_info == "b0-unknown" and live.slots_total == 4
    assert models_held(cat, "live", live.holds) == ["gemma"]
    assert dead.health is DOWN and dead.detail == "connection refused"
    assert dead.reachable is True  # a refusal is an answer: the host is there
    assert sorted(seen) == ["dead", "live"]
    assert prober.reach.get("local").reachable is True


@pytest.mark.llama
async def test_prober_reads_llama_swap_running_and_its_model_list_and_preflight_uses_them(
    llama_server: Any, tmp_path: Path
) -> None:
    cmd = [
        sys.executable,
        "-m",
        "forge_tui.launch",
        "serve",
        "--gguf",
        str(llama_server.gguf),
        "--port",
        "${PORT}",
        "--ctx",
        "512",
        "--parallel",
        "1",
    ]
    swap = await LlamaSwapStandin({"gemma-small": SwapModel(cmd=cmd)}).start()
    try:
        cat = make_catalog(
            backends={"swap": {"kind": "llama-swap", "base_url": swap.url}},
            models={
                "small": {"placements": [{"backend": "swap", "name": "gemma-small"}]},
                "absent": {"placements": [{"backend": "swap", "name": "qwen3-8b"}]},
            },
            roles={"default-chat": {"model": "small"}},
        )
        prober = BackendProber(cat, interval_s=0.2)
        try:
            st = await prober.probe("swap")
            assert st.health is READY and st.holds == frozenset() and st.serves == frozenset({"gemma-small"})
            assert st.swap_version and st.swap_version["version"] == "v250"
            ok = serves_check(cat, "small", "swap", st)
            assert ok.outcome == "pass" and ok.evidence == "swap lists 'gemma-small' (loaded on the first request)"
            bad = serves_check(cat, "absent", "swap", st)
            assert (
                bad.outcome == "fail"
                and "does not list 'qwen3-8b' in /v1/models (it lists gemma-small)" in bad.evidence
            )
            # Load it through llama-swap's own preload path: /running then says ready.
            async with httpx.AsyncClient(base_url=swap.url, timeout=120) as c:
                assert (await c.get("/upstream/gemma-small/health")).status_code == 200
            st = await prober.probe("swap")
            assert st.holds == frozenset({"gemma-small"}) and st.model_states == {"gemma-small": "ready"}
            assert serves_check(cat, "small", "swap", st).evidence == "swap lists 'gemma-small' (loaded now)"
        finally:
            await prober.stop()
    finally:
        await swap.stop()
