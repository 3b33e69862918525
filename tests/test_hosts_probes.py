"""HostsService probes end to end over a real sshd on loopback ("remote" = this machine).

Real: the SSH connection and host-key check, ``/proc/meminfo``, the sysfs script (run by the real
``sh`` over SSH against a sysfs-shaped tree the test writes with the samples' values), GGUF header
reads of real files, a real llama.cpp server (xllamacpp) behind ``/health``, ``/props``, ``/slots``.

Stand-ins, because they cannot run here: ``rocm-smi``, ``amd-smi``, ``nvidia-smi``, ``sysctl`` and
``vm_stat`` are shell scripts on a PATH directory (sshd ``SetEnv``) that print the captured outputs
from tests/fixtures/probe-samples and record the arguments they were called with; llama-swap's
``/running``, ``/api/version`` and ``/api/performance`` come from a small aiohttp app shaped after
UPSTREAMS.md (llama-swap is a Go binary no registry here carries).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from forge_tui.config.models import Catalog
from forge_tui.hosts.probes.model import GIB, MIB
from forge_tui.hosts.probing import backend_version
from forge_tui.hosts.service import HostsService
from tests.support.fake_llama_build import FakeLlamaRepo, make_repo
from tests.support.sshd import Sshd, sshd_available, start_sshd

SAMPLES = Path(__file__).parent / "fixtures" / "probe-samples"

pytestmark = pytest.mark.sshd


def fake_tool(bindir: Path, name: str, body: str) -> Path:
    p = bindir / name
    p.write_text(f'#!/bin/sh\necho "$*" >> "{bindir}/{name}.args"\n{body}\n')
    p.chmod(0o755)
    return p


@pytest.fixture(scope="module")
def fakebin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fakebin")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory, fakebin: Path) -> Iterator[Sshd]:
    reason = sshd_available()
    if reason:
        pytest.skip(reason)
    server = start_sshd(tmp_path_factory.mktemp("sshd"), path_prefix=str(fakebin))
    yield server
    server.stop()


def ssh(s: Sshd, **kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "user": s.user,
        "port": s.port,
        "key_file": str(s.client_key),
        "known_hosts": str(s.known_hosts),
        "connect_timeout_s": 3,
        "command_timeout_s": 5,
        "keepalive_s": 5,
    }
    d.update(kw)
    return d


def catalog(
    hosts: dict[str, dict[str, Any]],
    backends: dict[str, dict[str, Any]] | None = None,
    models: dict[str, dict[str, Any]] | None = None,
) -> Catalog:
    backends = backends or {}
    if not backends:
        first = next(iter(hosts))
        backends = {"b0": {"host": first, "kind": "llama-server", "base_url": "http://127.0.0.1:9"}}
    bname = next(iter(backends))
    models = models or {"m0": {"family": "f", "architecture": "gemma3", "placements": [{"backend": bname}]}}
    return Catalog.model_validate(
        {
            "hosts": hosts,
            "backends": backends,
            "families": {"f": {}},
            "models": models,
            "roles": {"default-chat": {"model": next(iter(models))}},
        }
    )


def write_sysfs(root: Path, cards: dict[str, dict[str, str]], kfd: dict[str, str]) -> Path:
    for card, files in cards.items():
        dev = root / "class" / "drm" / card / "device"
        dev.mkdir(parents=True)
        for name, value in files.items():
            if name == "render_minor":
                (dev / "drm" / f"renderD{value}").mkdir(parents=True)
            else:
                (dev / name).write_text(value + "\n")
    (root / "class" / "drm" / "card1-DP-1").mkdir(parents=True)  # a connector, not a GPU
    for i, (minor, version) in enumerate(kfd.items()):
        node = root / "class" / "kfd" / "kfd" / "topology" / "nodes" / str(i)
        node.mkdir(parents=True)
        (node / "properties").write_text(f"cpu_cores_count 0\ngfx_target_version {version}\ndrm_render_minor {minor}\n")
    return root


async def test_strix_halo_apu_from_sysfs_over_ssh(sshd: Sshd, tmp_path: Path) -> None:
    """The Beelink GTR9 samples: a 512 MiB UMA carve-out, GTT 128 GiB; KFD names gfx1151, so GTT is
    the ceiling."""
    vram = (SAMPLES / "sysfs-mem_info_vram_total-strixhalo-512m-uma.txt").read_text().strip()
    gtt = (SAMPLES / "sysfs-mem_info_gtt_total-strixhalo-gttsize-128g.txt").read_text().strip()
    root = write_sysfs(
        tmp_path / "sys",
        {
            "card1": {
                "mem_info_vram_total": vram,
                "mem_info_vram_used": "368111616",
                "mem_info_gtt_total": gtt,
                "mem_info_gtt_used": str(40 * GIB),
                "render_minor": "128",
            }
        },
        {"128": "110501", "129": "0"},
    )
    cat = catalog(
        {"furnace": {"address": sshd.address, "platform": "amd-rocm", "memory_budget_gb": 96, "ssh": ssh(sshd)}}
    )
    svc = HostsService(cat, state_dir=None, sysfs_root=str(root))
    try:
        p = await svc.probe_now("furnace")
    finally:
        await svc.close()
    assert p.reachable is True and p.error is None, p
    assert p.memory_source == "sysfs vram+gtt (APU: GTT is the ceiling)"
    assert p.memory_total_gb == 128.0
    assert p.memory_used_gb == round((368111616 + 40 * GIB) / GIB, 2)
    (g,) = p.gpus
    assert (g.name, g.gfx_target, g.unified, g.vram_total) == ("card1", "gfx1151", True, 536870912)
    assert p.probed_at is not None and p.probed_at <= time.time()


async def test_amd_smi_then_rocm_smi_over_ssh(sshd: Sshd, fakebin: Path, tmp_path: Path) -> None:
    empty = tmp_path / "sys"
    empty.mkdir()
    fake_tool(fakebin, "amd-smi", f'cat "{SAMPLES / "amd-smi-metric-mem-usage-gpu_data-shape.trimmed.json"}"')
    fake_tool(fakebin, "rocm-smi", f'cat "{SAMPLES / "rocm-smi-json-showmeminfo-all-rx6700xt-rocm612.json"}"')
    cat = catalog(
        {"crucible": {"address": sshd.address, "platform": "amd-rocm", "memory_budget_gb": 24, "ssh": ssh(sshd)}}
    )
    svc = HostsService(cat, state_dir=None, sysfs_root=str(empty))
    try:
        p = await svc.probe_now("crucible")
        assert (p.memory_source, p.memory_total_gb, p.memory_used_gb) == (
            "amd-smi",
            round(16368 * MIB / GIB, 2),
            round(14569 * MIB / GIB, 2),
        )
        assert p.gpus[0].name == "AMD Radeon RX 7800 XT"
        assert (fakebin / "amd-smi.args").read_text().splitlines()[-1] == "metric --mem-usage --json"
        (fakebin / "amd-smi").unlink()  # the host loses amd-smi: rocm-smi is next
        p = await svc.probe_now("crucible")
        assert (p.memory_source, p.memory_total_gb, p.memory_used_gb) == (
            "rocm-smi",
            round(12868124672 / GIB, 2),
            round(1572745216 / GIB, 2),
        )
        assert p.gpus[0].gfx_target == "gfx1031"
        assert (fakebin / "rocm-smi.args").read_text().splitlines()[
            -1
        ] == "--showmeminfo vram gtt --showuse --showproductname --json"
        assert any("amd-smi" in n and "not installed" in n for n in p.notes)
    finally:
        await svc.close()
        (fakebin / "rocm-smi").unlink(missing_ok=True)


async def test_rocm_smi_text_fallback_over_ssh(sshd: Sshd, fakebin: Path, tmp_path: Path) -> None:
    """An old rocm-smi without --json: the text report (MI300X, spaces instead of tabs)."""
    empty = tmp_path / "sys"
    empty.mkdir()
    fake_tool(
        fakebin,
        "rocm-smi",
        'case "$*" in *--json*) echo "unrecognized arguments: --json" >&2; exit 2;; esac\n'
        f'cat "{SAMPLES / "rocm-smi-showmeminfo-vram-mi300x-8gpu-spaces.txt"}"',
    )
    cat = catalog({"mi": {"address": sshd.address, "platform": "amd-rocm", "memory_budget_gb": 1500, "ssh": ssh(sshd)}})
    svc = HostsService(cat, state_dir=None, sysfs_root=str(empty))
    try:
        p = await svc.probe_now("mi")
    finally:
        await svc.close()
        (fakebin / "rocm-smi").unlink()
    assert p.memory_source == "rocm-smi (text)"
    assert p.memory_total_gb == round(8 * 206141652992 / GIB, 2)
    assert len(p.gpus) == 8


async def test_nvidia_smi_over_ssh(sshd: Sshd, fakebin: Path) -> None:
    fake_tool(
        fakebin,
        "nvidia-smi",
        f'cat "{SAMPLES / "nvidia-smi-query-gpu-index-name-memused-memtotal-util-csv-noheader-nounits-2gpu.txt"}"',
    )
    cat = catalog({"rig": {"address": sshd.address, "platform": "nvidia", "memory_budget_gb": 32, "ssh": ssh(sshd)}})
    svc = HostsService(cat, state_dir=None)
    try:
        p = await svc.probe_now("rig")
    finally:
        await svc.close()
        (fakebin / "nvidia-smi").unlink()
    assert (p.memory_source, p.memory_total_gb, p.memory_used_gb) == (
        "nvidia-smi",
        round(2 * 16376 * MIB / GIB, 2),
        round((1309 + 13625) * MIB / GIB, 2),
    )
    assert (fakebin / "nvidia-smi.args").read_text().splitlines()[
        -1
    ] == "--query-gpu=index,name,memory.used,memory.total,utilization.gpu --format=csv,noheader,nounits"


async def test_hung_gpu_tool_is_a_note_not_an_unreachable_host(sshd: Sshd, fakebin: Path) -> None:
    fake_tool(fakebin, "nvidia-smi", "sleep 30")
    cat = catalog(
        {
            "rig": {
                "address": sshd.address,
                "platform": "nvidia",
                "memory_budget_gb": 32,
                "ssh": ssh(sshd, command_timeout_s=1),
            }
        }
    )
    svc = HostsService(cat, state_dir=None)
    try:
        p = await svc.probe_now("rig")
    finally:
        await svc.close()
        (fakebin / "nvidia-smi").unlink()
    assert p.reachable is True
    assert p.memory_total_gb is None
    assert "nvidia-smi: no answer within 1s" in (p.error or "")


async def test_apple_sysctl_and_vm_stat_over_ssh(sshd: Sshd, fakebin: Path) -> None:
    """A Mac cannot run here: sysctl and vm_stat are stand-ins printing the captured samples."""
    fake_tool(
        fakebin,
        "sysctl",
        f'cat "{SAMPLES / "sysctl-hw.memsize-m1-16gb.txt"}" '
        f'"{SAMPLES / "sysctl-iogpu.wired_limit_mb-default.txt"}" '
        f'"{SAMPLES / "sysctl-vm-pressure-level-heavy-load.txt"}"',
    )
    fake_tool(fakebin, "vm_stat", f'cat "{SAMPLES / "vm_stat-m5pro-48gb-macos26.txt"}"')
    cat = catalog({"anvil": {"address": sshd.address, "platform": "apple", "memory_budget_gb": 16, "ssh": ssh(sshd)}})
    svc = HostsService(cat, state_dir=None)
    try:
        p = await svc.probe_now("anvil")
    finally:
        await svc.close()
        (fakebin / "sysctl").unlink()
        (fakebin / "vm_stat").unlink()
    assert (p.memory_source, p.memory_total_gb, p.pressure) == ("sysctl hw.memsize + vm_stat", 16.0, "critical")
    assert p.memory_used_gb == round((1176672 + 291583 + 244173) * 16384 / GIB, 2)
    assert p.gpus[0].unified
    assert (fakebin / "sysctl.args").read_text().splitlines()[
        -1
    ] == "hw.memsize iogpu.wired_limit_mb kern.memorystatus_vm_pressure_level"


async def test_cpu_host_reads_the_real_proc_meminfo(sshd: Sshd) -> None:
    cat = catalog({"box": {"address": sshd.address, "platform": "cpu", "memory_budget_gb": 8, "ssh": ssh(sshd)}})
    svc = HostsService(cat, state_dir=None)
    try:
        p = await svc.probe_now("box")
    finally:
        await svc.close()
    total_kib = int(
        next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal:")).split()[1]
    )
    assert (p.reachable, p.memory_source, p.memory_total_gb) == (
        True,
        "/proc/meminfo",
        round(total_kib * 1024 / GIB, 2),
    )
    assert 0 < (p.memory_used_gb or 0) < (p.memory_total_gb or 0)


async def test_unknown_host_key_shows_as_unreachable_with_the_reason(sshd: Sshd, tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    kh.write_text("")
    cat = catalog(
        {
            "box": {
                "address": sshd.address,
                "platform": "cpu",
                "memory_budget_gb": 8,
                "ssh": ssh(sshd, known_hosts=str(kh)),
            }
        }
    )
    svc = HostsService(cat, state_dir=None)
    try:
        p = await svc.probe_now("box")
    finally:
        await svc.close()
    assert p.reachable is False and "unknown host key" in (p.error or "")


# ----------------------------------------------------------------------------- serving stack


def swap_standin(version: str = "v250") -> web.Application:
    """llama-swap's own endpoints, shaped after UPSTREAMS.md (stand-in: no llama-swap binary here)."""
    app = web.Application()

    async def running(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "running": [
                    {
                        "model": "gemma-4-31b",
                        "state": "ready",
                        "cmd": "llama-server ...",
                        "proxy": "http://127.0.0.1:5800",
                        "ttl": 0,
                        "name": "",
                        "description": "",
                    },
                    {
                        "model": "nomic-embed",
                        "state": "starting",
                        "cmd": "llama-server ...",
                        "proxy": "http://127.0.0.1:5801",
                        "ttl": 300,
                        "name": "",
                        "description": "",
                    },
                ]
            }
        )

    async def ver(_: web.Request) -> web.Response:
        return web.json_response({"version": version, "commit": "9c3b1f0e2d", "build_date": "2026-10-01T00:00:00Z"})

    async def perf(_: web.Request) -> web.Response:
        return web.json_response(
            {
                "enabled": True,
                "gpu_stats": [
                    {
                        "id": 0,
                        "name": "Radeon 8060S Graphics",
                        "mem_used_mb": 41000,
                        "mem_total_mb": 98304,
                        "gpu_util_pct": 35,
                        "temp_c": 61,
                    }
                ],
            }
        )

    app.router.add_get("/running", running)
    app.router.add_get("/api/version", ver)
    app.router.add_get("/api/performance", perf)

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="OK")

    app.router.add_get("/health", health)
    return app


