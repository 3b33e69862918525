"""Probe parsers (one module per tool family) and the collector that runs them on a host."""

from .collect import probe_memory, reading_from_gpus
from .model import GIB, MIB, GpuMemory, MemoryReading

__all__ = ["GIB", "MIB", "GpuMemory", "MemoryReading", "probe_memory", "reading_from_gpus"]
