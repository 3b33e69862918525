"""The state overlay: atomic, audited, validated; the operator's YAML is never touched."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from forge_tui.config import load_catalog
from forge_tui.operator.service import OperatorService
from forge_tui.state import ChangeRefused, RoutingState, StateError

REPO = Path(__file__).resolve().parent.parent
FORGE = REPO / "config" / "forge.yaml"


@pytest.fixture
def state(tmp_path: Path) -> RoutingState:
    return RoutingState(load_catalog(FORGE), tmp_path / "st")


def test_swap_persists_audits_and_survives_restart(state: RoutingState, tmp_path: Path) -> None:
    yaml_before = FORGE.read_bytes()
    state.swap_role("default-chat", "qwen3.6-chat-35b-a3b", actor="alice")
    assert state.role("default-chat").model == "qwen3.6-chat-35b-a3b"
    assert state.role("default-chat").previous == "gemma-4-chat-31b"
    data = json.loads((tmp_path / "st" / "state.json").read_text())
    assert data["roles"]["default-chat"]["model"] == "qwen3.6-chat-35b-a3b"
    audit = [json.loads(line) for line in (tmp_path / "st" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["actor"] == "alice" and audit[-1]["action"] == "swap"
    assert audit[-1]["before"]["model"] == "gemma-4-chat-31b"
    assert audit[-1]["after"]["model"] == "qwen3.6-chat-35b-a3b"
    again = RoutingState(load_catalog(FORGE), tmp_path / "st")
    assert again.role("default-chat").model == "qwen3.6-chat-35b-a3b"
    assert FORGE.read_bytes() == yaml_before  # the operator's file is never rewritten


def test_capability_mismatch_is_refused_and_changes_nothing(state: RoutingState, tmp_path: Path) -> None:
    with pytest.raises(ChangeRefused, match="missing capability vision"):
        state.swap_role("vision", "qwen3-8b", actor="a")
    assert state.role("vision").model == "gemma-4-multimodal-8b-e4b"
    assert not (tmp_path / "st" / "state.json").exists()
    assert not (tmp_path / "st" / "audit.jsonl").exists()


async def test_rollback_and_trial_rollback(state: RoutingState) -> None:
    ops = OperatorService(state)
    r = await ops.rollback("vision", actor="op")
    assert r.ok and state.role("vision").model == "qwen3-vl-30b-a3b"
    assert not (await ops.rollback("embed", actor="op")).ok  # no previous
    res = await ops.rollback_trial(actor="op")
    assert res.ok
    # vision left the trial when rolled back on its own; the other three trial roles moved back now
    assert state.role("default-chat").model == "qwen3.6-chat-35b-a3b"
    assert state.role("priority-chat").model == "qwen3-8b"
    assert state.role("prompt-enhance").model == "qwen3-4b"
    assert [a.action for a in state.audit_log()][-3:] == ["rollback-trial"] * 3
    assert not (await ops.rollback_trial(actor="op")).ok  # nothing left in the trial


async def test_deprecation_toggle_and_bad_date(state: RoutingState) -> None:
    ops = OperatorService(state)
    future = (dt.date.today() + dt.timedelta(days=7)).isoformat()
    assert (await ops.set_deprecated("gemma-4-chat-31b", True, sunset=future, actor="op")).ok
    mv = state.model("gemma-4-chat-31b")
    assert mv.deprecated and mv.sunset.isoformat() == future
    assert (await ops.set_deprecated("gemma-4-chat-31b", False, sunset=None, actor="op")).ok
    assert not state.model("gemma-4-chat-31b").deprecated
    bad = await ops.set_deprecated("gemma-4-chat-31b", True, sunset="next tuesday", actor="op")
    assert not bad.ok and "YYYY-MM-DD" in bad.message
    past = await ops.set_deprecated("gemma-4-chat-31b", True, sunset="2001-01-01", actor="op")
    assert not past.ok and "in the past" in past.message
    assert not state.model("gemma-4-chat-31b").deprecated


def test_corrupt_state_file_is_refused_not_overwritten(tmp_path: Path) -> None:
    d = tmp_path / "st"
    d.mkdir()
    (d / "state.json").write_text("{not json")
    with pytest.raises(StateError, match="cannot read state overlay"):
        RoutingState(load_catalog(FORGE), d)
    assert (d / "state.json").read_text() == "{not json"


def test_stale_overlay_entries_are_ignored_with_a_warning(tmp_path: Path) -> None:
    d = tmp_path / "st"
    d.mkdir()
    (d / "state.json").write_text(
        json.dumps({"version": 1, "roles": {"default-chat": {"model": "gone"}}, "models": {}})
    )
    s = RoutingState(load_catalog(FORGE), d)
    assert s.role("default-chat").model == "gemma-4-chat-31b"
    assert any("gone" in w for w in s.warnings)


def test_failed_write_leaves_memory_and_disk_unchanged(state: RoutingState, tmp_path: Path, monkeypatch) -> None:
    state.swap_role("default-chat", "qwen3-8b", actor="a")
    before = (tmp_path / "st" / "state.json").read_text()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        state.swap_role("default-chat", "gemma-4-chat-26b-a4b", actor="a")
    assert state.role("default-chat").model == "qwen3-8b"
    assert (tmp_path / "st" / "state.json").read_text() == before
    assert not [p for p in (tmp_path / "st").iterdir() if p.name.startswith(".state.json.")]  # no temp left
