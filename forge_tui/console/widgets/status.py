"""The top line: mode, gateway URL, trial and deadline, backends down, traffic, jobs, and the link state.

While the gateway cannot be reached the bar says since when, and how old the values below it are
(every pane keeps the last snapshot it got; without this they would look fresh).
"""

from __future__ import annotations

import time

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from ...schema import Snapshot
from ..format import age, clean, clock
from ._guard import guarded, log
from ._quiet import same_text, text_height

__all__ = ["StatusBar", "backends_down", "status_text"]

DOWN = frozenset({"down", "circuit-open"})


def backends_down(snap: Snapshot) -> tuple[list[str], int]:
    """(names of backends that are down or circuit-open, how many backends there are)."""
    backends = [b for h in snap.hosts for b in h.backends]
    return [b.name for b in backends if b.health in DOWN], len(backends)


def status_text(
    snap: Snapshot | None,
    mode: str,
    link_error: str | None = None,
    down_since: float | None = None,
    last_ok: float | None = None,
    now: float | None = None,
    narrow: bool = False,
) -> Text:
    """The bar's text; ``narrow`` (80 columns) drops the URL and the names of down backends."""
    out = Text()
    out.append(" forge ", style="bold reverse")
    out.append(f" {mode}", style="bold")
    if snap is None:
        if link_error is None:
            out.append("  connecting…", style="dim")
    else:
        if not narrow:
            out.append(f" {snap.gateway_url}", style="cyan")
        if snap.trial:
            out.append("  trial ", style="dim")
            out.append(snap.trial, style="bold yellow")
            if snap.trial_status == "rolled-back":
                out.append(" rolled back", style="bold green")
            elif snap.trial_status == "promoted":
                out.append(" promoted", style="bold green")
            elif snap.trial_rollback_by:
                out.append(" until ", style="dim")
                out.append(snap.trial_rollback_by, style="yellow")
        down, total = backends_down(snap)
        if down:
            out.append(f"  ⚠ {len(down)}/{total} backends down", style="bold red")
            if not narrow:
                out.append(": " + ", ".join(down[:3]) + (" …" if len(down) > 3 else ""), style="red")
        tel = snap.telemetry
        out.append(f"  {tel.total} req · {tel.rps:.2f}/s · {tel.inflight} in flight")
        running = [j for j in snap.jobs if j.state == "running"]
        if running:
            out.append(f"  jobs: {', '.join(f'{j.kind} {j.host}' for j in running)}", style="bold magenta")
    if link_error:
        now = time.time() if now is None else now
        since = down_since if down_since is not None else now
        out.append(f"  ✖ disconnected since {clock(since)} ({age(since, now)})", style="bold red")
        if last_ok is not None:
            out.append(f" · values below are {age(last_ok, now)} old", style="bold red")
        out.append(f" · {clean(link_error, 160)}", style="red")
    return out


class StatusBar(Static):
    # The bar wraps to a second line on narrow terminals as its text grows. A new snapshot
    # repaints the bar only when its text changed, and asks for a layout pass (the whole
    # screen) only when its line count changed: the figures change every poll under load.
    snapshot: reactive[Snapshot | None] = reactive(None, repaint=False)
    link_error: reactive[str | None] = reactive(None, repaint=False)
    link_down_since: reactive[float | None] = reactive(None, repaint=False)
    last_ok: reactive[float | None] = reactive(None, repaint=False)
    link_checked: reactive[float] = reactive(0.0, repaint=False)  # each failed poll: the ages move on
    mode: reactive[str] = reactive("")

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._text: Text | None = None  # what the bar shows
        self._height: int | None = None  # its line count at the current width

    @guarded
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

    def watch_link_checked(self) -> None:
        self._changed()

    def on_resize(self) -> None:
        # Measured again at the new width; a changed line count needs a layout pass.
        # (after this layout pass: a layout asked for inside it is lost).
        self._text = None
        self._height = self.size.height
        self.call_after_refresh(self._changed)

    def render(self) -> Text:
        try:
            return status_text(
                self.snapshot,
                self.mode,
                self.link_error,
                self.link_down_since,
                self.last_ok,
                narrow=0 < self.size.width < 120,
            )
        except Exception as exc:  # drawn by the compositor: a failure here must not end the app
            log.error("status bar could not draw", exc_info=exc)
            return Text(f" forge  status bar could not draw: {type(exc).__name__} (logged)", style="bold red")
