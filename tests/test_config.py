"""The catalog: the example configs validate; bad files fail with file, field path and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from forge_tui.config import ConfigError, load_catalog, parse_catalog
from forge_tui.config.models import Capability, ThinkingPolicy

REPO = Path(__file__).resolve().parent.parent


def test_story_homelab_config_is_valid() -> None:
    cat = load_catalog(REPO / "config" / "forge.yaml")
    assert set(cat.hosts) == {"furnace", "crucible", "anvil"}
    assert cat.hosts["furnace"].memory_budget_gb == 96
    assert cat.hosts["anvil"].platform.value == "apple"
    # the migration table of the story
    assert cat.roles["default-chat"].model == "gemma-4-chat-31b"
    assert cat.roles["default-chat"].previous == "qwen3.6-chat-35b-a3b"
    assert cat.roles["priority-chat"].model == "gemma-4-chat-26b-a4b"
    assert cat.roles["vision"].previous == "qwen3-vl-30b-a3b"
    assert cat.roles["prompt-enhance"].previous == "qwen3-4b"
    assert all(cat.models[m].deprecated and cat.models[m].sunset for m in ("qwen3-8b", "qwen3-4b"))
    assert cat.families["gemma4"].thinking is ThinkingPolicy.OFF_BY_DEFAULT
    assert cat.families["qwen3"].thinking is ThinkingPolicy.OFF_BY_DEFAULT
    kinds = {b.kind.value for b in cat.backends.values()}
    assert {"llama-swap", "openai-compatible", "audio-sidecar"} <= kinds


def test_demo_config_has_two_chat_models_and_launchable_backends() -> None:
    cat = load_catalog(REPO / "forge_tui" / "data" / "demo.yaml")
    chat = [m for m, v in cat.models.items() if Capability.CHAT in v.capabilities]
    assert len(chat) >= 2
    assert all(b.launch is not None for b in cat.backends.values())
    assert cat.hosts["local"].transport == "local"


MINIMAL = """
hosts: {h: {address: 127.0.0.1, platform: cpu, memory_budget_gb: 1}}
backends: {b: {host: h, kind: llama-server, base_url: "http://127.0.0.1:1"}}
families: {f: {}}
models: {m: {family: f, architecture: llama, placements: [{backend: b}]}}
roles: {default-chat: {model: m}}
"""


def test_minimal_catalog() -> None:
    cat = parse_catalog(MINIMAL)
    assert cat.roles["default-chat"].required("default-chat") == (Capability.CHAT,)


@pytest.mark.parametrize(
    "mutation, expected",
    [
        (
            ("backends: {b: {host: h,", "backends: {b: {host: h, max_concurency: 3,"),
            "backends.b.max_concurency: unknown key",
        ),
        (("platform: cpu", "platform: tpu"), "hosts.h.platform: Input should be"),
        (("host: h,", "host: nowhere,"), "backends.b.host: unknown host 'nowhere'"),
        (("{model: m}", "{model: ghost}"), "roles.default-chat.model: unknown model 'ghost'"),
        (("memory_budget_gb: 1", "memory_budget_gb: -4"), "hosts.h.memory_budget_gb: Input should be greater than 0"),
        (
            ('base_url: "http://127.0.0.1:1"', "base_url: ftp://x"),
            "backends.b.base_url: Value error, must start with http",
        ),
        (("placements: [{backend: b}]", "placements: []"), "models.m.placements"),
    ],
)
def test_invalid_catalog_names_file_field_and_expectation(tmp_path: Path, mutation, expected) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(MINIMAL.replace(*mutation))
    with pytest.raises(ConfigError) as ei:
        load_catalog(f)
    msg = str(ei.value)
    assert str(f) in msg
    assert expected in msg


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("hosts: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_catalog(f)
    with pytest.raises(ConfigError, match="config file not found"):
        load_catalog(tmp_path / "nope.yaml")
    f.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_catalog(f)


def test_build_ref_cannot_smuggle_a_git_option(tmp_path: Path) -> None:
    text = MINIMAL.replace("memory_budget_gb: 1}", "memory_budget_gb: 1, build: {ref: '--upload-pack=touch /tmp/x'}}")
    with pytest.raises(ConfigError, match=r"hosts\.h\.build\.ref"):
        parse_catalog(text, "t.yaml")
    ok = parse_catalog(MINIMAL.replace("memory_budget_gb: 1}", "memory_budget_gb: 1, build: {ref: b6123}}"))
    assert ok.hosts["h"].build.ref == "b6123"
