"""The top line: mode, gateway URL, trial and deadline, traffic, jobs, and the link state."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from ...control.schema import Snapshot

__all__ = ["StatusBar"]


class StatusBar(Static):
    # layout=True: the bar wraps to a second line on narrow terminals as its text grows.
    snapshot: reactive[Snapshot | None] = reactive(None, layout=True)
    link_error: reactive[str | None] = reactive(None, layout=True)
    mode: reactive[str] = reactive("")

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
