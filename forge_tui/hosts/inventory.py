"""GGUF files under a host's model directories: path, size and the architecture from the header.

Listing is one ``find`` over SSH; each header is a ``head -c`` of the first 64 KiB (more only when
the architecture sits behind a long array). Results are cached by (path, size), so a periodic
refresh reads only new or changed files.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .gguf import GgufError, read_remote_header
from .transport import Transport

__all__ = ["LIST_SCRIPT", "GgufFile", "Inventory", "expand_home", "list_gguf", "remote_home"]

# "file<TAB>size<TAB>path" per GGUF (symlinks followed), "missing<TAB>dir" per absent directory.
LIST_SCRIPT = r"""
for d in "$@"; do
  if [ ! -d "$d" ]; then printf 'missing\t%s\n' "$d"; continue; fi
  find -L "$d" -type f -name '*.gguf' -exec sh -c 'for f; do printf "file\t%s\t%s\n" "$(wc -c < "$f" | tr -d " ")" "$f"; done' forge-size {} +
done
exit 0
"""


@dataclass(frozen=True, slots=True)
class GgufFile:
    path: str
    size_bytes: int
    architecture: str | None = None
    name: str | None = None
    error: str | None = None  # unreadable or not a GGUF

    @property
    def size_gb(self) -> float:
        return self.size_bytes / 1e9


async def remote_home(transport: Transport, timeout: float = 10.0) -> str:
    res = await transport.run(["sh", "-c", 'printf "%s" "$HOME"'], timeout)
    home = res.out.strip()
    if not res.ok or not home.startswith("/"):
        raise GgufError(f"{transport.host}: cannot read $HOME ({res.reason(2) or res.exit_status})")
    return home


def expand_home(path: str, home: str) -> str:
    """``~`` and ``~/x`` expanded with the remote $HOME (quoted arguments never reach a tilde expansion)."""
    if path == "~":
        return home
    if path.startswith("~/"):
        return home.rstrip("/") + path[1:]
    return path


async def list_gguf(
    transport: Transport, dirs: list[str], timeout: float = 60.0
) -> tuple[list[tuple[str, int]], list[str]]:
    """(path, size) of every GGUF under ``dirs`` (already expanded), and the dirs that do not exist."""
    if not dirs:
        return [], []
    res = await transport.run(["sh", "-c", LIST_SCRIPT, "forge-list", *dirs], timeout)
    files: list[tuple[str, int]] = []
    missing: list[str] = []
    for line in res.out.splitlines():
        parts = line.split("\t", 2)
        if parts[0] == "file" and len(parts) == 3 and parts[1].isdigit():
            files.append((parts[2], int(parts[1])))
        elif parts[0] == "missing" and len(parts) == 2:
            missing.append(parts[1])
    return sorted(files), missing


class Inventory:
    """One host's GGUF inventory with a header cache."""

    def __init__(self, transport: Transport, *, concurrency: int = 4) -> None:
        self.transport = transport
        self._cache: dict[tuple[str, int], GgufFile] = {}
        self._sem = asyncio.Semaphore(concurrency)
        self.files: list[GgufFile] = []
        self.missing_dirs: list[str] = []
        self.refreshed_at: float | None = None

    async def refresh(self, dirs: list[str], *, timeout: float = 60.0) -> list[GgufFile]:
        listed, self.missing_dirs = await list_gguf(self.transport, dirs, timeout)
        self.files = list(await asyncio.gather(*(self._file(p, s, timeout) for p, s in listed)))
        self._cache = {(f.path, f.size_bytes): f for f in self.files}
        self.refreshed_at = asyncio.get_running_loop().time()
        return self.files

    async def _file(self, path: str, size: int, timeout: float) -> GgufFile:
        hit = self._cache.get((path, size))
        if hit is not None:
            return hit
        async with self._sem:
            try:
                h = await read_remote_header(self.transport, path, timeout=timeout)
                return GgufFile(path, size, h.architecture, h.name)
            except GgufError as exc:
                return GgufFile(path, size, error=str(exc))

    def find(self, path: str) -> GgufFile | None:
        return next((f for f in self.files if f.path == path), None)
