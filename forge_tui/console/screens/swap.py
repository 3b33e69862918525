"""Swap a role: pick a model that fits, see its preflight, then swap (or force past a failure)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rich.console import Group
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, OptionList, Static
from textual.widgets.option_list import Option

from ...control.base import ControlError
from ...schema import ModelInfo, PreflightCheck, PreflightResult, RoleInfo
from ..format import outcome_text, state_text

__all__ = ["SwapChoice", "SwapScreen", "ineligible_reason"]

Preflight = Callable[[str, str], Awaitable[PreflightResult]]


@dataclass(frozen=True, slots=True)
class SwapChoice:
    model: str
    force: bool
    # The preflight the operator was shown: the swap reuses it while fresh instead of running it again.
    preflight_id: str | None = None


def ineligible_reason(role: RoleInfo, model: ModelInfo) -> str:
    if model.state == "disabled":
        return "disabled"
    missing = [c for c in role.requires if c not in model.capabilities]
    if missing:
        return f"no {', '.join(missing)}"
    return "not offered by the gateway"


class SwapScreen(ModalScreen[SwapChoice | None]):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="swap.cancel"),
        Binding("f", "force", "Force swap", id="swap.force"),
    ]

    def __init__(
        self, role: RoleInfo, models: list[ModelInfo], eligible: list[str], preflight: Preflight, *, origin: str = ""
    ) -> None:
        super().__init__()
        self._origin = origin  # where the role was picked ("selected in Roles"), said in the title
        self._role = role
        self._models = models
        self._eligible = set(eligible)
        self._preflight = preflight
        self._picked: str | None = None
        self._result: PreflightResult | None = None

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        role = self._role
        with Vertical(classes="dialog dialog-wide"):
            where = f" ({self._origin})" if self._origin else ""
            yield Label(f"Swap role {role.name}{where}", classes="dialog-title", markup=False)
            yield Static(
                Text.assemble(
                    "now ",
                    (role.model, "bold cyan"),
                    "; it becomes the previous route. Needs: ",
                    (", ".join(role.requires) or "chat", "bold"),
                ),
                classes="dialog-body",
            )
            yield OptionList(*self._options(), id="swap-models")
            with VerticalScroll(id="preflight"):
                yield Static("Pick a model (Enter) to run its preflight.", id="preflight-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Swap", id="swap", variant="primary", disabled=True)
                yield Button("Force swap (f)", id="force", variant="error", disabled=True)
                yield Button("Cancel (esc)", id="cancel")

    def _options(self) -> list[Option]:
        options: list[Option] = []
        for m in sorted(self._models, key=lambda m: (m.id not in self._eligible or m.id == self._role.model, m.id)):
            label = Text(f"{m.id:<28} ", style="bold" if m.id in self._eligible else "dim")
            label.append_text(state_text(m.state, m.deprecated, m.sunset))
            label.append(f"  {', '.join(m.capabilities)}", style="dim")
            if m.id == self._role.model:
                label.append("  (current)", style="cyan")
                options.append(Option(label, id=m.id, disabled=True))
            elif m.id in self._eligible:
                options.append(Option(label, id=m.id))
            else:
                label.append(f"  ({ineligible_reason(self._role, m)})", style="red")
                options.append(Option(label, id=m.id, disabled=True))
        return options

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.focus()
        if any(m in self._eligible and m != self._role.model for m in (x.id for x in self._models)):
            options.highlighted = 0

    # ------------------------------------------------------------------ preflight
    @on(OptionList.OptionHighlighted, "#swap-models")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id != self._picked:
            self._picked = None
            self._result = None
            self._set_buttons()
            self.query_one("#preflight-body", Static).update("Enter runs the preflight for this model.")

    @on(OptionList.OptionSelected, "#swap-models")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self._picked = event.option.id
            self._result = None
            self._set_buttons()
            self.query_one("#preflight-body", Static).update(Text(f"preflight of {event.option.id}…", style="dim"))
            self._run_preflight(event.option.id)

    @work(exclusive=True, group="preflight", exit_on_error=False, name="preflight")
    async def _run_preflight(self, model: str) -> None:
        try:
            result = await self._preflight(self._role.name, model)
        except ControlError as exc:
            # Shown as a warning, not a block: the gateway runs the same preflight again on the swap
            # itself whenever it has a hosts service, and refuses there if a check fails.
            result = PreflightResult(
                role=self._role.name,
                model=model,
                checks=[PreflightCheck(name="preflight", outcome="warn", evidence=f"not available: {exc}")],
            )
        if model != self._picked:
            return
        self._result = result
        self.query_one("#preflight-body", Static).update(self._render_result(result))
        self._set_buttons()
        if result.blocked:
            self.query_one("#cancel", Button).focus()
        else:
            self.query_one("#swap", Button).focus()

    @staticmethod
    def _render_result(result: PreflightResult) -> Group:
        lines: list[Text] = []
        head = Text(f"preflight {result.model}" + (f" on {result.host}" if result.host else "") + ": ", style="bold")
        head.append(
            "BLOCKED (f forces, recorded in the audit log)" if result.blocked else "ok",
            style="bold red" if result.blocked else "bold green",
        )
        lines.append(head)
        if not result.checks:
            lines.append(Text("no checks apply to this model", style="dim"))
        for check in result.checks:
            line = Text("  ")
            line.append_text(outcome_text(check.outcome))
            line.append(f" {check.name}: ", style="bold")
            line.append(check.evidence)
            lines.append(line)
        return Group(*lines)

    def _set_buttons(self) -> None:
        ready = self._result is not None
        blocked = bool(self._result and self._result.blocked)
        self.query_one("#swap", Button).disabled = not ready or blocked
        self.query_one("#force", Button).disabled = not blocked
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "force":
            return bool(self._result and self._result.blocked)
        return True

    # ------------------------------------------------------------------ outcome
    @on(Button.Pressed, "#swap")
    def _swap(self) -> None:
        if self._picked and self._result and not self._result.blocked:
            self.dismiss(SwapChoice(self._picked, force=False, preflight_id=self._result.id))

    @on(Button.Pressed, "#force")
    def _force_pressed(self) -> None:
        self.action_force()

    def action_force(self) -> None:
        if self._picked and self._result and self._result.blocked:
            self.dismiss(SwapChoice(self._picked, force=True, preflight_id=self._result.id))

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @property
    def preflight_result(self) -> PreflightResult | None:
        return self._result
