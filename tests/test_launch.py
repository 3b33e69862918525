"""The local llama.cpp launcher: real servers, real failures."""

from __future__ import annotations

import json
import urllib.request

import pytest

from forge_tui.launch import LaunchError, check_gguf_loads, resolve_gguf


def test_real_server_answers_chat(llama_server) -> None:
    req = urllib.request.Request(
        llama_server.url + "/v1/chat/completions",
        data=json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode(),
        headers={"content-type": "application/json"},
    )
    body = json.loads(urllib.request.urlopen(req, timeout=60).read())
    assert body["object"] == "chat.completion"
    assert body["usage"]["completion_tokens"] >= 1


def test_killed_server_is_gone(llama_server_factory) -> None:
    s = llama_server_factory()
    assert s.alive()
    s.kill()
    assert not s.alive()
    with pytest.raises(OSError):
        urllib.request.urlopen(s.url + "/health", timeout=2)


def test_unknown_architecture_is_reported_by_real_llama_cpp(unknown_arch_gguf) -> None:
    result = check_gguf_loads(unknown_arch_gguf)
    assert not result.ok
    assert "unknown model architecture: 'gemma9'" in (result.error or "")


def test_missing_gguf_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(LaunchError, match="GGUF not found"):
        resolve_gguf(str(tmp_path / "nope.gguf"))
