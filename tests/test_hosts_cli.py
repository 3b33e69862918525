"""``forge-tui preflight``, ``forge-tui job`` and ``forge-tui hosts`` through the real entry point
(``forge_tui.cli.main``), against the demo config (real llama.cpp via xllamacpp), a real sshd, and
the stand-in llama.cpp tree (tests/support/fake_llama_build.py)."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from forge_tui.cli import main
from tests.support.fake_llama_build import make_repo
from tests.support.sshd import Sshd, sshd_available, start_sshd

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    reason = sshd_available()
    if reason:
        pytest.skip(reason)
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def write_config(path: Path, hosts: dict[str, Any], models: dict[str, Any] | None = None) -> Path:
    first = next(iter(hosts))
    models = models or {"m": {"family": "f", "architecture": "gemma3", "placements": [{"backend": "b"}]}}
    path.write_text(
        yaml.safe_dump(
            {
                "gateway": {"port": 1},  # nothing listens there: smoke steps are skipped, and say so
                "hosts": hosts,
                "backends": {"b": {"host": first, "kind": "llama-server", "base_url": "http://127.0.0.1:1"}},
                "families": {"f": {}},
                "models": models,
                "roles": {"default-chat": {"model": next(iter(models))}},
            }
        )
    )
    return path


def ssh_host(s: Sshd, **extra: Any) -> dict[str, Any]:
    return {
        "address": s.address,
        "platform": "cpu",
        "memory_budget_gb": 8,
        "ssh": {
            "user": s.user,
            "port": s.port,
            "key_file": str(s.client_key),
            "known_hosts": str(s.known_hosts),
            "connect_timeout_s": 3,
            "command_timeout_s": 10,
        },
        **extra,
    }


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.llama
def test_preflight_on_the_demo_without_its_servers_is_blocked_and_says_how_to_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo's servers are not running here: what local-a serves cannot be told, so it blocks."""
    code = main(
        [
            "--state-dir",
            str(tmp_path),
            "preflight",
            "default-chat",
            "gemma3-270m-a",
            "--config",
            str(REPO / "forge_tui" / "data" / "demo.yaml"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    lines = out.splitlines()
    assert lines[0] == "preflight default-chat -> gemma3-270m-a on local"
    assert "  UNPROVEN  serves        cannot tell what local-a (llama-server) serves: it is down" in out
    assert "fix: start local-a at http://127.0.0.1:18431" in out
    # The architecture pass says why the loader's error line is the pass.
    arch = next(ln for ln in lines if ln.startswith("  PASS      architecture  xllamacpp"))
    assert "knows 'gemma3': the loader accepted the architecture and stopped later, as expected" in arch
    assert lines[-2] == "could not check 1: serves (a check that cannot be made blocks like a failure)"
    assert lines[-1].startswith("blocked: 1 could not be checked")


def test_preflight_blocked_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(
        tmp_path / "c.yaml",
        {
            "gone": {
                "address": "127.0.0.1",
                "platform": "cpu",
                "memory_budget_gb": 8,
                "ssh": {"port": closed_port(), "known_hosts": str(tmp_path / "kh"), "connect_timeout_s": 2},
            }
        },
        models={
            "m": {"family": "f", "architecture": "gemma3", "gguf": "/srv/m.gguf", "placements": [{"backend": "b"}]}
        },
    )
    (tmp_path / "kh").write_text("")
    code = main(["--state-dir", str(tmp_path / "st"), "preflight", "default-chat", "m", "--config", str(cfg)])
    out = capsys.readouterr().out
    assert code == 1
    assert "  UNPROVEN  weights       gone did not answer over SSH: gone: cannot reach [127.0.0.1]:" in out
    assert "  UNPROVEN  architecture  gone did not answer over SSH" in out
    assert "fix: check the host and its SSH settings (forge-tui hosts probe gone)" in out
    assert "  UNPROVEN  serves        cannot tell what b (llama-server) serves: it is down (connection refused)" in out
    assert out.splitlines()[-1].startswith("blocked: 3 could not be checked")


@pytest.mark.sshd
def test_hosts_probe_prints_a_table(sshd: Sshd, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(
        tmp_path / "c.yaml",
        {
            "box": ssh_host(sshd),
            "gone": {
                "address": "127.0.0.1",
                "platform": "cpu",
                "memory_budget_gb": 8,
                "ssh": {"port": closed_port(), "known_hosts": str(sshd.known_hosts), "connect_timeout_s": 2},
            },
        },
    )
    code = main(["hosts", "probe", "--config", str(cfg)])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1  # one host is down
    assert lines[0].split() == ["HOST", "REACH", "MEMORY", "SOURCE", "SERVING", "NOTE"]
    box = next(ln for ln in lines if ln.startswith("box "))
    assert box.split()[1] == "up" and "/proc/meminfo" in box
    gone = next(ln for ln in lines if ln.startswith("gone "))
    assert gone.split()[1] == "DOWN" and "cannot reach" in gone
    assert main(["hosts", "probe", "box", "--config", str(cfg)]) == 0
    assert main(["hosts", "probe", "nowhere", "--config", str(cfg)]) == 2


@pytest.mark.sshd
def test_job_verify_streams_and_exits_nonzero_on_an_unknown_architecture(
    sshd: Sshd, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if shutil.which("cmake") is None or shutil.which("cc") is None:
        pytest.skip("cmake and a C compiler are needed for the stand-in llama.cpp tree")
    from forge_tui.hosts.gguf import probe_gguf

    repo = make_repo(tmp_path / "llama")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "g4.gguf").write_bytes(probe_gguf("gemma4"))
    cfg = write_config(
        tmp_path / "c.yaml",
        {"box": ssh_host(sshd, build={"source_dir": str(repo.source)})},
        models={
            "g4": {
                "family": "f",
                "architecture": "gemma4",
                "gguf": str(tmp_path / "models" / "g4.gguf"),
                "placements": [{"backend": "b"}],
            }
        },
    )
    code = main(["--state-dir", str(tmp_path / "st"), "job", "verify", "box", "--config", str(cfg)])
    out = capsys.readouterr()
    assert code == 1
    assert "== architectures: FAILED" in out.out
    assert "unknown model architecture: 'gemma4'" in out.out
    assert "  failed    architectures" in out.out
    assert out.out.splitlines()[-1].startswith("job verify-box-") and ": failed: step architectures failed" in out.out
    assert "no gateway answers" in out.err
    assert main(["--state-dir", str(tmp_path / "st"), "job", "rebuild", "nowhere", "--config", str(cfg)]) == 2
    assert "unknown host 'nowhere'" in capsys.readouterr().err
