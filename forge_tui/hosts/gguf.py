"""Read ``general.architecture`` from a GGUF header without the weights, and write a probe GGUF.

Layout (little-endian): magic ``GGUF``, u32 version (2 or 3; version 1 used u32 lengths and is
refused), u64 tensor count, u64 kv count, then key/value pairs: u64 key length + UTF-8 key, u32
value type, value. Arrays (u32 item type + u64 count + items) are stepped over; a tokenizer's
string array can run to megabytes, so the parser says how many more bytes it needs rather than
guessing. Over SSH only the first KB of a multi-GB file cross the wire (``head -c``), and more is
fetched only when the architecture key sits behind a long array.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .transport import Transport

__all__ = [
    "FIRST_READ_BYTES",
    "MAX_READ_BYTES",
    "GgufError",
    "GgufHeader",
    "NeedMoreData",
    "parse_header",
    "probe_gguf",
    "read_remote_header",
]

MAGIC = b"GGUF"
FIRST_READ_BYTES = 64 * 1024
MAX_READ_BYTES = 64 * 1024 * 1024

# value type -> fixed size in bytes (strings and arrays are variable)
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_WANTED = ("general.architecture", "general.name", "general.file_type")


class GgufError(Exception):
    """Not a GGUF file, or a corrupt header."""


class NeedMoreData(Exception):
    """The header continues past the bytes given; at least ``needed`` bytes are required."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"need at least {needed} bytes")
        self.needed = needed


@dataclass(frozen=True, slots=True)
class GgufHeader:
    version: int
    tensor_count: int
    kv_count: int
    architecture: str | None
    name: str | None = None
    file_type: int | None = None
    bytes_read: int = 0  # how far into the file the parser had to go


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise NeedMoreData(end)
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def skip(self, n: int) -> None:
        end = self.pos + n
        if end > len(self.data):
            raise NeedMoreData(end)
        self.pos = end

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def string(self, limit: int = 1 << 20) -> str:
        n = self.u64()
        if n > limit:
            raise GgufError(f"string of {n} bytes at offset {self.pos - 8}: corrupt header")
        return self.take(n).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        n = self.u64()
        if n > MAX_READ_BYTES:
            raise GgufError(f"string of {n} bytes at offset {self.pos - 8}: corrupt header")
        self.skip(n)


def _skip_value(cur: _Cursor, vtype: int) -> None:
    if vtype in _FIXED:
        cur.skip(_FIXED[vtype])
    elif vtype == _STRING:
        cur.skip_string()
    elif vtype == _ARRAY:
        itype = cur.u32()
        count = cur.u64()
        if itype in _FIXED:
            cur.skip(_FIXED[itype] * count)
        elif itype == _STRING:
            for _ in range(count):
                cur.skip_string()
        elif itype == _ARRAY:
            for _ in range(count):
                _skip_value(cur, _ARRAY)
        else:
            raise GgufError(f"unknown array item type {itype} at offset {cur.pos}")
    else:
        raise GgufError(f"unknown value type {vtype} at offset {cur.pos}")


def parse_header(data: bytes, *, stop_early: bool = True) -> GgufHeader:
    """Parse the key/value part of a GGUF header from ``data`` (a prefix of the file).

    With ``stop_early`` the parser returns as soon as the wanted keys are found (the usual case:
    ``general.architecture`` is the first key). Raises ``NeedMoreData`` with the byte count
    required, or ``GgufError`` for something that is not a GGUF file.
    """
    cur = _Cursor(data)
    magic = cur.take(4)
    if magic != MAGIC:
        raise GgufError(f"not a GGUF file (magic {magic!r}, expected b'GGUF')")
    version = cur.u32()
    if version not in (2, 3):
        raise GgufError(f"unsupported GGUF version {version} (2 and 3 are read)")
    tensor_count = cur.u64()
    kv_count = cur.u64()
    if kv_count > 1_000_000:
        raise GgufError(f"implausible key/value count {kv_count}: corrupt header")
    found: dict[str, object] = {}
    for _ in range(kv_count):
        mark = cur.pos
        try:
            key = cur.string(limit=65536)
            vtype = cur.u32()
            if key in _WANTED and (vtype == _STRING or vtype in _FMT):
                if vtype == _STRING:
                    found[key] = cur.string()
                else:
                    found[key] = struct.unpack(_FMT[vtype], cur.take(_FIXED[vtype]))[0]
            else:
                _skip_value(cur, vtype)
        except NeedMoreData:
            # Once the architecture is known, the rest (name, file type) is a bonus, not worth a read.
            if stop_early and "general.architecture" in found:
                cur.pos = mark
                break
            raise
        if stop_early and all(k in found for k in _WANTED):
            break
    arch = found.get("general.architecture")
    name = found.get("general.name")
    ftype = found.get("general.file_type")
    return GgufHeader(
        version=version,
        tensor_count=tensor_count,
        kv_count=kv_count,
        architecture=str(arch) if arch is not None else None,
        name=str(name) if name is not None else None,
        file_type=int(ftype) if isinstance(ftype, int) else None,
        bytes_read=cur.pos,
    )


async def read_remote_header(transport: Transport, path: str, *, timeout: float = 30.0) -> GgufHeader:
    """Read a GGUF header over ``transport`` with ``head -c``: first 64 KiB, more only if needed."""
    size = FIRST_READ_BYTES
    while True:
        res = await transport.run(["head", "-c", str(size), path], timeout)
        if not res.ok:
            raise GgufError(f"cannot read {path}: {res.reason(3) or f'exit status {res.exit_status}'}")
        try:
            return parse_header(res.stdout)
        except NeedMoreData as more:
            if len(res.stdout) < size:
                raise GgufError(f"{path}: file ends inside the GGUF header ({len(res.stdout)} bytes)") from None
            if size >= MAX_READ_BYTES:
                raise GgufError(
                    f"{path}: general.architecture not found in the first {MAX_READ_BYTES // (1024 * 1024)} MiB"
                ) from None
            size = min(MAX_READ_BYTES, max(more.needed + FIRST_READ_BYTES, size * 4))


def probe_gguf(architecture: str) -> bytes:
    """A ~50-byte GGUF (v3, no tensors) that only declares ``general.architecture``.

    Given to a llama.cpp binary, the loader looks the architecture up before anything else:
    an unknown one fails with ``unknown model architecture: '<arch>'``; a known one gets past
    that lookup and fails on the missing hyperparameters (``key not found in model: <arch>.*``).
    Nothing is loaded or allocated, so this is a cheap, honest test of the binary itself.
    """
    key = b"general.architecture"
    val = architecture.encode("utf-8")
    return (
        MAGIC
        + struct.pack("<IQQ", 3, 0, 1)
        + struct.pack("<Q", len(key))
        + key
        + struct.pack("<I", _STRING)
        + struct.pack("<Q", len(val))
        + val
    )
