"""Audio checks and multipart handling for the audio routes.

The duration cap is enforced from the WAV header alone (format chunk + data chunk size, or the
``fact`` chunk for compressed WAV), so a 31 s clip is refused before a byte is forwarded and
nothing is decoded.
"""

from __future__ import annotations

import binascii
import os
import struct
from dataclasses import dataclass
from typing import Any

from .errors import CallerError, PayloadTooLarge

__all__ = [
    "AudioUnreadable",
    "FormPart",
    "b64_audio_duration",
    "check_audio",
    "encode_multipart",
    "wav_duration",
]


# Data-chunk sizes writers use when they cannot seek back (pipes): 0, "unknown" (ffmpeg), sox's 0x7ffff000.
_STREAMED_SIZES = frozenset({0, 0xFFFFFFFF, 0x7FFFF000, 0x7FFFFFFF})


class AudioUnreadable(ValueError):
    """The bytes are not a WAV whose duration can be read from its header."""


def wav_duration(data: bytes, total_len: int | None = None) -> float:
    """Seconds of audio in a RIFF/WAVE file, from its header. ``total_len``: the full size when
    ``data`` is only a prefix (used when the data chunk declares no size, as streamed WAVs do)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        kind = "empty" if not data else f"starts with {data[:4]!r}"
        raise AudioUnreadable(f"not a WAV file (RIFF/WAVE header missing; {kind})")
    total = total_len if total_len is not None else len(data)
    pos = 12
    byte_rate = sample_rate = 0
    fact_frames: int | None = None
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + 16 > len(data):
                raise AudioUnreadable("WAV fmt chunk is truncated")
            _fmt, channels, sample_rate, byte_rate, _align, _bits = struct.unpack_from("<HHIIHH", data, body)
            if channels == 0 or sample_rate == 0 or byte_rate == 0:
                raise AudioUnreadable("WAV fmt chunk declares zero channels, sample rate or byte rate")
        elif cid == b"fact" and size >= 4 and body + 4 <= len(data):
            (fact_frames,) = struct.unpack_from("<I", data, body)
        elif cid == b"data":
            if not byte_rate:
                raise AudioUnreadable("WAV data chunk comes before its fmt chunk")
            if fact_frames is not None and fact_frames and sample_rate:
                return fact_frames / sample_rate
            if size in _STREAMED_SIZES:
                size = max(0, total - body)  # a WAV written to a pipe declares no real length: count what is there
            elif body + size > total:
                raise AudioUnreadable(
                    f"WAV header declares {size / byte_rate:.1f} s of audio but the file holds "
                    f"{max(0, total - body) / byte_rate:.1f} s (truncated or forged header)"
                )
            return float(size) / byte_rate
        pos = body + size + (size & 1)
    raise AudioUnreadable("WAV has no data chunk in its header")


def check_audio(data: bytes, max_seconds: float, *, what: str = "audio", total_len: int | None = None) -> float:
    """Duration of ``data``; 400 when unreadable, 413 when over ``max_seconds``."""
    if not data:
        raise CallerError(f"{what} is empty", param=what)
    try:
        seconds = wav_duration(data, total_len)
    except AudioUnreadable as exc:
        raise CallerError(
            f"{what} is unreadable: {exc}; send a WAV (RIFF/WAVE) file so its duration can be checked", param=what
        ) from None
    if seconds > max_seconds:
        raise PayloadTooLarge(
            f"{what} is {seconds:.1f} s long; this route accepts at most {max_seconds:g} s", param=what
        )
    return seconds


def b64_audio_duration(b64: Any, max_seconds: float, *, what: str = "audio") -> float:
    """Check base64 WAV audio: the whole string must decode (strictly), then its header is read."""
    if not isinstance(b64, str) or not b64:
        raise CallerError(f"{what} must be a non-empty base64 string", param=what)
    if b64.startswith("data:"):
        _, _, b64 = b64.partition(",")
    try:
        data = binascii.a2b_base64(b64, strict_mode=True)
    except (binascii.Error, ValueError):
        raise CallerError(f"{what} is not valid base64", param=what) from None
    return check_audio(data, max_seconds, what=what)


@dataclass(slots=True)
class FormPart:
    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None


def _quote(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


def encode_multipart(parts: list[FormPart]) -> tuple[bytes, str]:
    """Encode ``parts`` as multipart/form-data; returns (body, content type). Bytes, so it can be re-sent."""
    boundary = "forge-" + os.urandom(12).hex()
    out = bytearray()
    for p in parts:
        out += f"--{boundary}\r\n".encode()
        disp = f'form-data; name="{_quote(p.name)}"'
        if p.filename is not None:
            disp += f'; filename="{_quote(p.filename)}"'
        out += f"Content-Disposition: {disp}\r\n".encode()
        if p.content_type:
            out += f"Content-Type: {p.content_type}\r\n".encode()
        out += b"\r\n" + p.data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"