@pytest.fixture
async def swap_url() -> AsyncIterator[str]:
    runner = web.AppRunner(swap_standin())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture(scope="module")
def built_repo(tmp_path_factory: pytest.TempPathFactory) -> FakeLlamaRepo:
    if shutil.which("cmake") is None or shutil.which("cc") is None:
        pytest.skip("cmake and a C compiler are needed for the stand-in llama.cpp tree")
    return make_repo(tmp_path_factory.mktemp("llama"))


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.llama
async def test_serving_stack_llama_swap_llama_server_and_the_binary(
    sshd: Sshd, swap_url: str, llama_server: Any, built_repo: FakeLlamaRepo, tmp_path: Path
) -> None:
    empty = tmp_path / "sys"
    empty.mkdir()
    dead = f"http://127.0.0.1:{_dead_port()}"
    cat = catalog(
        {
            "furnace": {
                "address": sshd.address,
                "platform": "amd-rocm",
                "memory_budget_gb": 96,
                "ssh": ssh(sshd),
                "build": {"source_dir": str(built_repo.source), "backend": "hip", "gpu_target": "gfx1151"},
            }
        },
        backends={
            "swap": {"host": "furnace", "kind": "llama-swap", "base_url": swap_url},
            "direct": {"host": "furnace", "kind": "llama-server", "base_url": llama_server.url},
            "gone": {"host": "furnace", "kind": "llama-server", "base_url": dead},
        },
        models={
            "gemma3-direct": {
                "family": "f",
                "architecture": "gemma3",
                "placements": [{"backend": "direct", "name": "gemma3-270m"}],
            },
            "gemma-4-31b": {"family": "f", "architecture": "gemma4", "placements": [{"backend": "swap"}]},
        },
    )
    svc = HostsService(cat, state_dir=None, sysfs_root=str(empty))
    try:
        await svc.start()  # the real loop: first probe right away
        deadline = time.monotonic() + 30
        while svc.probes()["furnace"].probed_at is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        p = svc.probes()["furnace"]
    finally:
        await svc.close()
    # What the backends hold by their own word: llama-swap's ready model (nomic-embed is still
    # starting), and the file the llama-server was started with (the catalog's "gemma3-direct" has
    # no gguf path and its placement name is not what the server answers to).
    assert p.loaded_models == {"swap": ["gemma-4-31b"], "direct": [str(llama_server.gguf)]}
    assert p.backends["swap"].model_states == {"gemma-4-31b": "ready", "nomic-embed": "starting"}
    assert p.backends["direct"].health == "ready"
    assert p.backends["direct"].model_path == str(llama_server.gguf)
    assert p.backends["direct"].slots_total == 4  # the session server runs parallel=4
    # /props build_info of the xllamacpp wheel is "b0-unknown" (built outside a git checkout).
    assert backend_version(p.backends["direct"]) == "unknown build (built outside git)"
    assert p.backends["gone"].health == "down"
    # No GPU tool answered here, so memory comes from llama-swap's /api/performance.
    assert (p.memory_source, p.memory_total_gb, p.memory_used_gb) == (
        "llama-swap /api/performance",
        96.0,
        round(41000 * MIB / GIB, 2),
    )
    # The version of the build the jobs manage, from its own --version, plus llama-swap's.
    short = built_repo.commits["v1"][:9]
    assert p.serving_version == f"b1 ({short}) · llama-swap v250 (9c3b1f0e)"


