"""Every probe sample in tests/fixtures/probe-samples (copied from ../shared/fixtures/probe-samples;
SOURCES.md there says where each came from) parsed, with the exact values asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from forge_tui.hosts.probes import amd, apple, linux, nvidia, serving
from forge_tui.hosts.probes.collect import reading_from_gpus
from forge_tui.hosts.probes.model import GIB, MIB, GpuMemory

SAMPLES = Path(__file__).parent / "fixtures" / "probe-samples"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


def test_every_sample_has_a_test() -> None:
    """A new sample dropped into the folder without a test fails here."""
    names = {p.name for p in SAMPLES.iterdir() if p.name != "SOURCES.md"}
    source = Path(__file__).read_text(encoding="utf-8")
    untested = sorted(n for n in names if f'"{n}"' not in source)
    assert names and not untested, untested


# ----------------------------------------------------------------------------- amd-smi


def test_amd_smi_metric_list_shape_rx6600() -> None:
    (g,) = amd.parse_amd_smi_metric_json(sample("amd-smi-metric-json-rx6600-list-shape.json"))
    assert g == GpuMemory(
        index=0,
        source="amd-smi",
        name=None,
        vram_total=8176 * MIB,
        vram_used=202 * MIB,
        gtt_total=64357 * MIB,
        gtt_used=65 * MIB,
        util_pct=1.0,
    )
    assert g.ceiling == 8176 * MIB  # a discrete card: GTT is not model memory


def test_amd_smi_metric_gpu_data_shape_rx7800xt() -> None:
    (g,) = amd.parse_amd_smi_metric_json(sample("amd-smi-metric-mem-usage-gpu_data-shape.trimmed.json"))
    assert (g.index, g.name, g.vram_total, g.vram_used, g.gtt_total, g.util_pct) == (
        0,
        "AMD Radeon RX 7800 XT",
        16368 * MIB,
        14569 * MIB,
        None,
        2.0,
    )


def test_amd_smi_metric_other_shapes() -> None:
    """Shapes not in the samples but printed by other amd-smi versions: a bare GPU object with plain
    MB numbers, and strings with units."""
    (g,) = amd.parse_amd_smi_metric_json('{"gpu": 1, "mem_usage": {"total_vram": 1024, "used_vram": "512 MB"}}')
    assert (g.index, g.vram_total, g.vram_used) == (1, 1024 * MIB, 512 * MIB)
    with pytest.raises(ValueError, match="no GPU entries"):
        amd.parse_amd_smi_metric_json('{"foo": 1}')


def test_amd_smi_static_json_rx6600() -> None:
    (g,) = amd.parse_amd_smi_static_json(sample("amd-smi-static-json-rx6600-list-shape.json"))
    assert (g.index, g.name, g.vram_total, g.vram_used) == (0, "Navi 23 [Radeon RX 6600/6600 XT", 8176 * MIB, None)


def test_amd_smi_static_human_mi300a() -> None:
    (g,) = amd.parse_amd_smi_static_text(sample("amd-smi-static-human-mi300a-gpu0.excerpt.txt"))
    assert (g.index, g.name, g.vram_total) == (0, "MI300A", 64289 * MIB)


def test_amd_smi_version() -> None:
    assert amd.parse_amd_smi_version(sample("amd-smi-version-rocm633.txt")) == {
        "AMDSMI Tool": "24.7.1+8dc45db",
        "AMDSMI Library version": "25.1.0.0",
        "ROCm version": "6.3.3",
    }


# ----------------------------------------------------------------------------- rocm-smi JSON / CSV


def test_rocm_smi_json_mi100_four_cards_and_system_key() -> None:
    gpus = amd.parse_rocm_smi_json(sample("rocm-smi-json-showmeminfo-all-mi100-4gpu-rocm602.json"))
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    for g in gpus:
        assert (g.name, g.vram_total, g.vram_used, g.gtt_total, g.gtt_used, g.util_pct) == (
            "Arcturus GL-XL [Instinct MI100]",
            34342961152,
            6750208,
            135138402304,
            11354112,
            0.0,
        )
    r = reading_from_gpus(gpus, "rocm-smi")
    assert (r.total_bytes, r.used_bytes) == (4 * 34342961152, 4 * 6750208)


def test_rocm_smi_json_rx6700xt_leading_blank_line() -> None:
    text = sample("rocm-smi-json-showmeminfo-all-rx6700xt-rocm612.json")
    assert text.startswith("\n")
    (g,) = amd.parse_rocm_smi_json(text)
    assert (g.name, g.vram_total, g.vram_used, g.gtt_total, g.gtt_used, g.gfx_target, g.util_pct) == (
        "Navi 22 [Radeon RX 6700/6700 XT / 6800M]",
        12868124672,
        1572745216,
        16792432640,
        242036736,
        "gfx1031",
        0.0,
    )


def test_rocm_smi_json_rx7800xt_gpustack() -> None:
    (g,) = amd.parse_rocm_smi_json(sample("rocm-smi-json-showmeminfo-vram-rx7800xt-rocm624.json"))
    assert (g.name, g.vram_total, g.vram_used, g.gtt_total, g.util_pct, g.gfx_target) == (
        "Navi 32 [Radeon RX 7700 XT / 7800 XT]",
        17163091968,
        11615076352,
        None,
        100.0,
        "gfx11001",
    )


def test_rocm_smi_json_rx7900xt() -> None:
    (g,) = amd.parse_rocm_smi_json(sample("rocm-smi-showproductname-showuse-showmeminfo-vram-rx7900xt.json"))
    assert (g.index, g.name, g.vram_total, g.vram_used, g.util_pct, g.gfx_target) == (
        0,
        "Radeon RX 7900 XT",
        21458059264,
        27856896,
        0.0,
        "gfx1100",
    )


def test_rocm_smi_csv_rx7900xt_matches_its_json() -> None:
    (c,) = amd.parse_rocm_smi_csv(sample("rocm-smi-showproductname-showuse-showmeminfo-vram-rx7900xt.csv"))
    (j,) = amd.parse_rocm_smi_json(sample("rocm-smi-showproductname-showuse-showmeminfo-vram-rx7900xt.json"))
    assert (c.index, c.name, c.vram_total, c.vram_used, c.util_pct, c.gfx_target) == (
        0,
        "Radeon RX 7900 XT",
        21458059264,
        27856896,
        0.0,
        "gfx1100",
    )
    assert c == j


# ----------------------------------------------------------------------------- rocm-smi text


def test_rocm_smi_text_mi300a_spx_tabs() -> None:
    (g,) = amd.parse_rocm_smi_text(sample("rocm-smi-showmeminfo-vram-mi300a-spx.txt"))
    assert (g.index, g.vram_total, g.vram_used) == (0, 100742320128, 8388608)


def test_rocm_smi_text_mi300a_tpx_three_partitions() -> None:
    gpus = amd.parse_rocm_smi_text(sample("rocm-smi-showmeminfo-vram-mi300a-tpx-3gpu.txt"))
    assert [(g.index, g.vram_total, g.vram_used) for g in gpus] == [(i, 33580773376, 8388608) for i in range(3)]


def test_rocm_smi_text_mi300x_eight_gpus_spaces() -> None:
    gpus = amd.parse_rocm_smi_text(sample("rocm-smi-showmeminfo-vram-mi300x-8gpu-spaces.txt"))
    assert [g.vram_total for g in gpus] == [206141652992] * 8
    assert [g.vram_used for g in gpus] == [297771008] * 4 + [297775104] * 4
    assert reading_from_gpus(gpus, "rocm-smi").used_bytes == 4 * 297771008 + 4 * 297775104


def test_rocm_smi_text_80col_2023() -> None:
    (g,) = amd.parse_rocm_smi_text(sample("rocm-smi-showmeminfo-vram-80col-2023.txt"))
    assert (g.vram_total, g.vram_used) == (4278190080, 108814336)


def test_rocm_smi_text_strix_halo_vbios_use_and_memory() -> None:
    (g,) = amd.parse_rocm_smi_text(sample("rocm-smi-showvbios-showmeminfo-all-showuse-strixhalo.partial.txt"))
    assert (g.vram_total, g.vram_used, g.util_pct) == (536870912, 368111616, 0.0)


def test_rocm_smi_text_refuses_other_text() -> None:
    with pytest.raises(ValueError, match="VRAM Total Memory"):
        amd.parse_rocm_smi_text("ERROR: GPU[0] : no memory info\n")


# ----------------------------------------------------------------------------- sysfs / dmesg


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("sysfs-mem_info_gtt_total-strixhalo-gttsize-128g.txt", 137438953472),
        ("sysfs-mem_info_gtt_total-strixhalo-ttm-pages-limit-96g.txt", 103079215104),
        ("sysfs-mem_info_vram_total-strixhalo-4g-uma.txt", 4294967296),
        ("sysfs-mem_info_vram_total-strixhalo-512m-uma.txt", 536870912),
    ],
)
def test_sysfs_values(name: str, value: int) -> None:
    assert amd.parse_sysfs_bytes(sample(name)) == value


def test_sysfs_ttm_pages_limit_is_96_gib() -> None:
    assert amd.parse_sysfs_bytes(sample("sysfs-mem_info_gtt_total-strixhalo-ttm-pages-limit-96g.txt")) == 96 * GIB


def test_sysfs_dump_strix_halo_apu_gtt_is_the_ceiling() -> None:
    """512 MiB UMA carve-out + 128 GiB GTT (the samples' Beelink GTR9), KFD says gfx1151 (110501)."""
    dump = "\n".join(
        [
            f"card1 mem_info_vram_total {sample('sysfs-mem_info_vram_total-strixhalo-512m-uma.txt').strip()}",
            "card1 mem_info_vram_used 368111616",
            f"card1 mem_info_gtt_total {sample('sysfs-mem_info_gtt_total-strixhalo-gttsize-128g.txt').strip()}",
            "card1 mem_info_gtt_used 21474836480",
            "card1 render_minor 128",
            "kfd 128 110501",
            "kfd 0 0",
        ]
    )
    (g,) = amd.parse_sysfs_dump(dump)
    assert (g.gfx_target, g.unified, g.ceiling, g.used) == ("gfx1151", True, 137438953472, 368111616 + 21474836480)


def test_sysfs_dump_discrete_card_vram_only() -> None:
    dump = (
        "card0 mem_info_vram_total 17163091968\ncard0 mem_info_vram_used 1000\ncard0 mem_info_gtt_total 99\n"
        "card0 render_minor 129\nkfd 129 110000\n"
    )
    (g,) = amd.parse_sysfs_dump(dump)
    assert (g.gfx_target, g.unified, g.ceiling, g.used) == ("gfx1100", False, 17163091968, 1000)


def test_gfx_target_version_mapping() -> None:
    assert [amd.gfx_from_target_version(v) for v in (110501, 110000, 90012, 90402)] == [
        "gfx1151",
        "gfx1100",
        "gfx90c",
        "gfx942",
    ]


def test_dmesg_strix_halo_bios_carveout() -> None:
    d = amd.parse_dmesg_amdgpu(sample("dmesg-amdgpu-strixhalo-96g-bios-carveout.txt"))
    assert (d.vram_total, d.gtt_total, d.warnings) == (98304 * MIB, 108000 * MIB, [])


def test_dmesg_gttsize_deprecated_warnings() -> None:
    d = amd.parse_dmesg_amdgpu(sample("dmesg-amdgpu-gttsize-deprecated.txt"))
    assert (d.vram_total, d.gtt_total) == (None, None)
    assert d.warnings == [
        "amdgpu: unknown parameter 'gtt_size' ignored",
        "amdgpu 0000:c6:00.0: amdgpu: [drm] Configuring gttsize via module parameter is deprecated, "
        "please use ttm.pages_limit",
    ]


# ----------------------------------------------------------------------------- nvidia


def test_nvidia_csv_noheader_nounits_probe_query() -> None:
    gpus = nvidia.parse_nvidia_memory_csv(
        sample("nvidia-smi-query-gpu-index-name-memused-memtotal-util-csv-noheader-nounits-2gpu.txt")
    )
    assert [(g.index, g.name, g.vram_used, g.vram_total, g.util_pct) for g in gpus] == [
        (0, "NVIDIA GeForce RTX 4080 SUPER", 1309 * MIB, 16376 * MIB, 0.0),
        (1, "NVIDIA GeForce RTX 4080 SUPER", 13625 * MIB, 16376 * MIB, 0.0),
    ]


def test_nvidia_csv_noheader_with_units() -> None:
    fields = ("index", "name", "memory.total", "memory.used", "utilization.gpu", "temperature.gpu")
    gpus = nvidia.parse_nvidia_memory_csv(sample("nvidia-smi-query-gpu-csv-noheader-units-2gpu.txt"), fields)
    assert [(g.index, g.vram_used, g.vram_total, g.util_pct) for g in gpus] == [
        (0, 1309 * MIB, 16376 * MIB, 0.0),
        (1, 13625 * MIB, 16376 * MIB, 0.0),
    ]
    rows = nvidia.parse_nvidia_csv(sample("nvidia-smi-query-gpu-csv-noheader-units-2gpu.txt"), fields)
    assert rows[1]["temperature.gpu"] == "39"


def test_nvidia_csv_header_units_na_tesla_p100() -> None:
    (row,) = nvidia.parse_nvidia_csv(sample("nvidia-smi-query-gpu-csv-header-units-tesla-p100.csv"))
    assert row["name"] == "Tesla P100-PCIE-16GB"
    assert row["uuid"] == "GPU-ef1b2c9b-38d8-2090-2bd1-f567a3eb42a6"
    assert row["fan.speed"] is None  # [N/A]
    assert row["fan.speed.unit"] == "%"
    assert (row["pstate"], row["memory.reserved"], row["memory.used"], row["memory.free"]) == (
        "P0",
        "103",
        "0",
        "16280",
    )
    assert (row["memory.used.unit"], row["power.draw"], row["clocks.current.video"]) == ("MiB", "28.16", "835")


def test_nvidia_xml_rtx3080_v13() -> None:
    (g,) = nvidia.parse_nvidia_xml(sample("nvidia-smi-q-x-rtx3080-v13.xml"))
    assert (g.index, g.name, g.vram_total, g.vram_used, g.util_pct) == (
        0,
        "NVIDIA GeForce RTX 3080",
        10240 * MIB,
        9184 * MIB,
        65.0,
    )


def test_nvidia_xml_a100_mig_devices_are_detail_not_extra_memory() -> None:
    gpus = nvidia.parse_nvidia_xml(sample("nvidia-smi-q-x-a100-sxm4-mig.xml"))
    gpu, *migs = gpus
    assert (gpu.name, gpu.vram_total, gpu.vram_used, gpu.util_pct, gpu.parent) == (
        "NVIDIA A100-SXM4-40GB",
        40960 * MIB,
        38 * MIB,
        None,
        None,
    )
    assert [(m.name, m.vram_total, m.vram_used, m.parent) for m in migs] == [
        ("MIG GI 1 CI 0", 19968 * MIB, 19 * MIB, 0),
        ("MIG GI 2 CI 0", 19968 * MIB, 19 * MIB, 0),
    ]
    r = reading_from_gpus(gpus, "nvidia-smi")
    assert (r.total_bytes, r.used_bytes) == (40960 * MIB, 38 * MIB)


# ----------------------------------------------------------------------------- apple


def test_sysctl_hw_memsize() -> None:
    assert apple.parse_sysctl(sample("sysctl-hw.memsize-m1-16gb.txt")) == {"hw.memsize": "17179869184"}


def test_sysctl_a_grep_memsize() -> None:
    assert apple.parse_sysctl(sample("sysctl-a-grep-hw.memsize-m1-16gb.txt")) == {
        "hw.memsize": "17179869184",
        "hw.memsize_usable": "16383606784",
    }


def test_sysctl_wired_limit_default_policy() -> None:
    text = sample("sysctl-hw.memsize-m1-16gb.txt") + sample("sysctl-iogpu.wired_limit_mb-default.txt")
    r = apple.apple_reading(text, None)
    assert (r.total_bytes, r.used_bytes, r.source) == (17179869184, None, "sysctl hw.memsize")
    (gpu,) = r.gpus
    assert gpu.unified and gpu.vram_total == int(17179869184 * 2 / 3)
    assert "system default (iogpu.wired_limit_mb=0)" in r.notes[0]


def test_sysctl_wired_limit_set() -> None:
    r = apple.apple_reading("hw.memsize: 68719476736\niogpu.wired_limit_mb: 57344\n", None)
    assert r.gpus[0].vram_total == 57344 * MIB


def test_sysctl_pressure_heavy_is_critical() -> None:
    sc = apple.parse_sysctl(sample("sysctl-vm-pressure-level-heavy-load.txt"))
    assert (sc["vm.memory_pressure"], sc["kern.memorystatus_vm_pressure_level"], sc["vm.page_free_count"]) == (
        "1693",
        "4",
        "32572",
    )
    r = apple.apple_reading("hw.memsize: 17179869184\n" + sample("sysctl-vm-pressure-level-heavy-load.txt"), None)
    assert r.pressure == "critical"


def test_sysctl_pressure_light_is_normal() -> None:
    r = apple.apple_reading("hw.memsize: 17179869184\n" + sample("sysctl-vm-pressure-level-light-load.txt"), None)
    assert r.pressure == "normal"


def test_vm_stat_macos26_m5pro() -> None:
    vm = apple.parse_vm_stat(sample("vm_stat-m5pro-48gb-macos26.txt"))
    assert vm.page_size == 16384
    assert vm.pages["Pages free"] == 167743
    assert vm.pages["Translation faults"] == 15158843396
    assert vm.pages["Pages tag-storage non-tag wired"] == 8
    assert vm.used_bytes == (1176672 + 291583 + 244173) * 16384


def test_apple_reading_with_vm_stat() -> None:
    r = apple.apple_reading(
        "hw.memsize: 51539607552\nkern.memorystatus_vm_pressure_level: 2\n", sample("vm_stat-m5pro-48gb-macos26.txt")
    )
    assert (r.total_bytes, r.used_bytes, r.pressure, r.source) == (
        48 * GIB,
        (1176672 + 291583 + 244173) * 16384,
        "warn",
        "sysctl hw.memsize + vm_stat",
    )
    assert r.gpus[0].vram_total == int(48 * GIB * 0.75)


def test_macmon_readme_jsonc_example() -> None:
    r = apple.parse_macmon_json(sample("macmon-pipe-readme-example.jsonc"))
    assert (r.total_bytes, r.used_bytes, r.source) == (25769803776, 20985479168, "macmon")


def test_macmon_plain_json_line() -> None:
    r = apple.parse_macmon_json('{"memory": {"ram_total": 100, "ram_usage": 40, "swap_total": 0}}\n{"memory": {}}\n')
    assert (r.total_bytes, r.used_bytes) == (100, 40)


# ----------------------------------------------------------------------------- linux


def test_proc_meminfo() -> None:
    r = linux.meminfo_reading("MemTotal:       16384000 kB\nMemFree:   1000 kB\nMemAvailable:    4096000 kB\n")
    assert (r.total_bytes, r.used_bytes, r.source) == (16384000 * 1024, (16384000 - 4096000) * 1024, "/proc/meminfo")


def test_proc_meminfo_of_this_machine() -> None:
    r = linux.meminfo_reading(Path("/proc/meminfo").read_text())
    assert r.total_bytes and 0 < r.used_bytes < r.total_bytes


# ----------------------------------------------------------------------------- llama.cpp


def test_llama_server_version_new_format() -> None:
    v = serving.parse_llama_version(sample("llama-server-version-new-format.partial.txt"))
    assert (v.version, v.build, v.commit, v.compiler, v.target, v.label) == (
        "0.3.0-dev",
        10621,
        "c1d0e7a00",
        None,
        None,
        "b10621 (c1d0e7a00)",
    )


def test_llama_server_version_old_format_empty_target() -> None:
    v = serving.parse_llama_version(sample("llama-server-version-old-format-msvc.txt"))
    assert (v.version, v.build, v.commit, v.compiler, v.target, v.label) == (
        None,
        4291,
        "ce8784bd",
        "MSVC 19.29.30157.0",
        None,
        "b4291 (ce8784bd)",
    )


def test_llama_cli_version_rocm_prelude() -> None:
    v = serving.parse_llama_version(sample("llama-cli-version-rocm-gfx1151-prelude.partial.txt"))
    assert (v.build, v.commit, v.backend) == (0, "unknown", "ROCm")
    assert v.devices == (serving.GgmlDevice(0, "Radeon 8060S Graphics", "gfx1151", 114688 * MIB),)
    assert v.label == "unknown build (built outside git)"


def test_llama_version_with_built_line_and_cuda_device() -> None:
    text = (
        "ggml_cuda_init: found 1 CUDA devices:\n  Device 0: NVIDIA GeForce RTX 4090, compute capability 8.9, "
        "VMM: yes\nversion: 6327 (4d74393b)\nbuilt with cc (Debian 12.2.0-14) 12.2.0 for x86_64-linux-gnu\n"
    )
    v = serving.parse_llama_version(text)
    assert (v.build, v.commit, v.compiler, v.target, v.backend) == (
        6327,
        "4d74393b",
        "cc (Debian 12.2.0-14) 12.2.0",
        "x86_64-linux-gnu",
        "CUDA",
    )
    assert v.devices == (serving.GgmlDevice(0, "NVIDIA GeForce RTX 4090", None, None),)


def test_llama_version_refuses_other_text() -> None:
    with pytest.raises(ValueError, match="no 'version:' line"):
        serving.parse_llama_version("error: unknown argument: --version\n")


def test_build_info_from_props() -> None:
    assert serving.parse_build_info("b6327-4d74393b").label == "b6327 (4d74393b)"
    assert serving.parse_build_info("b0-unknown").label == "unknown build (built outside git)"


# ----------------------------------------------------------------------------- llama-swap (UPSTREAMS.md shapes)


def test_llama_swap_version_running_performance() -> None:
    v = serving.parse_swap_version({"version": "v250", "commit": "0123456789abcdef", "build_date": "2026-10-01"})
    assert v.label == "llama-swap v250 (01234567)"
    running = serving.parse_swap_running(
        {
            "running": [
                {
                    "model": "gemma-4-31b",
                    "state": "ready",
                    "cmd": "x",
                    "proxy": "http://127.0.0.1:5801",
                    "ttl": 60,
                    "name": "",
                    "description": "",
                },
                {"model": "qwen3-8b", "state": "starting"},
            ]
        }
    )
    assert [(r.model, r.state, r.ttl) for r in running] == [
        ("gemma-4-31b", "ready", 60),
        ("qwen3-8b", "starting", None),
    ]
    (g,) = serving.parse_swap_performance(
        {
            "enabled": True,
            "gpu_stats": [
                {
                    "id": 0,
                    "name": "Radeon 8060S",
                    "mem_used_mb": 41000,
                    "mem_total_mb": 98304,
                    "gpu_util_pct": 12,
                    "temp_c": 50,
                }
            ],
        }
    )
    assert (g.source, g.vram_used, g.vram_total, g.util_pct) == ("llama-swap", 41000 * MIB, 98304 * MIB, 12.0)
    assert serving.parse_swap_performance({"enabled": False}) == []


def test_llama_server_health_props_slots_shapes() -> None:
    assert serving.parse_server_health(200, {"status": "ok"}).state == "ready"
    h = serving.parse_server_health(
        503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    )
    assert (h.state, h.detail) == ("loading", "Loading model")
    p = serving.parse_server_props(
        {"build_info": "b6327-4d74393b", "model_path": "/m.gguf", "total_slots": 2, "modalities": {"vision": False}}
    )
    assert (p.model_path, p.total_slots, p.build.build if p.build else None, p.modalities) == (
        "/m.gguf",
        2,
        6327,
        {"vision": False},
    )
    assert serving.parse_server_slots([{"id": 0, "is_processing": True}, {"id": 1, "is_processing": False}]) == (1, 2)
