"""The top line: mode, gateway URL, trial and deadline, traffic, jobs, and the link state."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from ...schema import Snapshot
from ._quiet import same_text, text_height

__all__ = ["StatusBar"]


class StatusBar(Static):
    # The bar wraps to a second line on narrow terminals as its text grows. A new snapshot
    # repaints the bar only when its text changed, and asks for a layout pass (the whole
    # screen) only when its line count changed: the figures change every poll under load.
    snapshot: reactive[Snapshot | None] = reactive(None, repaint=False)
    link_error: reactive[str | None] = reactive(None, repaint=False)
    mode: reactive[str] = reactive("")

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._text: Text | None = None  # what the bar shows
        self._height: int | None = None  # its line count at the current width

    def _changed(self) -> None:
        text = self.render()
        if same_text(text, self._text):
            return
        self._text = text
        height = text_height(self, text)
        relayout = height is None or height != self._height
        self._height = height
        self.refresh(layout=relayout)

    def watch_snapshot(self) -> None:
        self._changed()

    def watch_link_error(self) -> None:
        self._changed()

    def on_resize(self) -> None:
        self._height = text_height(self, self.render())

    def render(self) -> Text:
        out = Text()
        out.append(" forge ", style="bold reverse")
        out.append(f" {self.mode}", style="bold")
        snap = self.snapshot
        if snap is None:
            out.append("  connecting…", style="dim")
        else:
            out.append(f" {snap.gateway_url}", style="cyan")
            if snap.trial:
                out.append("  trial ", style="dim")
                out.append(snap.trial, style="bold yellow")
                if snap.trial_rollback_by:
                    out.append(" until ", style="dim")
                    out.append(snap.trial_rollback_by, style="yellow")
            tel = snap.telemetry
            out.append(f"  {tel.total} req · {tel.rps:.2f}/s · {tel.inflight} in flight")
            running = [j for j in snap.jobs if j.state == "running"]
            if running:
                out.append(f"  jobs: {', '.join(f'{j.kind} {j.host}' for j in running)}", style="bold magenta")
        if self.link_error:
            out.append(f"  ✖ {self.link_error}", style="bold red")
        return out