# ----------------------------------------------------------------------------- inventory


async def test_inventory_over_ssh_reads_headers_and_keeps_odd_names_inert(
    sshd: Sshd, tmp_path: Path, unknown_arch_gguf: Path
) -> None:
    from forge_tui.launch import resolve_gguf
    from tests.support.gguf_files import array_first_gguf

    models = tmp_path / "models"
    (models / "sub").mkdir(parents=True)
    (models / "gemma-3-270m.gguf").symlink_to(resolve_gguf("@gemma3-270m"))
    shutil.copy(unknown_arch_gguf, models / "sub" / "gemma9-tiny.gguf")
    array_first_gguf(models / "qwen-array-first.gguf", "qwen3")
    canary = tmp_path / "canary"
    canary.mkdir()
    odd = models / f"x; rm -rf {canary.name}; $(touch pwned) `touch pwned`.gguf"
    odd.write_bytes(b"not a gguf at all")
    (models / "readme.txt").write_text("not listed")
    cat = catalog(
        {
            "box": {
                "address": sshd.address,
                "platform": "cpu",
                "memory_budget_gb": 8,
                "ssh": ssh(sshd),
                "model_dirs": [str(models), str(tmp_path / "no-such-dir")],
            }
        }
    )
    svc = HostsService(cat, state_dir=None)
    try:
        files = await svc.refresh_inventory("box")
        missing = svc.missing_model_dirs("box")
    finally:
        await svc.close()
    by_name = {Path(f.path).name: f for f in files}
    assert sorted(by_name) == sorted(["gemma-3-270m.gguf", "gemma9-tiny.gguf", "qwen-array-first.gguf", odd.name])
    assert by_name["gemma-3-270m.gguf"].architecture == "gemma3"
    assert by_name["gemma-3-270m.gguf"].size_bytes == resolve_gguf("@gemma3-270m").stat().st_size
    assert by_name["gemma9-tiny.gguf"].architecture == "gemma9"
    assert by_name["qwen-array-first.gguf"].architecture == "qwen3"
    assert by_name[odd.name].architecture is None and "not a GGUF file" in (by_name[odd.name].error or "")
    assert missing == [str(tmp_path / "no-such-dir")]
    assert canary.is_dir() and not (models / "pwned").exists() and not (tmp_path / "pwned").exists()


