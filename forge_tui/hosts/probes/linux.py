"""CPU-only hosts: ``/proc/meminfo``."""

from __future__ import annotations

from .model import MemoryReading

__all__ = ["meminfo_reading", "parse_meminfo"]


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` as bytes (its ``kB`` are KiB)."""
    out = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if sep and parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * (1024 if len(parts) > 1 and parts[1] == "kB" else 1)
    if "MemTotal" not in out:
        raise ValueError("/proc/meminfo: no MemTotal")
    return out


def meminfo_reading(text: str) -> MemoryReading:
    mi = parse_meminfo(text)
    total = mi["MemTotal"]
    avail = mi.get("MemAvailable", mi.get("MemFree", 0) + mi.get("Cached", 0) + mi.get("Buffers", 0))
    return MemoryReading(used_bytes=total - avail, total_bytes=total, source="/proc/meminfo")
