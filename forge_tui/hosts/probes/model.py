"""What the probes report: plain dataclasses, sizes always in bytes."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["GIB", "MIB", "GpuMemory", "MemoryReading", "to_bytes"]

MIB = 1024 * 1024
GIB = 1024 * MIB

# amd-smi prints "MB" and nvidia-smi "MiB"; both are binary megabytes (an 8 GiB RX 6600 reports
# 8176 MB: 8192 MiB less the driver's reservation), so every unit here is a power of 1024.
_UNITS = {
    "b": 1,
    "kb": 1024,
    "kib": 1024,
    "mb": MIB,
    "mib": MIB,
    "gb": GIB,
    "gib": GIB,
    "tb": GIB * 1024,
    "tib": GIB * 1024,
}


def to_bytes(value: float | int, unit: str) -> int:
    factor = _UNITS.get(unit.strip().lower())
    if factor is None:
        raise ValueError(f"unknown memory unit {unit!r}")
    return round(float(value) * factor)


@dataclass(frozen=True, slots=True)
class GpuMemory:
    """One GPU (or GPU partition) as a tool reported it."""

    index: int
    source: str  # the tool: "sysfs", "amd-smi", "rocm-smi", "nvidia-smi", "llama-swap", "sysctl"...
    name: str | None = None
    vram_total: int | None = None
    vram_used: int | None = None
    gtt_total: int | None = None  # AMD: system memory the GPU can map (the real ceiling on APUs)
    gtt_used: int | None = None
    util_pct: float | None = None
    gfx_target: str | None = None
    unified: bool = False  # memory shared with the CPU (APU, Apple silicon)
    parent: int | None = None  # MIG / partition: index of the physical GPU

    @property
    def ceiling(self) -> int | None:
        """Bytes a model can occupy: VRAM on a discrete card; on an APU whichever pool is larger."""
        if self.unified and self.gtt_total is not None:
            return max(self.vram_total or 0, self.gtt_total)
        return self.vram_total

    @property
    def used(self) -> int | None:
        if self.unified and self.gtt_used is not None:
            return (self.vram_used or 0) + self.gtt_used
        return self.vram_used


@dataclass(slots=True)
class MemoryReading:
    """A host's memory as the probe settled it: the numbers and where they came from."""

    used_bytes: int | None
    total_bytes: int | None
    source: str
    gpus: list[GpuMemory] = field(default_factory=list)
    pressure: str | None = None  # Apple: normal / warn / critical
    notes: list[str] = field(default_factory=list)
