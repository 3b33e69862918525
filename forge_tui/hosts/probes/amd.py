"""AMD GPU memory: sysfs, amd-smi (every JSON shape it has printed, and its human text), rocm-smi
(JSON, text, CSV) and the amdgpu dmesg lines.

Parsers take the tool's text and return ``GpuMemory`` values in bytes; they raise ``ValueError``
with a short reason when the text is not what that tool prints.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .model import MIB, GpuMemory, to_bytes

__all__ = [
    "APU_GFX_TARGETS",
    "DmesgAmdgpu",
    "gfx_from_target_version",
    "parse_amd_smi_metric_json",
    "parse_amd_smi_static_json",
    "parse_amd_smi_static_text",
    "parse_amd_smi_version",
    "parse_dmesg_amdgpu",
    "parse_rocm_smi_csv",
    "parse_rocm_smi_json",
    "parse_rocm_smi_text",
    "parse_sysfs_bytes",
    "parse_sysfs_dump",
]

# GPU targets of AMD APUs (the iGPU shares system memory; GTT can exceed the VRAM carve-out).
# gfx1151 is Strix Halo (Ryzen AI MAX), gfx1150/1152 Strix/Krackan Point, gfx1103 Phoenix/Hawk Point.
APU_GFX_TARGETS = frozenset(
    {
        "gfx1151",
        "gfx1150",
        "gfx1152",
        "gfx1103",
        "gfx1037",
        "gfx1036",
        "gfx1035",
        "gfx1033",
        "gfx90c",
        "gfx902",
        "gfx909",
        "gfx801",
    }
)


def gfx_from_target_version(value: int) -> str:
    """KFD's ``gfx_target_version`` (major*10000 + minor*100 + stepping) -> ``gfxNNNN``."""
    major, rest = divmod(value, 10000)
    minor, step = divmod(rest, 100)
    return f"gfx{major}{minor:x}{step:x}"


def parse_sysfs_bytes(text: str) -> int:
    """One ``mem_info_*`` file: a decimal byte count."""
    s = text.strip()
    if not s.isdigit():
        raise ValueError(f"not a byte count: {s[:40]!r}")
    return int(s)


def parse_sysfs_dump(text: str, *, apu_hint: bool = False) -> list[GpuMemory]:
    """The probe's sysfs dump (see ``collect.SYSFS_SCRIPT``), lines of three words:

    ``card<N> mem_info_vram_total <bytes>`` (also vram_used, gtt_total, gtt_used),
    ``card<N> render_minor <M>`` and ``kfd <M> <gfx_target_version>`` (from KFD's topology,
    joined on the render node's minor number to name the GPU target).
    A card is unified (APU) when its GPU target is an APU's, or when ``apu_hint`` says so.
    """
    cards: dict[int, dict[str, str]] = {}
    kfd: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        if parts[0] == "kfd":
            kfd[parts[1]] = parts[2]
            continue
        if not parts[0].startswith("card") or not parts[0][4:].isdigit():
            continue
        cards.setdefault(int(parts[0][4:]), {})[parts[1]] = parts[2]
    out: list[GpuMemory] = []
    for idx, f in sorted(cards.items()):
        if "mem_info_vram_total" not in f:
            continue  # not an amdgpu card

        def num(key: str, f: dict[str, str] = f) -> int | None:  # bound now: used within this iteration
            v = f.get(key)
            return parse_sysfs_bytes(v) if v is not None else None

        gfx = None
        tv = kfd.get(f.get("render_minor", ""), "")
        if tv.isdigit() and int(tv) > 0:
            gfx = gfx_from_target_version(int(tv))
        out.append(
            GpuMemory(
                index=len(out),
                source="sysfs",
                name=f"card{idx}",
                vram_total=num("mem_info_vram_total"),
                vram_used=num("mem_info_vram_used"),
                gtt_total=num("mem_info_gtt_total"),
                gtt_used=num("mem_info_gtt_used"),
                gfx_target=gfx,
                unified=apu_hint or (gfx in APU_GFX_TARGETS),
            )
        )
    return out


# ----------------------------------------------------------------------------- amd-smi


def _amd_value(v: Any, default_unit: str = "MB") -> int | None:
    """amd-smi memory values: {"value": 8176, "unit": "MB"}, a bare number (MB), "8176 MB", "N/A"."""
    if isinstance(v, dict):
        val, unit = v.get("value"), v.get("unit") or default_unit
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            return to_bytes(val, str(unit))
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return to_bytes(v, default_unit)
    if isinstance(v, str):
        m = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]*)\s*", v)
        if m:
            return to_bytes(float(m.group(1)), m.group(2) or default_unit)
    return None


