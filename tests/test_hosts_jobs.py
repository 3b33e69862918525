"""Rebuild and verify jobs end to end: a real sshd (the "remote" is this machine), a real git
origin and CMake build of a small C tree standing in for llama.cpp (tests/support/fake_llama_build.py
says what it imitates; the real build is too long for CI; the commands are the ones the job derives
for a cpu backend), the real gateway (forge's Runtime) in front of a real llama.cpp server
(xllamacpp + Gemma 3 270M) for the smoke steps, and the real llama.cpp loader to confirm that a
GGUF the verify job rejects is one llama.cpp cannot load."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from forge_tui.config.models import Catalog
from forge_tui.hosts.rebuild import JobTimeouts
from forge_tui.hosts.service import HostsService
from forge_tui.operator.service import OperatorService
from forge_tui.runtime import Runtime
from tests.support.fake_llama_build import FakeLlamaRepo, lab_catalog_data, make_repo
from tests.support.gguf_files import lab_models_dir
from tests.support.sshd import Sshd, sshd_available, start_sshd

pytestmark = [pytest.mark.sshd, pytest.mark.llama]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    reason = sshd_available()
    if reason:
        pytest.skip(reason)
    if shutil.which("cmake") is None or shutil.which("cc") is None:
        pytest.skip("cmake and a C compiler are needed for the stand-in llama.cpp tree")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory: pytest.TempPathFactory, unknown_arch_gguf: Path) -> Path:
    return lab_models_dir(tmp_path_factory.mktemp("models"), unknown_arch_gguf)


@dataclass
class Lab:
    repo: FakeLlamaRepo
    catalog: Catalog
    runtime: Runtime
    svc: HostsService
    state_dir: Path
    restart_log: Path

    def binary_version(self) -> str:
        out = subprocess.run([str(self.repo.binary()), "--version"], capture_output=True, text=True)
        return out.stderr.splitlines()[0]

    def head(self) -> str:
        return subprocess.run(
            ["git", "-C", str(self.repo.source), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()

    def backups(self) -> list[Path]:
        return sorted(self.repo.source.glob("build.bak-*"))


def make_catalog(
    s: Sshd, repo: FakeLlamaRepo, models_dir: Path, llama_url: str, restart_log: Path, **kw: Any
) -> Catalog:
    return Catalog.model_validate(lab_catalog_data(s, repo, models_dir, llama_url, restart_log, **kw))


@pytest.fixture
async def lab_factory(sshd: Sshd, gguf_dir: Path, llama_server: Any, tmp_path: Path) -> AsyncIterator[Any]:
    made: list[Lab] = []

    async def make(**kw: Any) -> Lab:
        repo = make_repo(tmp_path / f"llama{len(made)}")
        restart_log = tmp_path / f"restarts{len(made)}.log"
        cat = make_catalog(sshd, repo, gguf_dir, llama_server.url, restart_log, **kw)
        state_dir = tmp_path / f"state{len(made)}"
        rt = Runtime(tmp_path / "forge.yaml", catalog=cat, state_dir=state_dir, port=0, with_hosts=False, history=False)
        await rt.start()
        svc = HostsService(
            cat, state_dir=state_dir, gateway_url=lambda: rt.url, state=rt.state, job_timeouts=JobTimeouts(smoke=120)
        )
        lab = Lab(repo, cat, rt, svc, state_dir, restart_log)
        made.append(lab)
        return lab

    yield make
    for lab in made:
        await lab.svc.close()
        await lab.runtime.stop()


async def run_job(svc: HostsService, kind: str, host: str = "box", timeout: float = 240) -> Any:
    info = svc.start_job(kind, host)
    assert info.state == "running" and info.steps_total > 0
    return await svc.wait_job(info.id, timeout)


def steps(svc: HostsService, job_id: str) -> dict[str, str]:
    return {str(s["name"]): str(s["state"]) for s in svc.job_steps(job_id)}


async def test_verify_then_rebuild_then_verify(lab_factory: Any) -> None:
    """The seed's first chapter: the build does not know gemma4; rebuild it; now it does."""
    lab: Lab = await lab_factory()
    v1 = lab.binary_version()

    first = await run_job(lab.svc, "verify")
    assert first.state == "failed", first
    assert first.error and first.error.startswith("step architectures failed")
    assert (
        "gemma4-chat (gemma4): llama_model_load: error loading model: error loading model architecture: "
        "unknown model architecture: 'gemma4'" in first.error
    )
    assert steps(lab.svc, first.id) == {
        "connect": "ok",
        "version": "ok",
        "architectures": "failed",
        "regression": "pending",
    }

    job = await run_job(lab.svc, "rebuild")
    log = "\n".join(lab.svc.job_log(job.id))
    assert job.state == "succeeded", (job, log[-3000:])
    assert steps(lab.svc, job.id) == {
        s: "ok"
        for s in [
            "connect",
            "backup",
            "update",
            "configure",
            "build",
            "version",
            "architectures",
            "regression",
            "restart",
            "smoke",
            "cleanup",
        ]
    }
    assert all(s["duration_s"] is not None for s in lab.svc.job_steps(job.id))
    assert lab.head() == lab.repo.commits["v2"]
    assert lab.binary_version() == f"version: 0.3.0-dev (build 2, commit {lab.repo.commits['v2'][:9]})" != v1
    assert len(lab.backups()) == 1
    # Output streamed from the real commands, and the derived commands are the real ones.
    assert "   $ cmake -S . -B build -DCMAKE_BUILD_TYPE=Release" in log
    assert "   $ cmake --build build --config Release -j" in log and "--target llama-server" in log
    assert "Built target llama-server" in log
    assert "gemma4-chat: gemma4: known" in log
    # The route answers through box with a good answer shape (the demo model under its own turns),
    # before the restart (the baseline) and after it.
    assert log.count("default-chat -> gemma3-chat: ok") >= 2, log
    assert "bad answer shape" not in log and "as poor as before" not in log
    restarted = lab.restart_log.read_text().splitlines()  # the restart command logs the binary it found
    assert restarted[0] == lab.binary_version() and restarted[1].startswith("built with ")

    again = await run_job(lab.svc, "verify")
    assert again.state == "succeeded", lab.svc.job_log(again.id)[-20:]