async def test_one_silent_host_never_stalls_the_others(sshd: Sshd) -> None:
    """A host that accepts TCP but never speaks SSH: its probes hang until their bound, while the
    other host's probes keep landing on schedule."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    cat = catalog(
        {
            "good": {"address": sshd.address, "platform": "cpu", "memory_budget_gb": 8, "ssh": ssh(sshd)},
            "silent": {
                "address": "127.0.0.1",
                "platform": "cpu",
                "memory_budget_gb": 8,
                "ssh": ssh(sshd, port=port, connect_timeout_s=2, command_timeout_s=2),
            },
        }
    )
    svc = HostsService(cat, state_dir=None, probe_interval_s=0.2)
    try:
        await svc.start()
        stamps: set[float] = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (len(stamps) < 4 or svc.probes()["silent"].reachable is None):
            p = svc.probes()["good"]
            if p.probed_at is not None:
                stamps.add(p.probed_at)
            await asyncio.sleep(0.05)
        bad = svc.probes()["silent"]
    finally:
        await svc.close()
        silent.close()
    assert len(stamps) >= 4  # the good host kept updating while the silent one hung
    assert bad.reachable is False
    assert bad.error is not None and "no SSH answer" in bad.error


async def test_the_probe_loop_also_keeps_the_inventory(sshd: Sshd, tmp_path: Path, unknown_arch_gguf: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(unknown_arch_gguf, models / "gemma9-tiny.gguf")
    cat = catalog(
        {
            "box": {
                "address": sshd.address,
                "platform": "cpu",
                "memory_budget_gb": 8,
                "ssh": ssh(sshd),
                "model_dirs": [str(models)],
            }
        }
    )
    svc = HostsService(cat, state_dir=None, probe_interval_s=0.2)
    try:
        with pytest.raises(ValueError, match="unknown host 'nowhere'"):
            await svc.probe_now("nowhere")
        assert svc.inventory("box") == []
        await svc.start()
        deadline = time.monotonic() + 20
        while not svc.inventory("box") and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        (f,) = svc.inventory("box")
    finally:
        await svc.close()
    assert (Path(f.path).name, f.architecture, f.size_bytes) == (
        "gemma9-tiny.gguf",
        "gemma9",
        unknown_arch_gguf.stat().st_size,
    )


async def test_the_gateway_snapshot_shows_sshd_probe_data(sshd: Sshd, tmp_path: Path) -> None:
    """The glue the Hosts pane reads: forge's Runtime builds a HostsService and its snapshot carries
    the probe of an sshd-backed host."""
    from forge_tui.runtime import Runtime

    cat = catalog({"box": {"address": sshd.address, "platform": "cpu", "memory_budget_gb": 8, "ssh": ssh(sshd)}})
    rt = Runtime(tmp_path / "forge.yaml", catalog=cat, state_dir=tmp_path / "state", port=0, history=False)
    await rt.start()
    try:
        deadline = time.monotonic() + 20
        info = rt.operator.snapshot().hosts[0]
        while info.probed_at is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            info = rt.operator.snapshot().hosts[0]
    finally:
        await rt.stop()
    assert (info.name, info.reachable, info.memory_source, info.error) == ("box", True, "/proc/meminfo", None)
    assert info.memory_total_gb and info.memory_used_gb is not None