def _amd_gpu_entries(data: Any) -> list[dict[str, Any]]:
    # Shapes seen: a top-level list of GPUs (ROCm 6.1-6.3), {"gpu_data": [...]} (6.4+ / 7.x),
    # a single GPU object, or {"gpu_0": {...}, ...}.
    if isinstance(data, list):
        return [d for d in data if isinstance(d, dict)]
    if isinstance(data, dict):
        if isinstance(data.get("gpu_data"), list):
            return [d for d in data["gpu_data"] if isinstance(d, dict)]
        if "gpu" in data:
            return [data]
        keyed = [v for k, v in sorted(data.items()) if re.fullmatch(r"gpu_?\d+", k) and isinstance(v, dict)]
        if keyed:
            return keyed
    raise ValueError("amd-smi JSON: no GPU entries (expected a list, {'gpu_data': [...]} or a GPU object)")


def _gpu_index(entry: dict[str, Any], fallback: int) -> int:
    g = entry.get("gpu")
    return g if isinstance(g, int) and not isinstance(g, bool) else fallback


def parse_amd_smi_metric_json(text: str) -> list[GpuMemory]:
    """``amd-smi metric --json`` (or ``-m --json``): ``mem_usage`` total/used VRAM and GTT."""
    data = json.loads(text)
    out = []
    for i, e in enumerate(_amd_gpu_entries(data)):
        mem = e.get("mem_usage")
        if not isinstance(mem, dict):
            continue
        usage = e.get("usage") if isinstance(e.get("usage"), dict) else {}
        gfx = usage.get("gfx_activity") if usage else None
        util = gfx.get("value") if isinstance(gfx, dict) else gfx
        asic = e.get("asic") if isinstance(e.get("asic"), dict) else {}
        out.append(
            GpuMemory(
                index=_gpu_index(e, i),
                source="amd-smi",
                name=asic.get("market_name") if asic else None,
                vram_total=_amd_value(mem.get("total_vram")),
                vram_used=_amd_value(mem.get("used_vram")),
                gtt_total=_amd_value(mem.get("total_gtt")),
                gtt_used=_amd_value(mem.get("used_gtt")),
                util_pct=float(util) if isinstance(util, (int, float)) and not isinstance(util, bool) else None,
            )
        )
    if not out:
        raise ValueError("amd-smi JSON: no mem_usage in any GPU entry")
    return out


def parse_amd_smi_static_json(text: str) -> list[GpuMemory]:
    """``amd-smi static --json``: the VRAM size (no usage) and the marketing name."""
    data = json.loads(text)
    out = []
    for i, e in enumerate(_amd_gpu_entries(data)):
        vram, asic = e.get("vram"), e.get("asic")
        vram = vram if isinstance(vram, dict) else {}
        asic = asic if isinstance(asic, dict) else {}
        out.append(
            GpuMemory(
                index=_gpu_index(e, i),
                source="amd-smi static",
                name=asic.get("market_name"),
                vram_total=_amd_value(vram.get("size")) if vram else None,
            )
        )
    return out


def parse_amd_smi_static_text(text: str) -> list[GpuMemory]:
    """``amd-smi static`` human output: ``GPU: N`` blocks with ``MARKET_NAME`` and ``VRAM: SIZE``."""
    out: list[GpuMemory] = []
    cur: dict[str, Any] | None = None
    section = ""
    for raw in text.splitlines():
        if not raw.strip():
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        key, _, value = raw.strip().partition(":")
        value = value.strip()
        if indent == 0 and key == "GPU":
            if cur is not None:
                out.append(_static_gpu(cur))
            cur = {"index": int(value)}
            continue
        if cur is None:
            continue
        if indent == 4:
            section = key
        elif indent == 8 and section == "ASIC" and key == "MARKET_NAME":
            cur["name"] = value
        elif indent == 8 and section == "VRAM" and key == "SIZE":
            cur["size"] = value
    if cur is not None:
        out.append(_static_gpu(cur))
    if not out:
        raise ValueError("amd-smi static text: no 'GPU: N' block")
    return out


def _static_gpu(d: dict[str, Any]) -> GpuMemory:
    return GpuMemory(
        index=d["index"],
        source="amd-smi static",
        name=d.get("name"),
        vram_total=_amd_value(d["size"]) if "size" in d else None,
    )


def parse_amd_smi_version(text: str) -> dict[str, str]:
    """``amd-smi version``: ``AMDSMI Tool: X | AMDSMI Library version: Y | ROCm version: Z``."""
    out = {}
    for part in text.strip().split("|"):
        k, sep, v = part.partition(":")
        if sep:
            out[k.strip()] = v.strip()
    if "ROCm version" not in out and "AMDSMI Tool" not in out:
        raise ValueError(f"not amd-smi version output: {text.strip()[:60]!r}")
    return out


