"""Command palette: every console action by name, for any role, model or host in the snapshot."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from .app import ForgeApp

__all__ = ["ForgeCommands", "commands_for"]

Command = tuple[str, Callable[[], None], str]


def commands_for(app: ForgeApp) -> Iterator[Command]:
    """What can be done now; depends on the latest snapshot (roles, models, hosts, trial)."""
    snap = app.snapshot
    if snap is not None:
        for role in snap.roles:
            yield f"Swap role {role.name}", partial(app.begin_swap, role.name), f"now {role.model}"
            if role.previous:
                yield (
                    f"Roll back role {role.name}",
                    partial(app.begin_rollback, role.name),
                    f"{role.model} -> {role.previous}",
                )
            yield f"Smoke role {role.name}", partial(app.begin_smoke, [role.name]), "one request through the gateway"
        if any(r.in_trial and (r.baseline or r.previous) not in (None, r.model) for r in snap.roles):
            yield "Roll back the whole trial", app.begin_rollback_trial, "every role changed in the trial"
        for model in snap.models:
            if model.deprecated:
                yield (
                    f"Remove deprecation of {model.id}",
                    partial(app.begin_toggle_deprecation, model.id),
                    f"sunset {model.sunset or 'unset'}",
                )
            else:
                yield (
                    f"Deprecate model {model.id}",
                    partial(app.begin_toggle_deprecation, model.id),
                    "asks for the rollback-window date",
                )
        for host in snap.hosts:
            yield (
                f"Rebuild llama.cpp on {host.name}",
                partial(app.begin_job, "rebuild", host.name),
                "backup, build, verify, restart, smoke",
            )
            yield f"Verify host {host.name}", partial(app.begin_job, "verify", host.name), "architecture check + smoke"
    yield "Smoke every role", partial(app.begin_smoke, None), "T"
    yield "Audit log", app.action_audit, "a"
    yield "Trial scorecard", app.action_trial, "w"
    yield "Keys (help)", app.action_help, "?"


class ForgeCommands(Provider):
    @property
    def _forge(self) -> ForgeApp:
        return cast("ForgeApp", self.app)

    async def discover(self) -> Hits:
        for name, run, help_text in commands_for(self._forge):
            yield DiscoveryHit(name, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, run, help_text in commands_for(self._forge):
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), run, help=help_text)