async def test_failed_build_restores_the_backup_and_restarts_the_old_build(lab_factory: Any) -> None:
    lab: Lab = await lab_factory(ref="broken")
    before = lab.binary_version()
    job = await run_job(lab.svc, "rebuild")
    log = "\n".join(lab.svc.job_log(job.id))
    assert job.state == "failed"
    assert job.error and job.error.startswith("step build failed: build: exit 2: ")
    assert "server.c:76:1: error: unknown type name 'this'" in job.error and "\n" not in job.error
    assert "   |    76 | this is not C;" in log  # the compiler's output, streamed
    assert job.error.endswith("the old build was restored and restarted")
    st = steps(lab.svc, job.id)
    assert (st["build"], st["version"], st["restore"], st["restart-old"]) == ("failed", "pending", "ok", "ok")
    # The old tree and the old source commit are back, and the serving layer restarted on them.
    assert lab.binary_version() == before
    assert lab.head() == lab.repo.commits["v1"]
    assert lab.backups() == []
    assert lab.restart_log.read_text().splitlines()[-2] == before  # "version: ..." then "built with ..."
    rec = json.loads((lab.state_dir / "jobs" / "history.jsonl").read_text().splitlines()[-1])
    assert (rec["id"], rec["state"], rec["restored"]) == (job.id, "failed", True)


