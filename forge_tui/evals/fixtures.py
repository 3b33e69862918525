"""The shipped suites' fixtures, made deterministically by the project (``forge-tui eval fixtures``).

Images are drawn with Pillow and its bundled font (no system font, so the same Pillow draws the
same pixels anywhere); the short clip is spoken by espeak-ng; the 60 s clip (which the gateway
must refuse with 413) is silence written with the stdlib ``wave`` module. ``expected.json``
beside them holds each file's sha256 and the answers the suites assert, so a regenerated
fixture that differs is noticed (``--check``) rather than silently moving the benchmark.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

__all__ = ["EXPECTED_FILE", "FIXTURES_DIR", "FixtureError", "check_fixtures", "generate_fixtures"]

FIXTURES_DIR = Path(__file__).resolve().parent.parent / "data" / "evals" / "fixtures"
EXPECTED_FILE = "expected.json"

BAR_DATA = (("Jan", 23), ("Feb", 31), ("Mar", 18), ("Apr", 47), ("May", 29), ("Jun", 35))
CODE_LINES = (
    "import os",
    "",
    "def rotate_backups(path, keep=7):",
    '    """Delete all but the newest backups."""',
    "    files = sorted(os.listdir(path))",
    "    for old in files[:-keep]:",
    "        os.remove(os.path.join(path, old))",
    "    return len(files[:-keep])",
)
HUB = "switch-core"
SPOKES = ("furnace", "crucible", "anvil", "nas")
LONE = "printer"  # drawn but connected to nothing: a model that lists it did not read the lines
SPOKEN = "The backup on furnace finished at seven fifteen."


class FixtureError(Exception):
    """A fixture could not be made (e.g. espeak-ng missing); the message says what to install."""


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=9)
    return buf.getvalue()


def bar_chart() -> bytes:
    w, h = 640, 400
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((w // 2, 24), "Backup jobs per month", fill="black", font=_font(22), anchor="mm")
    base, top, left = h - 50, 70, 60
    d.line((left, base, w - 30, base), fill="black", width=2)
    d.line((left, base, left, top - 10), fill="black", width=2)
    peak = max(v for _, v in BAR_DATA)
    slot = (w - 30 - left) // len(BAR_DATA)
    for i, (month, v) in enumerate(BAR_DATA):
        x0 = left + i * slot + slot // 5
        x1 = x0 + slot * 3 // 5
        y = base - (base - top) * v // peak
        d.rectangle((x0, y, x1, base - 1), fill=(70, 110, 180), outline="black")
        d.text(((x0 + x1) // 2, y - 12), str(v), fill="black", font=_font(18), anchor="mm")
        d.text(((x0 + x1) // 2, base + 18), month, fill="black", font=_font(18), anchor="mm")
    return _png(img)


def code_screenshot() -> bytes:
    w, line_h = 720, 30
    h = 40 + line_h * len(CODE_LINES)
    img = Image.new("RGB", (w, h), (30, 30, 36))
    d = ImageDraw.Draw(img)
    font = _font(20)
    for i, text in enumerate(CODE_LINES):
        y = 20 + i * line_h
        d.text((14, y), f"{i + 1:>2}", fill=(110, 110, 120), font=font)
        colour = (255, 200, 110) if text.startswith(("def", "import")) else (220, 220, 220)
        d.text((60, y), text, fill=colour, font=font)
    return _png(img)


def topology() -> bytes:
    w, h = 640, 480
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.text((w // 2, 22), "Homelab network", fill="black", font=_font(22), anchor="mm")
    cx, cy = w // 2, h // 2 + 10
    spots = ((120, 120), (520, 120), (120, 380), (520, 380))
    for (x, y), _ in zip(spots, SPOKES, strict=True):
        d.line((cx, cy, x, y), fill=(60, 60, 60), width=3)
    boxes = [((cx, cy), HUB, (250, 220, 120)), *[(s, n, (190, 215, 245)) for s, n in zip(spots, SPOKES, strict=True)]]
    boxes.append(((cx, 440), LONE, (230, 230, 230)))
    for (x, y), name, fill in boxes:
        d.rounded_rectangle((x - 70, y - 22, x + 70, y + 22), radius=8, fill=fill, outline="black", width=2)
        d.text((x, y), name, fill="black", font=_font(18), anchor="mm")
    return _png(img)


def spoken_clip() -> bytes:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise FixtureError("espeak-ng is not installed (apt install espeak-ng) and the spoken clip needs it")
    proc = subprocess.run(
        [exe, "-v", "en-us", "-s", "150", "--stdout", SPOKEN], capture_output=True, timeout=60, check=False
    )
    if proc.returncode != 0 or not proc.stdout.startswith(b"RIFF"):
        raise FixtureError(f"espeak-ng failed: {proc.stderr.decode(errors='replace')[:300]}")
    return _fix_wav_sizes(proc.stdout)


def _fix_wav_sizes(data: bytes) -> bytes:
    """espeak-ng --stdout leaves the RIFF sizes unset (it cannot seek a pipe): rewrite the file whole."""
    with wave.open(io.BytesIO(data)) as r:
        params = r.getparams()
        frames = r.readframes(r.getnframes())
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setparams(params)
        w.writeframes(frames)
    return buf.getvalue()


def long_clip(seconds: int = 60, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(rate)
        w.writeframes(b"\x80" * (seconds * rate))  # 8-bit silence
    return buf.getvalue()


def _answers() -> dict[str, dict[str, Any]]:
    month, value = max(BAR_DATA, key=lambda mv: mv[1])
    return {
        "bar-chart.png": {"highest_month": month, "highest_value": value, "months": [m for m, _ in BAR_DATA]},
        "code.png": {"function": "rotate_backups", "language": "Python"},
        "topology.png": {"hub": HUB, "connected": list(SPOKES), "not_connected": [LONE]},
        "spoken.wav": {"text": SPOKEN, "host": "furnace", "time": "seven fifteen"},
        "long-60s.wav": {"seconds": 60, "expect_status": 413},
    }


MAKERS: dict[str, Callable[[], bytes]] = {
    "bar-chart.png": bar_chart,
    "code.png": code_screenshot,
    "topology.png": topology,
    "spoken.wav": spoken_clip,
    "long-60s.wav": long_clip,
}


def _manifest(blobs: dict[str, bytes]) -> dict[str, Any]:
    answers = _answers()
    return {
        name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "answers": answers[name]}
        for name, data in blobs.items()
    }


def generate_fixtures(out_dir: str | Path = FIXTURES_DIR) -> dict[str, Any]:
    """Write every fixture and expected.json into ``out_dir``; returns the manifest."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blobs = {name: make() for name, make in MAKERS.items()}
    for name, data in blobs.items():
        (out / name).write_bytes(data)
    manifest = _manifest(blobs)
    (out / EXPECTED_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def check_fixtures(out_dir: str | Path = FIXTURES_DIR) -> list[str]:
    """Differences between the files on disk, expected.json and what this code makes now ([] = all agree)."""
    d = Path(out_dir)
    try:
        stored = json.loads((d / EXPECTED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{d / EXPECTED_FILE}: unreadable ({exc})"]
    problems = []
    for name, make in MAKERS.items():
        want = stored.get(name, {}).get("sha256")
        try:
            on_disk = hashlib.sha256((d / name).read_bytes()).hexdigest()
        except OSError:
            problems.append(f"{name}: missing")
            continue
        if on_disk != want:
            problems.append(f"{name}: file differs from expected.json")
        if hashlib.sha256(make()).hexdigest() != on_disk:
            problems.append(f"{name}: regenerating gives different bytes here (Pillow / espeak-ng version?)")
        if stored.get(name, {}).get("answers") != _answers()[name]:
            problems.append(f"{name}: expected answers in expected.json differ from the generator's")
    return problems
