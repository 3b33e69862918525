"""Preflight fails closed and knows what a backend actually holds: real llama.cpp servers (the
session's ``llama_server``) on a ``local`` host, the real xllamacpp loader for the architecture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from forge_tui.hosts.service import HostsService
from forge_tui.operator.service import OperatorService
from forge_tui.state import RoutingState
from tests.support.gateway_harness import make_catalog, running_gateway

pytestmark = pytest.mark.llama

OTHER_GGUF = "/srv/models/qwen3-8b-q4_k_m.gguf"  # the catalog says so; the server holds gemma


def _catalog(url: str, gguf: str, *, launch: bool = True, serving_binary: str | None = None) -> Any:
    backend: dict[str, Any] = {"base_url": url}
    if launch:  # the console launches it: the local serving stack is xllamacpp
        backend["launch"] = {"gguf": "@gemma3-270m"}
    hosts = {"local": {"address": "127.0.0.1", "platform": "cpu", "memory_budget_gb": 8, "transport": "local"}}
    if serving_binary:
        hosts["local"]["serving_binary"] = serving_binary
    return make_catalog(
        backends={"a": backend},
        models={
            "gemma": {"gguf": gguf, "memory_gb": 0.4, "placements": [{"backend": "a"}]},
            "qwen": {"gguf": OTHER_GGUF, "memory_gb": 0.4, "placements": [{"backend": "a"}]},
        },
        roles={"default-chat": {"model": "gemma"}},
        hosts=hosts,
    )


def _outcomes(res: Any) -> dict[str, str]:
    return {c.name: c.outcome for c in res.checks}


async def test_what_the_llama_server_holds_passes_and_another_model_is_refused(
    llama_server: Any, tmp_path: Path
) -> None:
    cat = _catalog(llama_server.url, str(llama_server.gguf))
    state = RoutingState(cat, tmp_path / "state")
    svc = HostsService(cat, state_dir=None)
    try:
        ok = await svc.preflight("default-chat", "gemma", state)
        assert _outcomes(ok) == {
            "capabilities": "pass",
            "serves": "pass",
            "weights": "pass",
            "architecture": "pass",
            "memory": "pass",
        }, ok.checks
        serves = next(c for c in ok.checks if c.name == "serves")
        assert serves.evidence == f"a holds {llama_server.gguf}"

        bad = await svc.preflight("default-chat", "qwen", state)
        assert bad.blocked
        serves = next(c for c in bad.checks if c.name == "serves")
        assert serves.outcome == "fail"
        assert f"a is a llama-server holding {llama_server.gguf}, not qwen ({OTHER_GGUF})" in serves.evidence
        assert serves.fix and "place qwen on a llama-swap backend" in serves.fix

        ops = OperatorService(state, hosts=svc)
        refused = await ops.swap("default-chat", "qwen", force=False, actor="test")
        assert not refused.ok and "is a llama-server holding" in refused.message
        assert state.role("default-chat").model == "gemma"  # type: ignore[union-attr]
        forced = await ops.swap("default-chat", "qwen", force=True, actor="test")
        assert forced.ok
        entry = state.audit_log()[-1]
        assert entry.action == "swap" and "forced past failed preflight" in entry.note
        assert "serves: a is a llama-server holding" in entry.note
    finally:
        await svc.close()


async def test_the_snapshot_shows_what_the_backend_holds_not_every_placement(llama_server: Any) -> None:
    cat = _catalog(llama_server.url, str(llama_server.gguf))
    async with running_gateway(cat) as h:
        await h.gw.prober.probe_all()
        snap = h.operator.snapshot()
        loaded = {m.id: m.loaded for m in snap.models}
        assert loaded == {"gemma": True, "qwen": False}
        (backend,) = snap.hosts[0].backends
        assert backend.loaded_models == ["gemma"]


async def test_no_serving_binary_blocks_unless_forced_and_the_force_is_audited(
    llama_server: Any, tmp_path: Path
) -> None:
    """Not launched by the console and no serving_binary: nothing can be asked about the architecture."""
    cat = _catalog(llama_server.url, str(llama_server.gguf), launch=False)
    state = RoutingState(cat, tmp_path / "state")
    svc = HostsService(cat, state_dir=None)
    try:
        res = await svc.preflight("default-chat", "gemma", state)
        arch = next(c for c in res.checks if c.name == "architecture")
        assert arch.outcome == "unproven" and res.blocked
        assert "no serving binary is known for local" in arch.evidence
        assert arch.fix and "hosts.local.serving_binary" in arch.fix
        # Everything else passes: the block is the unproven check alone.
        assert {n for n, o in _outcomes(res).items() if o != "pass"} == {"architecture"}

        ops = OperatorService(state, hosts=svc)
        state.swap_role("default-chat", "qwen", actor="setup")  # so that swapping back to gemma is a change
        refused = await ops.swap("default-chat", "gemma", force=False, actor="test")
        assert not refused.ok and "no serving binary is known" in refused.message
        forced = await ops.swap("default-chat", "gemma", force=True, actor="test")
        assert forced.ok and "forced" in forced.message
        entry = state.audit_log()[-1]
        assert "forced past failed preflight" in entry.note and "architecture: no serving binary" in entry.note
    finally:
        await svc.close()


async def test_a_serving_binary_that_is_not_there_is_unproven_with_a_fix(llama_server: Any, tmp_path: Path) -> None:
    missing = tmp_path / "bin" / "llama-server"
    cat = _catalog(llama_server.url, str(llama_server.gguf), launch=False, serving_binary=str(missing))
    svc = HostsService(cat, state_dir=None)
    try:
        res = await svc.preflight("default-chat", "gemma", RoutingState(cat, None))
    finally:
        await svc.close()
    arch = next(c for c in res.checks if c.name == "architecture")
    assert arch.outcome == "unproven" and res.blocked
    assert f"no llama-server at {missing} on local" in arch.evidence
    assert "(from hosts.local.serving_binary)" in arch.evidence
    assert arch.fix and "forge-tui job rebuild local" in arch.fix
