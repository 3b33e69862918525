"""Models pane: id, family, host, state (hot and cold look different), roles, memory."""

from __future__ import annotations

from rich.text import Text

from ...schema import Snapshot
from ..format import state_text
from ._table import Row, SnapshotTable

__all__ = ["ModelsTable"]


class ModelsTable(SnapshotTable):
    COLUMNS = ("Model", "State", "Roles", "Host", "Family", "Mem")

    TITLE = "Models"

    def view_of(self, snapshot: Snapshot) -> object:
        return snapshot.models

    def rows_for(self, snapshot: Snapshot) -> list[Row]:
        rows: list[Row] = []
        for m in snapshot.models:
            state = state_text(m.state, m.deprecated, m.sunset)
            if m.loaded:
                state.append(" loaded", style="green")
            name_style = "dim" if m.state == "disabled" else "bold" if m.roles else ""
            rows.append(
                (
                    m.id,
                    (
                        Text(m.id, style=name_style),
                        state,
                        Text(", ".join(m.roles) or "-", style="cyan" if m.roles else "dim"),
                        Text(", ".join(m.hosts) or "-"),
                        Text(m.family),
                        Text(f"{m.memory_gb:.1f}G" if m.memory_gb else "-", justify="right"),
                    ),
                )
            )
        return rows

    @property
    def selected_model(self) -> str | None:
        return self.selected_key
