"""The audit trail cannot miss a change: kill -9 at random moments during admin changes, then start again.

A child process makes changes in a loop (swap, rollback, deprecate) on a real ``RoutingState``; the
parent kills it with SIGKILL at a random moment, opens the state dir again (which reconciles) and
checks: every applied change has its audit entry, no temp file is left, the files are private, and an
entry appended after a torn line is its own line.
"""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from forge_tui.state import AuditEntry, RoutingState
from tests.support.gateway_harness import make_catalog

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import os, sys
sys.path.insert(0, {repo!r})
from forge_tui.state import ChangeRefused, RoutingState
from tests.test_state_crash import catalog
state = RoutingState(catalog(), {sdir!r})
mode = {mode!r}
if mode == "die-before-audit":
    # The worst moment, made certain: the state file is written, the audit append never happens.
    RoutingState._append = lambda self, entries: os._exit(9)
i = 0
while True:
    rv = state.role("default-chat")
    try:
        if i % 3 == 2:
            mv = state.model("b")
            state.set_deprecated("b", not mv.deprecated, actor="child")
        else:
            state.swap_role("default-chat", "b" if rv.model == "a" else "a", actor="child")
    except ChangeRefused:
        state.rollback_role("default-chat", actor="child")
    i += 1
    if i == 1:
        print("ready", flush=True)
"""


def catalog():  # type: ignore[no-untyped-def]
    return make_catalog(
        backends={"x": {"base_url": "http://127.0.0.1:9"}},
        models={"a": {"placements": [{"backend": "x"}]}, "b": {"placements": [{"backend": "x"}]}},
        roles={"default-chat": {"model": "a"}},
    )


def _child(sdir: Path, mode: str = "loop") -> subprocess.Popen[str]:
    code = CHILD.format(repo=str(REPO), sdir=str(sdir), mode=mode)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)


def _entries(sdir: Path) -> list[dict]:
    out = []
    for line in (sdir / "audit.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a torn line (the kill fell inside an append): its entry is re-appended whole
    return out


def _check_consistent(sdir: Path) -> RoutingState:
    state = RoutingState(catalog(), sdir)  # reconciles
    assert not list(sdir.glob(".state.json.*")), "temp files left after start"
    entries = _entries(sdir)
    ids = [e["id"] for e in entries if e.get("id")]
    assert len(ids) == len(set(ids)), "an entry was appended twice"
    role_changes = [e for e in entries if e["target"] == "default-chat"]
    want_model = role_changes[-1]["after"]["model"] if role_changes else "a"
    assert state.role("default-chat").model == want_model, "an applied role change has no audit entry"
    dep_changes = [e for e in entries if e["target"] == "b"]
    want_dep = dep_changes[-1]["after"]["deprecated"] if dep_changes else False
    assert state.model("b").deprecated == want_dep, "an applied deprecation has no audit entry"
    for f in ("state.json", "audit.jsonl"):
        if (sdir / f).exists():
            assert stat.S_IMODE((sdir / f).stat().st_mode) == 0o600, f
    assert stat.S_IMODE(sdir.stat().st_mode) == 0o700
    return state


def test_kill_between_state_write_and_audit_append_is_reconciled(tmp_path: Path) -> None:
    sdir = tmp_path / "state"
    p = _child(sdir, "die-before-audit")
    assert p.wait(timeout=60) == 9
    assert (sdir / "state.json").exists()
    assert not (sdir / "audit.jsonl").exists() or _entries(sdir) == []  # the change is applied, unlogged
    state = _check_consistent(sdir)
    entries = _entries(sdir)
    assert len(entries) == 1 and entries[0]["action"] == "swap" and entries[0]["after"]["model"] == "b"
    assert any("had no audit entry" in w for w in state.warnings)
    # A second start finds nothing left to add.
    RoutingState(catalog(), sdir)
    assert len(_entries(sdir)) == 1


def test_torn_last_line_is_repaired_before_appending(tmp_path: Path) -> None:
    sdir = tmp_path / "state"
    state = RoutingState(catalog(), sdir)
    state.swap_role("default-chat", "b", actor="t")
    with open(sdir / "audit.jsonl", "a") as fh:
        fh.write('{"time": "2026-12-01T00:00:00+00:00", "actor": "t", "act')  # a crash mid-append
    e = state.rollback_role("default-chat", actor="t")
    lines = (sdir / "audit.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["id"] == e.id  # its own line, not merged into the fragment
    assert [x.id for x in state.audit_log()][-1] == e.id


def test_stray_temp_files_are_cleaned_at_start_and_files_are_private(tmp_path: Path) -> None:
    sdir = tmp_path / "state"
    sdir.mkdir(mode=0o755)
    os.chmod(sdir, 0o755)
    for i in range(3):
        (sdir / f".state.json.orphan{i}").write_text("{")
    state = RoutingState(catalog(), sdir)
    assert not list(sdir.glob(".state.json.*"))
    state.swap_role("default-chat", "b", actor="t")
    assert stat.S_IMODE(sdir.stat().st_mode) == 0o700
    assert stat.S_IMODE((sdir / "state.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((sdir / "audit.jsonl").stat().st_mode) == 0o600


def test_sigkill_at_random_moments_never_loses_an_audit_entry(tmp_path: Path) -> None:
    rng = random.Random(9)
    sdir = tmp_path / "state"
    kills = 0
    for _ in range(25):  # bounded: 25 kills
        p = _child(sdir)
        assert p.stdout is not None
        line = p.stdout.readline()  # one change done: the loop is running
        assert line.strip() == "ready", line
        time.sleep(rng.uniform(0.0, 0.03))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        kills += 1
        _check_consistent(sdir)
    assert kills == 25
    entries = _entries(sdir)
    assert len(entries) >= 25  # every run made at least one change before its kill
    assert all(AuditEntry(**e).id for e in entries)
