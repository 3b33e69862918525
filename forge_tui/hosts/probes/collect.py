"""Run the memory probes on a host over its transport and settle on one reading.

Per platform, cheapest and most direct source first:
- amd-rocm: sysfs ``mem_info_*`` (no ROCm needed), then ``amd-smi``, then ``rocm-smi`` (JSON, then text).
- nvidia: ``nvidia-smi --query-gpu ... --format=csv,noheader,nounits``.
- apple: ``sysctl`` + ``vm_stat`` (``macmon pipe`` if vm_stat fails).
- cpu: ``/proc/meminfo``.
Tools are looked up on the remote PATH plus /opt/rocm/bin and /usr/sbin (non-login SSH sessions
often lack them). Transport errors propagate (the host is unreachable); a tool that is missing or
prints something unexpected only adds a note and the next source is tried.
"""

from __future__ import annotations

from dataclasses import replace

from ...config.models import Host, Platform
from ..transport import CommandResult, CommandTimeout, Transport
from .amd import (
    APU_GFX_TARGETS,
    parse_amd_smi_metric_json,
    parse_rocm_smi_json,
    parse_rocm_smi_text,
    parse_sysfs_dump,
)
from .apple import apple_reading, parse_macmon_json
from .linux import meminfo_reading
from .model import GpuMemory, MemoryReading
from .nvidia import QUERY_FIELDS, parse_nvidia_memory_csv

__all__ = ["SYSFS_SCRIPT", "probe_memory", "reading_from_gpus", "tool_argv"]

# Prints "cardN <file> <bytes>", "cardN render_minor M" and "kfd M <gfx_target_version>" lines.
# $1 is the sysfs root (/sys on a real host). Constant text; the root is an argument, never spliced.
SYSFS_SCRIPT = r"""
root=$1
for d in "$root"/class/drm/card[0-9]*/device; do
  [ -r "$d/mem_info_vram_total" ] || continue
  c=${d%/device}; c=${c##*/}
  for f in mem_info_vram_total mem_info_vram_used mem_info_gtt_total mem_info_gtt_used; do
    [ -r "$d/$f" ] && printf '%s %s %s\n' "$c" "$f" "$(cat "$d/$f")"
  done
  for r in "$d"/drm/renderD*; do [ -e "$r" ] && printf '%s render_minor %s\n' "$c" "${r##*renderD}"; done
done
for p in "$root"/class/kfd/kfd/topology/nodes/*/properties; do
  [ -r "$p" ] || continue
  awk '$1=="drm_render_minor"{m=$2} $1=="gfx_target_version"{g=$2} END{if (m!="" && g!="") print "kfd", m, g}' "$p"
done
exit 0
"""

_TOOL_PATH = 'PATH="$PATH:/opt/rocm/bin:/usr/local/bin:/opt/homebrew/bin:/usr/sbin:/sbin"; exec "$@"'


def tool_argv(*argv: str) -> list[str]:
    """Run a tool with the usual install dirs appended to PATH (arguments stay separate words)."""
    return ["sh", "-c", _TOOL_PATH, "forge-tool", *argv]


async def _run(
    transport: Transport, argv: list[str], timeout: float, notes: list[str], what: str
) -> CommandResult | None:
    """A tool that hangs (a wedged GPU driver does that) is a note, not an unreachable host."""
    try:
        return await transport.run(argv, timeout)
    except CommandTimeout:
        notes.append(f"{what}: no answer within {timeout:g}s (killed)")
        return None


def reading_from_gpus(gpus: list[GpuMemory], source: str) -> MemoryReading:
    """Sum the physical GPUs (MIG slices are detail, not extra memory)."""
    phys = [g for g in gpus if g.parent is None]
    totals = [g.ceiling for g in phys if g.ceiling is not None]
    useds = [g.used for g in phys if g.used is not None]
    return MemoryReading(
        used_bytes=sum(useds) if useds else None,
        total_bytes=sum(totals) if totals else None,
        source=source,
        gpus=list(gpus),
    )


def _apu_hint(host: Host) -> bool:
    return bool(host.build and host.build.gpu_target in APU_GFX_TARGETS)


