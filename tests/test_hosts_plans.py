"""Pure parts of the hosts package: build commands derived per backend, the memory budget check on
the story's homelab (config/forge.yaml), roles served by a host, the x-forge-route host."""

from __future__ import annotations

from pathlib import Path

import pytest

from forge_tui.config import load_catalog
from forge_tui.config.models import BuildSettings
from forge_tui.hosts.buildplan import make_plan
from forge_tui.hosts.preflight import capability_check, memory_check
from forge_tui.hosts.smoke import roles_served_by, route_host
from forge_tui.state import RoutingState

FORGE = Path(__file__).resolve().parent.parent / "config" / "forge.yaml"


def test_hip_plan_for_strix_halo() -> None:
    p = make_plan(
        BuildSettings(
            source_dir="~/src/llama.cpp",
            backend="hip",
            gpu_target="gfx1151",
            ref="b6327",
            restart="systemctl --user restart llama-swap",
        ),
        "/home/forge",
        32,
    )
    assert p.source_dir == "/home/forge/src/llama.cpp"
    assert p.build_dir == "/home/forge/src/llama.cpp/build"
    assert p.binary == "/home/forge/src/llama.cpp/build/bin/llama-server"
    assert p.configure == (
        "cmake",
        "-S",
        ".",
        "-B",
        "build",
        "-DGGML_HIP=ON",
        "-DAMDGPU_TARGETS=gfx1151",
        "-DCMAKE_BUILD_TYPE=Release",
    )
    assert p.build == ("cmake", "--build", "build", "--config", "Release", "-j", "32", "--target", "llama-server")
    assert p.update == (("git", "fetch", "--tags", "origin", "b6327"), ("git", "checkout", "--detach", "FETCH_HEAD"))
    assert p.restart == ("sh", "-c", "systemctl --user restart llama-swap")
    assert p.backup_dir("20261201-101010") == "/home/forge/src/llama.cpp/build.bak-20261201-101010"


@pytest.mark.parametrize(
    ("backend", "target", "flags"),
    [
        ("cuda", "89", ("-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=89")),
        ("cuda", None, ("-DGGML_CUDA=ON",)),
        ("metal", None, ("-DGGML_METAL=ON",)),
        ("vulkan", None, ("-DGGML_VULKAN=ON",)),
        ("cpu", None, ()),
    ],
)
def test_backend_flags(backend: str, target: str | None, flags: tuple[str, ...]) -> None:
    p = make_plan(BuildSettings(source_dir="/opt/llama.cpp", backend=backend, gpu_target=target, jobs=6), "/root", 2)
    assert p.configure == ("cmake", "-S", ".", "-B", "build", *flags, "-DCMAKE_BUILD_TYPE=Release")
    assert p.build[p.build.index("-j") + 1] == "6"


