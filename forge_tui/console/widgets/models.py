"""Models pane: id, state (from the catalog and the backends' health), memory, family, roles, host.

The catalog says a model is hot; only the backends can say it is being served. When none of the
backends on its hosts is ready the state column says ``✖ down`` (``◌ starting`` while one loads),
with the catalog state after it. At 80 columns cells are abbreviated so Family and Mem stay.
"""

from __future__ import annotations

from rich.text import Text

from ...schema import ModelInfo, Snapshot
from ..format import state_text
from ._table import Row, SnapshotTable

__all__ = ["ModelsTable", "serving_health"]

NARROW = 110


def serving_health(model: ModelInfo, snap: Snapshot) -> str:
    """ready / starting / down / unknown: the best health among the backends that can serve it."""
    backends = [b for h in snap.hosts if h.name in model.hosts for b in h.backends]
    holding = [b for b in backends if model.id in b.loaded_models]
    pool = holding or backends
    healths = {b.health for b in pool}
    if not healths:
        return "unknown"
    for health in ("ready", "starting", "unknown"):
        if health in healths:
            return health
    return "down"


def _fit(text: str, limit: int | None) -> str:
    return text if limit is None or len(text) <= limit else text[: max(1, limit - 1)] + "…"


class ModelsTable(SnapshotTable):
    COLUMNS = ("Model", "State", "Mem", "Family", "Roles", "Host")

    TITLE = "Models"

    @property
    def narrow(self) -> bool:
        return 0 < self.size.width < NARROW

    def on_resize(self) -> None:
        self.refresh_rows()

    def view_of(self, snapshot: Snapshot) -> object:
        return (self.narrow, snapshot.models, [(h.name, h.backends) for h in snapshot.hosts])

    def rows_for(self, snapshot: Snapshot) -> list[Row]:
        narrow = self.narrow
        rows: list[Row] = []
        for m in snapshot.models:
            health = serving_health(m, snapshot)
            # "starting" only matters for a model kept loaded: a cold one is loaded on demand anyway.
            if (health == "down" and m.state != "disabled") or (health == "starting" and m.state == "hot"):
                state = Text(
                    "✖ down" if health == "down" else "◌ starting", style="bold red" if health == "down" else "yellow"
                )
                if not narrow:
                    state.append(f" ({m.state})", style="dim")
                if m.deprecated:
                    state.append(" dep" if narrow else " deprecated", style="bold red")
            elif narrow:
                state = state_text(m.state)
                if m.deprecated:  # "deprecated 2026-04-24" does not fit at 80 columns (the wide view has the date)
                    state.append(" dep", style="bold red")
                if m.loaded:
                    state.append(" ✓", style="green")
            else:
                state = state_text(m.state, m.deprecated, m.sunset)
                if m.loaded:
                    state.append(" loaded", style="green")
            name_style = "dim" if m.state == "disabled" else "bold" if m.roles else ""
            rows.append(
                (
                    m.id,
                    (
                        Text(_fit(m.id, 20 if narrow else None), style=name_style),
                        state,
                        Text(f"{m.memory_gb:.1f}G" if m.memory_gb else "-", justify="right"),
                        Text(_fit(m.family, 8 if narrow else None)),
                        Text(
                            _fit(", ".join(m.roles) or "-", 13 if narrow else None), style="cyan" if m.roles else "dim"
                        ),
                        Text(_fit(", ".join(m.hosts) or "-", 10 if narrow else None)),
                    ),
                )
            )
        return rows

    @property
    def selected_model(self) -> str | None:
        return self.selected_key
