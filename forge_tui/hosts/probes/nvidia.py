"""NVIDIA GPU memory: ``nvidia-smi --query-gpu`` CSV (with or without header and units) and
``nvidia-smi -q -x`` XML (including MIG devices)."""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from typing import Any

from .model import GpuMemory, to_bytes

__all__ = ["QUERY_FIELDS", "parse_nvidia_csv", "parse_nvidia_memory_csv", "parse_nvidia_xml"]

# What the probe asks for; the order matters for the noheader parse.
QUERY_FIELDS = ("index", "name", "memory.used", "memory.total", "utilization.gpu")

_MISSING = {"[N/A]", "N/A", "[Not Supported]", "[Unknown Error]", "[Insufficient Permissions]", ""}


def _cell(raw: str) -> str | None:
    v = raw.strip()
    return None if v in _MISSING else v


def parse_nvidia_csv(text: str, fields: list[str] | tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Rows of ``--format=csv[,noheader][,nounits]`` as dicts; ``[N/A]`` and friends become None.

    With a header, field names come from it (``memory.used [MiB]`` -> ``memory.used``) and the
    unit in brackets is kept under ``<field>.unit``. Without one, pass ``fields`` in query order.
    Values keep their units as text (``16376 MiB``) unless the query was ``nounits``.
    """
    rows = [r for r in csv.reader(io.StringIO(text.strip()), skipinitialspace=True) if r]
    if not rows:
        return []
    units: dict[str, str] = {}
    if fields is None:
        names = []
        for h in rows[0]:
            m = re.fullmatch(r"\s*(.+?)\s*(?:\[(.+)\])?\s*", h)
            name = m.group(1) if m else h.strip()
            if m and m.group(2):
                units[name] = m.group(2)
            names.append(name)
        rows = rows[1:]
    else:
        names = list(fields)
    out = []
    for r in rows:
        if len(r) != len(names):
            raise ValueError(f"nvidia-smi CSV: row has {len(r)} columns, expected {len(names)}: {r!r}")
        d: dict[str, Any] = {n: _cell(v) for n, v in zip(names, r, strict=True)}
        for n, u in units.items():
            d[f"{n}.unit"] = u
        out.append(d)
    return out


def _mem(value: str | None, unit: str | None) -> int | None:
    if value is None:
        return None
    m = re.fullmatch(r"([\d.]+)\s*([A-Za-z]+)?", value)
    if not m:
        return None
    return to_bytes(float(m.group(1)), m.group(2) or unit or "MiB")


def _pct(value: str | None) -> float | None:
    if value is None:
        return None
    m = re.fullmatch(r"([\d.]+)\s*%?", value)
    return float(m.group(1)) if m else None


def parse_nvidia_memory_csv(text: str, fields: tuple[str, ...] = QUERY_FIELDS) -> list[GpuMemory]:
    """The probe's query (``index,name,memory.used,memory.total,utilization.gpu``; noheader).

    Works with ``nounits`` (bare MiB numbers) and with units (``1309 MiB``, ``0 %``)."""
    out = []
    for i, row in enumerate(parse_nvidia_csv(text, fields)):
        idx = row.get("index")
        out.append(
            GpuMemory(
                index=int(idx) if idx is not None and idx.isdigit() else i,
                source="nvidia-smi",
                name=row.get("name"),
                vram_used=_mem(row.get("memory.used"), row.get("memory.used.unit")),
                vram_total=_mem(row.get("memory.total"), row.get("memory.total.unit")),
                util_pct=_pct(row.get("utilization.gpu")),
            )
        )
    return out


def parse_nvidia_xml(text: str) -> list[GpuMemory]:
    """``nvidia-smi -q -x``: one entry per GPU (``fb_memory_usage``), then one per MIG device
    with ``parent`` set to its GPU's index."""
    # The DOCTYPE names an external DTD; ElementTree never fetches it.
    root = ET.fromstring(text.encode("utf-8") if isinstance(text, str) else text)
    if root.tag != "nvidia_smi_log":
        raise ValueError(f"not nvidia-smi XML (root <{root.tag}>)")
    out: list[GpuMemory] = []
    migs: list[GpuMemory] = []
    for i, gpu in enumerate(root.findall("gpu")):
        fb = gpu.find("fb_memory_usage")
        idx_text = gpu.findtext("minor_number")
        idx = int(idx_text) if idx_text and idx_text.isdigit() else i
        out.append(
            GpuMemory(
                index=idx,
                source="nvidia-smi",
                name=gpu.findtext("product_name"),
                vram_total=_mem(_cell(fb.findtext("total") or ""), None) if fb is not None else None,
                vram_used=_mem(_cell(fb.findtext("used") or ""), None) if fb is not None else None,
                util_pct=_pct(_cell(gpu.findtext("utilization/gpu_util") or "")),
            )
        )
        for mig in gpu.findall("mig_devices/mig_device"):
            mfb = mig.find("fb_memory_usage")
            midx = mig.findtext("index") or "0"
            migs.append(
                GpuMemory(
                    index=int(midx) if midx.isdigit() else 0,
                    source="nvidia-smi mig",
                    name=f"MIG GI {mig.findtext('gpu_instance_id')} CI {mig.findtext('compute_instance_id')}",
                    vram_total=_mem(_cell(mfb.findtext("total") or ""), None) if mfb is not None else None,
                    vram_used=_mem(_cell(mfb.findtext("used") or ""), None) if mfb is not None else None,
                    parent=idx,
                )
            )
    if not out:
        raise ValueError("nvidia-smi XML: no <gpu> element")
    return out + migs