def test_configured_commands_run_as_the_operators_shell_text() -> None:
    p = make_plan(
        BuildSettings(
            source_dir="/opt/llama.cpp",
            build_dir="build-rocm",
            configure="./configure.sh --rocm",
            build="make -j8 llama-server",
            update="git pull --ff-only",
        ),
        "/root",
        2,
    )
    assert (p.configure, p.build, p.update) == (
        ("sh", "-c", "./configure.sh --rocm"),
        ("sh", "-c", "make -j8 llama-server"),
        (("sh", "-c", "git pull --ff-only"),),
    )
    assert p.binary == "/opt/llama.cpp/build-rocm/bin/llama-server" and not p.derived_update


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (BuildSettings(backend="hip"), "gpu_target is required for the hip backend"),
        (BuildSettings(backend="opencl"), "build.backend 'opencl' is not one of"),
        (BuildSettings(build_dir="."), "must be a subdirectory of source_dir"),
        (BuildSettings(build_dir="../elsewhere"), "must be a subdirectory of source_dir"),
        (BuildSettings(source_dir="relative/llama.cpp"), "must be absolute"),
    ],
)
def test_plans_that_cannot_build_say_which_field(settings: BuildSettings, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_plan(settings, "/home/forge", 4)


@pytest.fixture
def forge_state(tmp_path: Path) -> RoutingState:
    return RoutingState(load_catalog(FORGE), tmp_path)


def test_memory_budget_of_the_story_homelab(forge_state: RoutingState) -> None:
    cat = forge_state.catalog
    c = memory_check(cat, forge_state, "default-chat", "qwen3.6-chat-35b-a3b", "furnace")
    # Gemma 4 31B stays hot (state: hot) while Qwen3.6 35B takes default-chat back: 21 + 20.5 + 16.8
    # + 15 + 9.2 + 5.1 + 0.3 = 87.9 GB, over 90% of Furnace's 96 GB.
    assert c.outcome == "warn", c.evidence
    assert c.evidence.startswith(
        "hot on furnace after the change: qwen3.6-chat-35b-a3b 21 GB (role default-chat), "
        "gemma-4-chat-31b 20.5 GB (kept hot)"
    )
    assert c.evidence.endswith("= 87.9 GB of the 96 GB budget (over 90%)")


def test_memory_budget_exceeded_fails_and_near_warns(forge_state: RoutingState) -> None:
    cat = forge_state.catalog
    # Crucible (24 GB) routes only transcribe (whisper, 1.6 GB) today.
    c = memory_check(cat, forge_state, "vision", "qwen3-vl-30b-a3b", "crucible")
    assert c.outcome == "pass" and c.evidence.endswith("= 20.6 GB of the 24 GB budget"), c.evidence
    forge_state.swap_role("vision", "qwen3-vl-30b-a3b", actor="test")
    c = memory_check(cat, forge_state, "prompt-enhance", "qwen3-4b", "crucible")
    assert c.outcome == "warn" and c.evidence.endswith("= 23.2 GB of the 24 GB budget (over 90%)"), c.evidence
    c = memory_check(cat, forge_state, "prompt-enhance", "devstral2-24b", "crucible")
    assert c.outcome == "fail" and c.evidence.endswith("= 34.9 GB of the 24 GB budget"), c.evidence
    c = memory_check(cat, forge_state, "vision", "qwen3-vl-30b-a3b", "crucible", measured_total_gb=16.0)
    assert c.outcome == "warn" and c.evidence.endswith("the host reports only 16.0 GB in total"), c.evidence


def test_capability_check(forge_state: RoutingState) -> None:
    c = capability_check(forge_state.role("vision"), forge_state.model("qwen3-8b"))  # type: ignore[arg-type]
    assert (c.outcome, c.evidence) == ("fail", "vision needs vision; qwen3-8b has chat, code")
    c = capability_check(forge_state.role("vision"), forge_state.model("qwen3-vl-30b-a3b"))  # type: ignore[arg-type]
    assert c.outcome == "pass"


def test_roles_served_by_each_host(forge_state: RoutingState) -> None:
    cat = forge_state.catalog
    furnace = roles_served_by(cat, forge_state, "furnace")
    # audio-qa (the transformers sidecar) is not the llama.cpp binary a rebuild replaces.
    assert sorted(furnace) == ["default-chat", "embed", "priority-chat", "prompt-enhance", "vision"]
    assert furnace["vision"] == ("gemma-4-multimodal-8b-e4b", ("chat", "vision"))
    assert sorted(roles_served_by(cat, forge_state, "crucible")) == []  # transcribe is an audio role
    forge_state.rollback_role("vision", actor="test")
    assert sorted(roles_served_by(cat, forge_state, "crucible")) == ["vision"]
    assert roles_served_by(cat, None, "anvil") == {}


def test_route_host_from_the_gateway_header() -> None:
    assert route_host("role=default-chat; model=gemma3-chat; host=box; backend=box-llama") == "box"
    assert route_host("role=vision; model=x; host=anvil; backend=anvil-mlx; fallback=y") == "anvil"
    assert route_host("role=default-chat; model=x") is None
    assert route_host(None) is None