# ----------------------------------------------------------------------------- rocm-smi

_ROCM_KEYS = {
    "VRAM Total Memory (B)": "vram_total",
    "VRAM Total Used Memory (B)": "vram_used",
    "GTT Total Memory (B)": "gtt_total",
    "GTT Total Used Memory (B)": "gtt_used",
}


def _rocm_card(index: int, fields: dict[str, str], source: str) -> GpuMemory:
    vals: dict[str, Any] = {}
    for k, attr in _ROCM_KEYS.items():
        v = fields.get(k)
        if v is not None and str(v).strip().isdigit():
            vals[attr] = int(str(v).strip())
    name = fields.get("Card Series") or fields.get("Card series") or fields.get("Device Name")
    util = fields.get("GPU use (%)")
    gfx = fields.get("GFX Version")
    return GpuMemory(
        index=index,
        source=source,
        name=name,
        util_pct=float(util) if util is not None and _isnum(util) else None,
        gfx_target=gfx if gfx and gfx.startswith("gfx") else None,
        **vals,
    )


def _isnum(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def parse_rocm_smi_json(text: str) -> list[GpuMemory]:
    """``rocm-smi ... --json``: ``{"card0": {"VRAM Total Memory (B)": "...", ...}, "system": {...}}``.

    rocm-smi sometimes prints a blank line (or warnings) before the JSON: start at the first ``{``.
    """
    start = text.find("{")
    if start < 0:
        raise ValueError("rocm-smi: no JSON object in the output")
    data = json.loads(text[start:])
    if not isinstance(data, dict):
        raise ValueError("rocm-smi JSON: expected an object keyed by card")
    out = []
    for key in sorted((k for k in data if re.fullmatch(r"card\d+", k)), key=lambda k: int(k[4:])):
        if isinstance(data[key], dict):
            out.append(_rocm_card(int(key[4:]), {k: str(v) for k, v in data[key].items()}, "rocm-smi"))
    if not out:
        raise ValueError("rocm-smi JSON: no card entries")
    return out


_TEXT_LINE = re.compile(r"^GPU\[(\d+)\]\s*:\s*(.+?):\s*(.*?)\s*$")


def parse_rocm_smi_text(text: str) -> list[GpuMemory]:
    """rocm-smi's text report: ``GPU[0]<tabs or spaces>: VRAM Total Memory (B): 123`` lines."""
    cards: dict[int, dict[str, str]] = {}
    for line in text.splitlines():
        m = _TEXT_LINE.match(line.strip())
        if m:
            cards.setdefault(int(m.group(1)), {})[m.group(2).strip()] = m.group(3)
    out = [_rocm_card(i, f, "rocm-smi") for i, f in sorted(cards.items())]
    if not any(g.vram_total is not None for g in out):
        raise ValueError("rocm-smi text: no 'VRAM Total Memory (B)' lines")
    return out


def parse_rocm_smi_csv(text: str) -> list[GpuMemory]:
    """``rocm-smi ... --csv``: a header row starting ``device`` and one ``cardN`` row per GPU."""
    rows = list(csv.reader(io.StringIO(text.strip())))
    if not rows or not rows[0] or rows[0][0] != "device":
        raise ValueError("rocm-smi CSV: expected a header row starting with 'device'")
    header = rows[0]
    out = []
    for row in rows[1:]:
        if not row or not re.fullmatch(r"card\d+", row[0]):
            continue
        cells = dict(zip(header, row, strict=False))  # a short row: its missing cells stay absent
        out.append(_rocm_card(int(row[0][4:]), cells, "rocm-smi"))
    if not out:
        raise ValueError("rocm-smi CSV: no card rows")
    return out


# ----------------------------------------------------------------------------- dmesg


@dataclass(slots=True)
class DmesgAmdgpu:
    vram_total: int | None = None
    gtt_total: int | None = None
    warnings: list[str] = field(default_factory=list)


def parse_dmesg_amdgpu(text: str) -> DmesgAmdgpu:
    """amdgpu boot lines: ``NNNNM of VRAM memory ready``, ``NNNNM of GTT memory ready``, and the
    module-parameter warnings an operator tuning GTT on an APU needs to see."""
    out = DmesgAmdgpu()
    for line in text.splitlines():
        if m := re.search(r"(\d+)M of VRAM memory ready", line):
            out.vram_total = int(m.group(1)) * MIB
        elif m := re.search(r"(\d+)M of GTT memory ready", line):
            out.gtt_total = int(m.group(1)) * MIB
        elif "deprecated" in line or "unknown parameter" in line:
            out.warnings.append(re.sub(r"^\[\s*[\d.]+\]\s*", "", line).strip())
    return out