async def _amd(
    transport: Transport, host: Host, timeout: float, sysfs_root: str, notes: list[str]
) -> MemoryReading | None:
    apu = _apu_hint(host)
    res = await _run(transport, ["sh", "-c", SYSFS_SCRIPT, "forge-sysfs", sysfs_root], timeout, notes, "sysfs")
    try:
        gpus = parse_sysfs_dump(res.out, apu_hint=apu) if res is not None and res.ok else []
    except ValueError as exc:
        gpus = []
        notes.append(f"sysfs: {exc}")
    if gpus:
        unified = any(g.unified for g in gpus)
        return reading_from_gpus(gpus, "sysfs vram+gtt (APU: GTT is the ceiling)" if unified else "sysfs vram")
    notes.append(f"sysfs: no amdgpu mem_info_* under {sysfs_root}/class/drm")

    for argv in (["amd-smi", "metric", "--mem-usage", "--json"], ["amd-smi", "metric", "--json"]):
        res = await _run(transport, tool_argv(*argv), timeout, notes, argv[0])
        if res is None:
            break
        if res.ok:
            try:
                gpus = parse_amd_smi_metric_json(res.out)
                return reading_from_gpus([_mark(g, apu) for g in gpus], "amd-smi")
            except ValueError as exc:
                notes.append(f"{' '.join(argv)}: {exc}")
        else:
            notes.append(f"{' '.join(argv)}: {_why(res.exit_status, res.reason(2))}")
            if res.exit_status == 127:
                break

    res = await _run(
        transport,
        tool_argv("rocm-smi", "--showmeminfo", "vram", "gtt", "--showuse", "--showproductname", "--json"),
        timeout,
        notes,
        "rocm-smi",
    )
    if res is None:
        return None
    if res.ok:
        try:
            return reading_from_gpus([_mark(g, apu) for g in parse_rocm_smi_json(res.out)], "rocm-smi")
        except ValueError as exc:
            notes.append(f"rocm-smi --json: {exc}")
    else:
        notes.append(f"rocm-smi --json: {_why(res.exit_status, res.reason(2))}")
        if res.exit_status == 127:
            return None
    # Older rocm-smi builds have no --json (or print broken JSON): read the text report.
    res = await _run(transport, tool_argv("rocm-smi", "--showmeminfo", "vram", "gtt"), timeout, notes, "rocm-smi")
    if res is not None and res.ok:
        try:
            return reading_from_gpus([_mark(g, apu) for g in parse_rocm_smi_text(res.out)], "rocm-smi (text)")
        except ValueError as exc:
            notes.append(f"rocm-smi text: {exc}")
    elif res is not None:
        notes.append(f"rocm-smi: {_why(res.exit_status, res.reason(2))}")
    return None


def _mark(g: GpuMemory, apu: bool) -> GpuMemory:
    return g if not apu or g.unified else replace(g, unified=True)


def _why(status: int | None, tail: str) -> str:
    if status == 127:
        return "not installed"
    return f"exit {status}: {tail}" if tail else f"exit {status}"


async def _nvidia(transport: Transport, timeout: float, notes: list[str]) -> MemoryReading | None:
    res = await _run(
        transport,
        tool_argv("nvidia-smi", f"--query-gpu={','.join(QUERY_FIELDS)}", "--format=csv,noheader,nounits"),
        timeout,
        notes,
        "nvidia-smi",
    )
    if res is None:
        return None
    if not res.ok:
        notes.append(f"nvidia-smi: {_why(res.exit_status, res.reason(2))}")
        return None
    try:
        return reading_from_gpus(parse_nvidia_memory_csv(res.out), "nvidia-smi")
    except ValueError as exc:
        notes.append(f"nvidia-smi: {exc}")
        return None


async def _apple(transport: Transport, timeout: float, notes: list[str]) -> MemoryReading | None:
    # sysctl exits non-zero when one name is unknown (iogpu on Intel Macs) but prints the others.
    sc = await _run(
        transport,
        tool_argv("sysctl", "hw.memsize", "iogpu.wired_limit_mb", "kern.memorystatus_vm_pressure_level"),
        timeout,
        notes,
        "sysctl",
    )
    if sc is None:
        return None
    vm = await _run(transport, tool_argv("vm_stat"), timeout, notes, "vm_stat")
    try:
        reading = apple_reading(sc.out, vm.out if vm is not None and vm.ok else None)
    except ValueError as exc:
        notes.append(f"sysctl/vm_stat: {exc}")
        return None
    if reading.used_bytes is None:
        mm = await _run(transport, tool_argv("macmon", "pipe", "-s", "1"), timeout, notes, "macmon")
        if mm is not None and mm.ok:
            try:
                reading.used_bytes = parse_macmon_json(mm.out).used_bytes
                reading.source = "sysctl hw.memsize + macmon"
            except ValueError as exc:
                notes.append(f"macmon: {exc}")
    return reading


async def _cpu(transport: Transport, timeout: float, notes: list[str]) -> MemoryReading | None:
    res = await _run(transport, ["cat", "/proc/meminfo"], timeout, notes, "/proc/meminfo")
    if res is None:
        return None
    if not res.ok:
        notes.append(f"/proc/meminfo: {_why(res.exit_status, res.reason(2))}")
        return None
    try:
        return meminfo_reading(res.out)
    except ValueError as exc:
        notes.append(str(exc))
        return None


async def probe_memory(
    transport: Transport, host: Host, *, timeout: float = 10.0, sysfs_root: str = "/sys"
) -> MemoryReading:
    """The host's memory by its platform. Raises ``TransportError`` when the host cannot be reached."""
    notes: list[str] = []
    reading: MemoryReading | None
    if host.platform is Platform.AMD_ROCM:
        reading = await _amd(transport, host, timeout, sysfs_root, notes)
    elif host.platform is Platform.NVIDIA:
        reading = await _nvidia(transport, timeout, notes)
    elif host.platform is Platform.APPLE:
        reading = await _apple(transport, timeout, notes)
    else:
        reading = await _cpu(transport, timeout, notes)
    if reading is None:
        return MemoryReading(None, None, "none", notes=notes)
    reading.notes = notes + reading.notes
    return reading