async def test_cancel_restores_and_kills_the_build(lab_factory: Any) -> None:
    tag = f"{37 + os.getpid() % 1000}.25"  # a sleep nobody else runs
    lab: Lab = await lab_factory(build=f"sleep {tag} && cmake --build build --target llama-server")
    before = lab.binary_version()
    info = lab.svc.start_job("rebuild", "box")
    deadline = time.monotonic() + 60
    while lab.svc.jobs()[-1].step != "build" and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert lab.svc.jobs()[-1].step == "build"
    await asyncio.sleep(0.5)
    with pytest.raises(ValueError, match="already has a running job"):
        lab.svc.start_job("verify", "box")
    done = await lab.svc.cancel_job(info.id)
    assert done.state == "cancelled"
    assert done.error and done.error.startswith("cancelled during step build")
    assert lab.binary_version() == before and lab.head() == lab.repo.commits["v1"]
    st = steps(lab.svc, info.id)
    assert (st["build"], st["restore"], st["restart-old"]) == ("cancelled", "ok", "ok")
    deadline = time.monotonic() + 10
    while _sleeping(tag) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not _sleeping(tag), "the remote build kept running after the cancel"


def _sleeping(tag: str) -> bool:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if f"sleep {tag}" in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    return True
            except OSError:
                continue
    return False


async def test_verify_catches_an_unknown_architecture_that_real_llama_cpp_cannot_load(
    lab_factory: Any, gguf_dir: Path
) -> None:
    lab: Lab = await lab_factory(
        extra_models={
            "gemma9-chat": {
                "family": "gemma3",
                "architecture": "gemma9",
                "gguf": str(gguf_dir / "gemma9-tiny.gguf"),
                "capabilities": ["chat"],
                "memory_gb": 0.1,
                "state": "on-demand",
                "placements": [{"backend": "box-llama"}],
            }
        }
    )
    job = await run_job(lab.svc, "verify")
    assert job.state == "failed" and job.error
    assert (
        "gemma9-chat (gemma9): llama_model_load: error loading model: error loading model architecture: "
        "unknown model architecture: 'gemma9'" in job.error
    )
    # The same file, given to the real llama.cpp loader (xllamacpp, in a child process).
    from forge_tui.launch import check_gguf_loads

    real = await asyncio.to_thread(check_gguf_loads, gguf_dir / "gemma9-tiny.gguf", 60.0)
    assert not real.ok and real.error and "unknown model architecture: 'gemma9'" in real.error


