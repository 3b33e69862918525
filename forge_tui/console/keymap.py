"""The console's keys as data: one place for the footer, the ``?`` screen and remapping.

Every binding has an id (``forge.<name>``) so an operator can remap it with
``ForgeApp(keymap={"forge.swap": "ctrl+s"})`` (Textual's keymap mechanism); the help screen
reads the same table, so it always shows the keys that are really bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding

__all__ = ["ALL_KEYS", "APP_KEYS", "HELP_KEYS", "MAIN_KEYS", "PANE_KEYS", "KeySpec", "bindings"]


@dataclass(frozen=True, slots=True)
class KeySpec:
    id: str
    key: str
    action: str
    label: str  # short, for the footer
    help: str  # one sentence, for the help screen
    show: bool = True
    display: str | None = None  # how the key is written on the help screen


APP_KEYS: tuple[KeySpec, ...] = (
    KeySpec("forge.help", "question_mark", "help", "Help", "This screen: every key and what it does.", display="?"),
    KeySpec("forge.audit", "a", "audit", "Audit", "The audit log of every change: who, when, before, after."),
    KeySpec("forge.quit", "q", "request_quit", "Quit", "Quit; asks first when requests or jobs are still in flight."),
)

MAIN_KEYS: tuple[KeySpec, ...] = (
    KeySpec(
        "forge.swap",
        "s",
        "swap",
        "Swap",
        "Swap the selected role to another model that fits it (preflight shown, Force to override).",
    ),
    KeySpec("forge.rollback", "r", "rollback", "Rollback", "Roll the selected role back to its previous model."),
    KeySpec(
        "forge.rollback-trial",
        "R",
        "rollback_trial",
        "Rollback all",
        "Roll back every role changed in the current trial, in one go, after a confirmation.",
    ),
    KeySpec(
        "forge.deprecate",
        "d",
        "deprecate",
        "Deprecate",
        "Toggle deprecation of the selected model (asks for the rollback-window date).",
    ),
    KeySpec("forge.smoke", "t", "smoke", "Smoke", "Smoke the selected role through the gateway's real HTTP port."),
    KeySpec("forge.smoke-all", "T", "smoke_all", "Smoke all", "Smoke every role through the gateway."),
    KeySpec(
        "forge.rebuild",
        "b",
        "job('rebuild')",
        "Rebuild",
        "Rebuild llama.cpp on the selected host (backup, build, verify, restart, smoke; restores on failure).",
    ),
    KeySpec(
        "forge.verify",
        "v",
        "job('verify')",
        "Verify",
        "Verify the selected host: architecture check and regression smoke, no build.",
    ),
    KeySpec("forge.jobs", "j", "job_log", "Job log", "Open the log of the latest job (of the selected host if any)."),
    KeySpec(
        "forge.filter", "slash", "filter", "Filter", "Filter the request tail (role, model, status...).", display="/"
    ),
    KeySpec(
        "forge.pane-next",
        "right_square_bracket",
        "cycle_pane(1)",
        "Next pane",
        "Narrow terminals: show the next pane.",
        show=False,
        display="]",
    ),
    KeySpec(
        "forge.pane-prev",
        "left_square_bracket",
        "cycle_pane(-1)",
        "Prev pane",
        "Narrow terminals: show the previous pane.",
        show=False,
        display="[",
    ),
)

ALL_KEYS: tuple[KeySpec, ...] = APP_KEYS + MAIN_KEYS

# Keys bound on a pane (active while it has focus); listed on the help screen too.
PANE_KEYS: tuple[KeySpec, ...] = (
    KeySpec(
        "forge.latency.group",
        "g",
        "cycle_group",
        "Group by",
        "Latency pane (focused): group the chart by role, model or host.",
    ),
)

HELP_KEYS: tuple[KeySpec, ...] = ALL_KEYS + PANE_KEYS


def bindings(specs: tuple[KeySpec, ...]) -> list[Binding]:
    return [Binding(s.key, s.action, s.label, show=s.show, id=s.id) for s in specs]
