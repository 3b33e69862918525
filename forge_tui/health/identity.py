"""Which catalog model a backend actually holds: matching the names a backend reports to the catalog.

A bare llama-server serves the one GGUF it was started with and ignores the request's ``model``
field; it reports that file as ``/props`` ``model_path`` and as the id of ``/v1/models`` (or an
``--alias``). llama-swap reports its config's model ids. A catalog placement matches when the
backend reports its upstream name (``placement.name`` or the model id), or a file whose name is
the catalog's ``gguf`` file name (paths differ between the catalog and the host: ``~`` vs
``/home/forge``, a symlinked model dir).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from ..config.models import Catalog

__all__ = ["BUNDLED_FILES", "answers_as", "known_names", "matches", "models_held"]

# The GGUF a bundled spec assembles to (the file name is the package's MODEL_NAME).
BUNDLED_FILES = {"@gemma3-270m": "gemma-3-270m-q4_k_m.gguf"}


def _file_name(name: str) -> str:
    return posixpath.basename(name.rstrip("/")).lower()


def known_names(catalog: Catalog, model_id: str, backend: str) -> frozenset[str]:
    """The names ``model_id`` may be reported by on ``backend``: upstream name, id, GGUF path and file name."""
    m = catalog.models[model_id]
    out = {model_id}
    for p in m.placements:
        if p.backend == backend:
            out.add(p.name or model_id)
    if m.gguf:
        out.add(BUNDLED_FILES.get(m.gguf, m.gguf))
    return frozenset(out)


def matches(reported: Iterable[str], names: Iterable[str]) -> bool:
    """True when one reported name is one of ``names``, exactly or by GGUF file name."""
    rep = set(reported)
    wanted = set(names)
    if rep & wanted:
        return True
    files = {_file_name(n) for n in wanted if n.lower().endswith(".gguf")}
    return bool(files and {_file_name(r) for r in rep} & files)


def models_held(catalog: Catalog, backend: str, reported: Iterable[str]) -> list[str]:
    """Catalog model ids placed on ``backend`` that the reported names match."""
    rep = list(reported)
    return sorted(
        mid
        for mid, m in catalog.models.items()
        if any(p.backend == backend for p in m.placements) and matches(rep, known_names(catalog, mid, backend))
    )


def answers_as(catalog: Catalog) -> dict[str, frozenset[str]]:
    """model id -> every name a backend placing it may put in an answer's ``model`` field (for smoke)."""
    out: dict[str, frozenset[str]] = {}
    for mid, m in catalog.models.items():
        names: set[str] = set()
        for p in m.placements:
            names |= known_names(catalog, mid, p.backend)
        out[mid] = frozenset(names)
    return out
