"""Probe parsers (one module per tool family) and the collector that runs them on a host."""

from .model import GIB, MIB, GpuMemory, MemoryReading
from .collect import probe_memory, reading_from_gpus

__all__ = ["GIB", "MIB", "GpuMemory", "MemoryReading", "probe_memory", "reading_from_gpus"]
