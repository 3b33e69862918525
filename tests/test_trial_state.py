"""Trial membership and baselines in the state overlay: they survive swaps, rollbacks and restarts;
`R` returns every trial role to its baseline; promote ends the trial for one role (audited)."""

from __future__ import annotations

from pathlib import Path

import pytest

from forge_tui.config import load_catalog
from forge_tui.state import ChangeRefused, RoutingState

DEMO = Path(__file__).resolve().parents[1] / "forge_tui" / "data" / "demo.yaml"


def state(tmp_path: Path) -> RoutingState:
    return RoutingState(load_catalog(DEMO), tmp_path / "state")


def test_catalog_trial_roles_start_with_their_previous_model_as_baseline(tmp_path: Path) -> None:
    st = state(tmp_path)
    dc = st.role("default-chat")
    assert dc is not None
    assert (dc.in_trial, dc.baseline, dc.trial_status) == (True, "gemma3-270m-a", "active")
    pc = st.role("priority-chat")
    assert pc is not None and (pc.in_trial, pc.baseline, pc.trial_status) == (False, None, None)
    assert st.trial_status() == "active"


def test_swap_then_rollback_keeps_the_role_in_the_trial_and_R_covers_it(tmp_path: Path) -> None:
    """The operator's sequence from issue 11 item 4: `s`, `r`, then `R`."""
    st = state(tmp_path)
    st.swap_role("default-chat", "gemma3-270m-a", actor="op")  # to the baseline: the role is rolled back
    dc = st.role("default-chat")
    assert dc is not None and (dc.in_trial, dc.baseline, dc.trial_status) == (True, "gemma3-270m-a", "rolled-back")
    st.rollback_role("default-chat", actor="op")  # back to the trial model
    dc = st.role("default-chat")
    assert dc is not None
    assert (dc.model, dc.in_trial, dc.baseline, dc.trial_status) == ("gemma3-270m-b", True, "gemma3-270m-a", "active")
    entries = st.rollback_trial(actor="op")
    assert sorted(e.target for e in entries) == ["default-chat", "prompt-enhance"]
    for name in ("default-chat", "prompt-enhance"):
        r = st.role(name)
        assert r is not None and (r.model, r.in_trial, r.trial_status) == ("gemma3-270m-a", True, "rolled-back")
    assert st.trial_status() == "rolled-back"
    with pytest.raises(ChangeRefused, match="already rolled back"):
        st.rollback_trial(actor="op")
    # survives a restart
    again = state(tmp_path)
    r = again.role("default-chat")
    assert r is not None and (r.baseline, r.trial_status) == ("gemma3-270m-a", "rolled-back")
    assert again.trial_status() == "rolled-back"


def test_rollback_and_reswap_keep_the_first_baseline(tmp_path: Path) -> None:
    st = state(tmp_path)
    st.rollback_role("default-chat", actor="op")
    st.swap_role("default-chat", "gemma3-270m-b", actor="op")
    dc = st.role("default-chat")
    assert dc is not None and (dc.model, dc.baseline, dc.trial_status) == ("gemma3-270m-b", "gemma3-270m-a", "active")
    assert st.audit_log()[-1].after["baseline"] == "gemma3-270m-a"


def test_a_swap_outside_a_trial_starts_one_with_the_old_model_as_baseline(tmp_path: Path) -> None:
    st = state(tmp_path)
    st.swap_role("priority-chat", "gemma3-270m-b", actor="op")
    pc = st.role("priority-chat")
    assert pc is not None and (pc.in_trial, pc.baseline, pc.trial_status) == (True, "gemma3-270m-a", "active")
    assert pc.trial_since is not None


def test_promote_ends_the_trial_for_one_role(tmp_path: Path) -> None:
    st = state(tmp_path)
    entry = st.promote_role("default-chat", actor="op")
    assert entry.action == "promote" and entry.target == "default-chat"
    assert entry.before["baseline"] == "gemma3-270m-a" and entry.after["baseline"] is None
    dc = st.role("default-chat")
    assert dc is not None
    assert (dc.model, dc.previous, dc.in_trial, dc.trial_status) == ("gemma3-270m-b", None, False, "promoted")
    with pytest.raises(ChangeRefused, match="no previous model"):
        st.rollback_role("default-chat", actor="op")  # the baseline is no longer its rollback target
    entries = st.rollback_trial(actor="op")
    assert [e.target for e in entries] == ["prompt-enhance"]
    with pytest.raises(ChangeRefused, match="not in a trial"):
        st.promote_role("default-chat", actor="op")
    assert state(tmp_path).role("default-chat").trial_status == "promoted"  # type: ignore[union-attr]


def test_promote_refuses_a_role_on_its_baseline(tmp_path: Path) -> None:
    st = state(tmp_path)
    st.rollback_role("prompt-enhance", actor="op")
    with pytest.raises(ChangeRefused, match="on its baseline"):
        st.promote_role("prompt-enhance", actor="op")
    assert st.role("prompt-enhance").trial_status == "rolled-back"  # type: ignore[union-attr]


def test_trial_criteria_are_validated_with_the_field_path(tmp_path: Path) -> None:
    from forge_tui.config import ConfigError

    text = DEMO.read_text().replace(
        "  rollback_by: 2030-01-01\n", "  rollback_by: 2030-01-01\n  criteria: {max_p95_ratio: 0.5}\n"
    )
    assert "max_p95_ratio" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_catalog(bad)
    assert "trial.criteria.max_p95_ratio" in str(err.value)
    good = tmp_path / "good.yaml"
    good.write_text(text.replace("max_p95_ratio: 0.5", "min_requests: 50, exclude_sources: [smoke]"))
    crit = load_catalog(good).trial.criteria  # type: ignore[union-attr]
    assert (crit.min_requests, crit.exclude_sources, crit.max_p95_ratio) == (50, ("smoke",), 1.25)