async def test_preflight_blocks_the_swap_to_an_unloadable_model(lab_factory: Any, gguf_dir: Path) -> None:
    lab: Lab = await lab_factory(
        extra_models={
            "gemma9-chat": {
                "family": "gemma3",
                "architecture": "gemma9",
                "gguf": str(gguf_dir / "gemma9-tiny.gguf"),
                "capabilities": ["chat"],
                "memory_gb": 0.1,
                "state": "on-demand",
                "placements": [{"backend": "box-llama"}],
            },
            "mislabeled": {
                "family": "gemma3",
                "architecture": "gemma4",
                "gguf": str(gguf_dir / "gemma9-tiny.gguf"),
                "capabilities": ["chat"],
                "placements": [{"backend": "box-llama"}],
            },
            "absent": {
                "family": "gemma3",
                "architecture": "gemma3",
                "gguf": str(gguf_dir / "not-downloaded.gguf"),
                "capabilities": ["chat"],
                "placements": [{"backend": "box-llama"}],
            },
            "huge": {
                "family": "gemma3",
                "architecture": "gemma3",
                "gguf": str(gguf_dir / "gemma-3-270m.gguf"),
                "capabilities": ["chat"],
                "memory_gb": 9.0,
                "placements": [{"backend": "box-llama"}],
            },
        }
    )
    state = lab.runtime.state

    ok = await lab.svc.preflight("default-chat", "gemma3-chat", state)
    assert [(c.name, c.outcome) for c in ok.checks] == [
        ("capabilities", "pass"),
        ("serves", "pass"),  # box-llama holds the file the catalog's symlink points at
        ("weights", "pass"),
        ("architecture", "pass"),
        ("memory", "pass"),
    ]
    size = f"{(gguf_dir / 'gemma-3-270m.gguf').stat().st_size / 1e6:.2f} MB"
    assert f"gemma-3-270m.gguf on box: {size}, GGUF v3, declares general.architecture='gemma3'" in ok.checks[2].evidence

    bad = await lab.svc.preflight("default-chat", "gemma9-chat", state)
    assert bad.blocked and bad.host == "box"
    arch = next(c for c in bad.checks if c.name == "architecture")
    assert arch.outcome == "fail" and "unknown model architecture: 'gemma9'" in arch.evidence
    assert arch.fix and "forge-tui job rebuild box" in arch.fix

    mis = await lab.svc.preflight("default-chat", "mislabeled", state)
    w = next(c for c in mis.checks if c.name == "weights")
    assert (
        w.outcome == "fail"
        and "declares general.architecture='gemma9'" in w.evidence
        and "the catalog says 'gemma4'" in w.evidence
    )

    gone = await lab.svc.preflight("default-chat", "absent", state)
    w = next(c for c in gone.checks if c.name == "weights")
    assert w.outcome == "fail" and "not-downloaded.gguf is not on box" in w.evidence

    big = await lab.svc.preflight("default-chat", "huge", state)
    m = next(c for c in big.checks if c.name == "memory")
    assert m.outcome == "fail" and "9.4 GB of the 8 GB budget" in m.evidence

    # The swap is refused on the preflight's evidence; forcing it works and is audited.
    refused = await OperatorService(state, hosts=lab.svc).swap("default-chat", "gemma9-chat", force=False, actor="test")
    assert not refused.ok and "unknown model architecture: 'gemma9'" in refused.message
    assert state.role("default-chat").model == "gemma3-chat"  # type: ignore[union-attr]
    forced = await OperatorService(state, hosts=lab.svc).swap("default-chat", "gemma9-chat", force=True, actor="test")
    assert forced.ok
    entry = state.audit_log()[-1]
    assert entry.action == "swap" and "forced past failed preflight" in entry.note and "gemma9" in entry.note


async def test_history_survives_a_restart_and_unknown_jobs_are_clear(lab_factory: Any) -> None:
    lab: Lab = await lab_factory()
    job = await run_job(lab.svc, "verify")
    lines = lab.svc.job_log(job.id)
    svc2 = HostsService(lab.catalog, state_dir=lab.state_dir)
    try:
        (past,) = [j for j in svc2.jobs() if j.id == job.id]
        assert (past.state, past.kind, past.host, past.steps_total) == (job.state, "verify", "box", job.steps_total)
        assert svc2.job_log(job.id) == lines
        assert svc2.job_log(job.id, 3) == lines[3:]
        with pytest.raises(KeyError):
            svc2.job_log("no-such-job")
        with pytest.raises(ValueError, match="unknown job kind 'deploy'"):
            svc2.start_job("deploy", "box")
        with pytest.raises(ValueError, match="unknown host 'nowhere'"):
            svc2.start_job("verify", "nowhere")
    finally:
        await svc2.close()


def test_a_job_interrupted_by_a_crash_is_recorded(tmp_path: Path) -> None:
    from forge_tui.hosts.jobs import JobManager

    d = tmp_path / "jobs"
    d.mkdir()
    (d / "rebuild-box-1.running.json").write_text(
        json.dumps(
            {
                "id": "rebuild-box-1",
                "kind": "rebuild",
                "host": "box",
                "state": "running",
                "started": 1.0,
                "finished": None,
                "error": None,
                "restored": None,
                "backup": "/src/build.bak-20261201-101010",
                "steps": [{"name": "backup", "state": "ok"}, {"name": "build", "state": "running"}],
            }
        )
    )
    mgr = JobManager(tmp_path)
    (info,) = mgr.jobs()
    assert (info.state, info.step) == ("failed", "build")
    assert info.error == (
        "interrupted: forge-tui stopped while the job ran; the build backup was left in place at "
        "/src/build.bak-20261201-101010"
    )
    assert not (d / "rebuild-box-1.running.json").exists()
    assert len(JobManager(tmp_path).jobs()) == 1  # recorded once
