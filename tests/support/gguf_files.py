"""GGUF files for tests, built from the documented format and checked with gguf-py where it matters."""

from __future__ import annotations

import struct
from pathlib import Path

__all__ = ["array_first_gguf"]


def _s(text: str) -> bytes:
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def array_first_gguf(path: Path, arch: str, n_tokens: int = 40000) -> Path:
    """A GGUF whose first key is a long string array (a tokenizer), with the architecture after it:
    a reader must step over ~0.5 MB of strings and ask for more bytes."""
    kv = _s("tokenizer.ggml.tokens") + struct.pack("<I", 9) + struct.pack("<IQ", 8, n_tokens)
    kv += b"".join(_s(f"tok{i:06d}") for i in range(n_tokens))
    kv += _s("general.architecture") + struct.pack("<I", 8) + _s(arch)
    kv += _s("general.name") + struct.pack("<I", 8) + _s("array first")
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 3) + kv)
    return path
