"""Apple silicon: unified memory from ``sysctl`` and ``vm_stat`` (and ``macmon pipe`` when present).

There is no VRAM: the GPU wires pages out of the same RAM, up to ``iogpu.wired_limit_mb``
(0 means the system default policy, about 2/3 of RAM on small machines and 3/4 above 36 GiB).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .model import GIB, MIB, GpuMemory, MemoryReading

__all__ = [
    "PRESSURE_LEVELS",
    "VmStat",
    "apple_reading",
    "default_wired_limit",
    "parse_macmon_json",
    "parse_sysctl",
    "parse_vm_stat",
]

# kern.memorystatus_vm_pressure_level: the kernel's DISPATCH_MEMORYPRESSURE_* bits.
PRESSURE_LEVELS = {1: "normal", 2: "warn", 4: "critical"}


def parse_sysctl(text: str) -> dict[str, str]:
    """``sysctl name ...`` (or ``sysctl -a | grep``) output: ``name: value`` lines."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_.]+)\s*[:=]\s*(.*?)\s*$", line)
        if m:
            out[m.group(1)] = m.group(2)
    if not out:
        raise ValueError("no 'name: value' lines in sysctl output")
    return out


@dataclass(frozen=True, slots=True)
class VmStat:
    page_size: int
    pages: dict[str, int]  # label as printed (without quotes) -> count

    def bytes(self, label: str) -> int:
        return self.pages.get(label, 0) * self.page_size

    @property
    def used_bytes(self) -> int:
        """Activity Monitor's "Memory Used" approximated: app (active) + wired + compressed."""
        return self.bytes("Pages active") + self.bytes("Pages wired down") + self.bytes("Pages occupied by compressor")


def parse_vm_stat(text: str) -> VmStat:
    lines = text.splitlines()
    m = re.search(r"page size of (\d+) bytes", lines[0] if lines else "")
    if not m:
        raise ValueError("vm_stat: no 'page size of N bytes' header")
    pages = {}
    for line in lines[1:]:
        k, sep, v = line.rpartition(":")
        v = v.strip().rstrip(".")
        if sep and v.isdigit():
            pages[k.strip().strip('"')] = int(v)
    return VmStat(int(m.group(1)), pages)


def _strip_jsonc(text: str) -> str:
    """Drop // comments and trailing commas outside strings (the macmon readme's example is JSONC;
    real ``macmon pipe`` lines are plain JSON and pass through unchanged)."""
    out, i, n, in_str = [], 0, len(text), False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif c == "/" and text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def parse_macmon_json(text: str) -> MemoryReading:
    """One ``macmon pipe`` sample: ``memory.ram_total`` / ``memory.ram_usage`` in bytes."""
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    try:
        data = json.loads(first)  # real output: one JSON object per line
    except json.JSONDecodeError:
        data = json.loads(_strip_jsonc(text))
    mem = data.get("memory") if isinstance(data, dict) else None
    if not isinstance(mem, dict) or "ram_total" not in mem:
        raise ValueError("macmon JSON: no memory.ram_total")
    return MemoryReading(used_bytes=int(mem["ram_usage"]), total_bytes=int(mem["ram_total"]), source="macmon")


def default_wired_limit(memsize: int) -> int:
    return int(memsize * (0.75 if memsize > 36 * GIB else 2 / 3))


def apple_reading(sysctl_text: str, vm_stat_text: str | None) -> MemoryReading:
    """Unified memory from ``sysctl hw.memsize iogpu.wired_limit_mb kern.memorystatus_vm_pressure_level``
    plus ``vm_stat``."""
    sc = parse_sysctl(sysctl_text)
    if "hw.memsize" not in sc:
        raise ValueError("sysctl: no hw.memsize")
    total = int(sc["hw.memsize"])
    notes = []
    limit_mb = sc.get("iogpu.wired_limit_mb")
    if limit_mb is not None and limit_mb.isdigit() and int(limit_mb) > 0:
        gpu_limit = int(limit_mb) * MIB
        notes.append(f"GPU wired limit {int(limit_mb)} MiB (iogpu.wired_limit_mb)")
    else:
        gpu_limit = default_wired_limit(total)
        notes.append(f"GPU wired limit: system default (iogpu.wired_limit_mb=0), about {gpu_limit / GIB:.1f} GiB")
    level = sc.get("kern.memorystatus_vm_pressure_level")
    pressure = PRESSURE_LEVELS.get(int(level), f"level {level}") if level and level.isdigit() else None
    used = parse_vm_stat(vm_stat_text).used_bytes if vm_stat_text else None
    gpu = GpuMemory(index=0, source="sysctl", name="Apple GPU (unified)", vram_total=gpu_limit, unified=True)
    return MemoryReading(
        used_bytes=used,
        total_bytes=total,
        source="sysctl hw.memsize + vm_stat" if used is not None else "sysctl hw.memsize",
        gpus=[gpu],
        pressure=pressure,
        notes=notes,
    )
