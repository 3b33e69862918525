"""Shared fixtures: real llama.cpp servers (xllamacpp + the real Gemma 3 270M GGUF) on loopback."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from forge_tui.config.models import Launch
from forge_tui.launch import LlamaServerProcess, start_llama_server

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServerProcess]:
    """One real llama.cpp chat server for the whole session (do not kill it; use the factory)."""
    server = start_llama_server(
        Launch(gguf="@gemma3-270m", ctx_size=2048, parallel=4),
        name="session-chat",
        log_dir=tmp_path_factory.mktemp("llama-logs"),
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def llama_embed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServerProcess]:
    """A real llama.cpp server in embedding mode (mean pooling) with the same GGUF."""
    server = start_llama_server(
        Launch(gguf="@gemma3-270m", ctx_size=512, parallel=1, embedding=True),
        name="session-embed",
        log_dir=tmp_path_factory.mktemp("llama-logs"),
    )
    yield server
    server.stop()


@pytest.fixture
def llama_server_factory(tmp_path: Path) -> Iterator[Callable[..., LlamaServerProcess]]:
    """Start extra real llama.cpp servers a test may kill; all are stopped at teardown."""
    started: list[LlamaServerProcess] = []

    def make(wait: bool = True, port: int | None = None, **launch: object) -> LlamaServerProcess:
        opts: dict[str, object] = {"gguf": "@gemma3-270m", "ctx_size": 1024, "parallel": 2}
        opts.update(launch)
        s = start_llama_server(Launch(**opts), port=port, name=f"factory{len(started)}", log_dir=tmp_path, wait=wait)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def unknown_arch_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real GGUF (gguf-py) whose header declares an architecture llama.cpp does not know."""
    import gguf
    import numpy as np

    path = tmp_path_factory.mktemp("gguf") / "gemma9-tiny.gguf"
    w = gguf.GGUFWriter(str(path), "gemma9")
    w.add_tensor("x", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# -- CI: a real part that is missing must fail the run, not skip quietly --------------------------------------
_REAL_PARTS = ("sshd", "netns", "tmux", "llama")  # the markers of the real-part suites
_REAL_PART_WORDS = re.compile(
    r"sshd|openssh|ssh-keygen|namespace|netns|iproute|root|tmux|cmake|compiler|llama|xllamacpp|gguf|promtool|espeak|sox",
    re.IGNORECASE,
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With ``CI=true``, a skip of a real-part test (marked, or skipped for want of one) is a failure."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI", "").lower() not in ("true", "1") or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    marked = any(item.get_closest_marker(m) is not None for m in _REAL_PARTS)
    if marked or _REAL_PART_WORDS.search(reason):
        report.outcome = "failed"
        report.longrepr = f"CI=true: a real part is missing, so this test would only have skipped: {reason}"
