"""GGUF files for tests, built from the documented format and checked with gguf-py where it matters."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

__all__ = ["array_first_gguf", "lab_models_dir"]


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


def lab_models_dir(d: Path, unknown_arch_gguf: Path) -> Path:
    """Model files on the test "host": the real Gemma 3 270M GGUF (a symlink), a tiny one declaring
    ``gemma4`` (written with gguf-py) and the ``gemma9`` one the real llama.cpp loader rejects."""
    import gguf
    import numpy as np

    from forge_tui.launch import resolve_gguf

    d.mkdir(parents=True, exist_ok=True)
    (d / "gemma-3-270m.gguf").symlink_to(resolve_gguf("@gemma3-270m"))
    w = gguf.GGUFWriter(str(d / "gemma-4-tiny.gguf"), "gemma4")
    w.add_tensor("x", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    shutil.copy(unknown_arch_gguf, d / "gemma9-tiny.gguf")
    return d
