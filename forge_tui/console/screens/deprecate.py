"""Ask for the end of a deprecated model's rollback window (its Sunset date)."""

from __future__ import annotations

import datetime as dt

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Input, Label, Static

__all__ = ["DeprecateScreen", "SunsetDate", "parse_sunset"]


def parse_sunset(text: str, today: dt.date | None = None) -> dt.date:
    """A YYYY-MM-DD date that is not in the past; ValueError says what is wrong."""
    try:
        date = dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text.strip() or 'empty'!r} is not a date like 2030-01-31") from None
    if len(text.strip()) != 10:
        raise ValueError("write the date as YYYY-MM-DD")
    if date < (today or dt.date.today()):
        raise ValueError(f"{date.isoformat()} is in the past")
    return date


class SunsetDate(Validator):
    def validate(self, value: str) -> ValidationResult:
        try:
            parse_sunset(value)
        except ValueError as exc:
            return self.failure(str(exc))
        return self.success()


class DeprecateScreen(ModalScreen[str | None]):
    """Returns the sunset date (ISO) or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="deprecate.cancel")]

    def __init__(self, model: str, *, default: str | None, roles: list[str], origin: str = "") -> None:
        super().__init__()
        self._origin = origin  # where the model was picked, said in the title
        self._model = model
        self._default = default
        self._roles = roles

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            where = f" ({self._origin})" if self._origin else ""
            yield Label(f"Deprecate {self._model}{where}", classes="dialog-title", markup=False)
            used = f" It still holds: {', '.join(self._roles)}." if self._roles else ""
            yield Static(
                "Deprecated models keep answering explicit requests, with Deprecation and Sunset headers."
                f"{used}\nEnd of the rollback window (YYYY-MM-DD):",
                classes="dialog-body",
                markup=False,
            )
            yield Input(
                value=self._default or "",
                placeholder="YYYY-MM-DD",
                id="sunset",
                validators=[SunsetDate()],
                validate_on=["changed", "submitted"],
            )
            yield Static("", id="sunset-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Deprecate", id="ok", variant="warning")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Changed, "#sunset")
    def _changed(self, event: Input.Changed) -> None:
        result = event.validation_result
        self.query_one("#sunset-error", Static).update(
            "" if result is None or result.is_valid else "; ".join(result.failure_descriptions)
        )

    @on(Input.Submitted, "#sunset")
    def _submitted(self) -> None:
        self._try_accept()

    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        self._try_accept()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _try_accept(self) -> None:
        text = self.query_one(Input).value
        try:
            date = parse_sunset(text)
        except ValueError as exc:
            self.query_one("#sunset-error", Static).update(str(exc))
            self.query_one(Input).focus()
            return
        self.dismiss(date.isoformat())
