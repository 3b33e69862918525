"""The console's keys as data: one place for the footer, the ``?`` screen and remapping.

Every binding has an id (``forge.<name>``) so an operator can remap it with
``ForgeApp(keymap={"forge.swap": "ctrl+s"})`` (Textual's keymap mechanism); the help screen
reads the same table, so it always shows the keys that are really bound. Operators write the
remaps in the catalog's ``keys:`` section; ``check_keymap`` validates them before the console starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from textual.binding import Binding, BindingType
from textual.keys import Keys, _character_to_key, key_to_character

__all__ = [
    "ALL_KEYS",
    "APP_KEYS",
    "FOOTER_FIRST",
    "HELP_KEYS",
    "MAIN_KEYS",
    "PANE_KEYS",
    "SCREEN_HELP",
    "KeySpec",
    "KeymapError",
    "bindings",
    "check_keymap",
    "leading_app_bindings",
]


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
    KeySpec(
        "forge.trial",
        "w",
        "trial",
        "Trial",
        "The trial scorecard: per trial role keep or roll back and why (r, R, p promote, w window).",
    ),
    KeySpec("forge.quit", "q", "request_quit", "Quit", "Quit; asks first when requests or jobs are still in flight."),
    KeySpec(
        "forge.evals",
        "e",
        "evals",
        "Evals",
        "Evals: run a shipped suite on the selected role (or against its previous model) through the gateway.",
        show=False,
    ),
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

# Keys of the other screens and dialogs (bound there, listed here for the help screen): (key, what).
SCREEN_HELP: tuple[tuple[str, str], ...] = (
    ("enter", "Requests pane: open the selected request whole (route, asked model, status, tokens, flags)."),
    ("home", "Requests pane: back to the newest row (the border counts rows that came while away: N new)."),
    ("esc", "Requests pane: clear the filter. Dialogs and screens: close / back."),
    ("c", "Job screen: cancel the running job (restores the previous build); not offered once it has ended."),
    ("f", "Swap dialog: force the swap past a failed preflight (recorded in the audit log)."),
    ("y / n", "Confirmations: yes / no."),
    ("enter", "Audit log: open the selected change whole (before and after in full)."),
    ("f5", "Audit log: reload."),
)


def bindings(specs: tuple[KeySpec, ...]) -> list[BindingType]:
    return [Binding(s.key, s.action, s.label, show=s.show, id=s.id) for s in specs]


# The footer lists the focused widget's keys, then the screen's, then the app's: at 80 columns the
# app's ? and q fell off the end. Screens repeat them first (same id, so a remap moves both copies).
FOOTER_FIRST: tuple[str, ...] = ("forge.help", "forge.quit")


def leading_app_bindings() -> list[BindingType]:
    """Copies of the app keys that must always show in the footer, for the front of a screen's BINDINGS."""
    return [Binding(s.key, f"app.{s.action}", s.label, show=True, id=s.id) for s in APP_KEYS if s.id in FOOTER_FIRST]


class KeymapError(ValueError):
    """A ``keys:`` remap names no binding, no key, or a key another binding already holds."""


_MODIFIERS = frozenset({"ctrl", "shift", "alt", "meta", "super", "hyper"})
_KEY_NAMES = frozenset(k.value.rsplit("+", 1)[-1] for k in Keys)


def _key(raw: str, where: str) -> str:
    """One key in Textual's spelling (``?`` -> ``question_mark``); KeymapError when it names none."""
    *mods, base = raw.strip().split("+")
    bad = [m for m in mods if m.lower() not in _MODIFIERS]
    if bad or not base:
        raise KeymapError(f"{where}: {raw!r} is not a key (modifiers: {', '.join(sorted(_MODIFIERS))})")
    if len(base) == 1:
        base = base if base.isalnum() else _character_to_key(base)  # Textual's own name for the character
    elif base not in _KEY_NAMES and key_to_character(base) is None:
        raise KeymapError(f"{where}: {raw!r} is not a key Textual knows (e.g. ctrl+s, f5, question_mark)")
    return "+".join([*(m.lower() for m in mods), base])


def check_keymap(keys: Mapping[str, str]) -> dict[str, str]:
    """The catalog's ``keys:`` as Textual keymap (id -> keys), or KeymapError naming the bad entry.

    Every id must be one of ``HELP_KEYS``; no two bindings of the main screen may end on one key.
    """
    known = {spec.id: spec for spec in HELP_KEYS}
    out: dict[str, str] = {}
    for bid, raw in keys.items():
        if bid not in known:
            raise KeymapError(f"keys.{bid}: unknown binding id (known: {', '.join(sorted(known))})")
        out[bid] = ",".join(_key(part, f"keys.{bid}") for part in raw.split(","))
    holder: dict[str, str] = {}
    for spec in HELP_KEYS:
        for key in out.get(spec.id, spec.key).split(","):
            other = holder.setdefault(key, spec.id)
            if other != spec.id:
                raise KeymapError(f"keys: {other} and {spec.id} would both be on {key!r}; give one another key")
    return out
