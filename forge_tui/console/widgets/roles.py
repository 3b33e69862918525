"""Roles pane: role -> model, previous route, trial flag and rollback deadline (the s/r/t table)."""

from __future__ import annotations

from rich.text import Text

from ...schema import Snapshot
from ._table import Row, SnapshotTable

__all__ = ["RolesTable"]


class RolesTable(SnapshotTable):
    COLUMNS = ("Role", "Model", "Previous", "Trial until")

    TITLE = "Roles"

    def view_of(self, snapshot: Snapshot) -> object:
        return snapshot.roles

    def rows_for(self, snapshot: Snapshot) -> list[Row]:
        rows: list[Row] = []
        for role in snapshot.roles:
            # Only trial roles have a rollback deadline; the others show a dash.
            if role.in_trial:
                trial = Text(role.rollback_by or "in trial", style="bold yellow")
            else:
                trial = Text("-", style="dim")
            rows.append(
                (
                    role.name,
                    (
                        Text(role.name, style="bold"),
                        Text(role.model, style="bold cyan"),
                        Text(role.previous or "-", style="" if role.previous else "dim"),
                        trial,
                    ),
                )
            )
        return rows

    @property
    def selected_role(self) -> str | None:
        return self.selected_key
