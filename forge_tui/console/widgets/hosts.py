"""Hosts pane: reachability, a memory bar with its source and age, backend health, loaded models.

One entry per host (so b/v act on a host), its backends on the lines below; long lines wrap
instead of scrolling out of view.
"""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from ...schema import BackendInfo, HostInfo, JobInfo, Snapshot
from ..format import age, clean, health_text, memory_cell
from ._guard import guarded
from ._quiet import same_text

__all__ = ["HostsList", "host_text"]


def _reach(host: HostInfo) -> Text:
    if host.reachable is None:
        return Text("? unprobed", style="dim")
    if host.reachable:
        return Text("● up", style="bold green")
    return Text("✖ unreachable", style="bold red")


def _backend_line(b: BackendInfo, now: float) -> Text:
    line = Text(f"  └ {b.name} ", style="")
    line.append(f"{b.kind} ", style="dim")
    line.append_text(health_text(b.health))
    line.append(f" {b.inflight}/{b.max_concurrency}" + (f" +{b.queued} queued" if b.queued else ""), style="dim")
    if b.checked_at is not None:
        line.append(f" · {age(b.checked_at, now)} ago", style="dim")
    if b.loaded_models:
        line.append("  ")
        line.append(", ".join(b.loaded_models), style="green")
    if b.detail and b.health != "ready":
        line.append(f"  {clean(b.detail, 200)}", style="red")
    return line


def host_text(host: HostInfo, now: float, job: JobInfo | None = None) -> Text:
    """The host line (reachability, memory bar, source and age), then one line per backend."""
    out = Text(f"{host.name:<10} ", style="bold")
    out.append_text(_reach(host))
    out.append("  ")
    out.append_text(memory_cell(host.memory_used_gb, host.memory_total_gb, host.memory_budget_gb, width=10))
    out.append(f"  {host.memory_source or 'no memory reading'}", style="" if host.memory_source else "dim")
    if host.probed_at is not None:
        out.append(f" · {age(host.probed_at, now)} ago", style="dim")
    if host.serving_version:
        out.append(f"  {host.serving_version}", style="dim")
    if job is not None:
        progress = f" {job.steps_done}/{job.steps_total}" if job.steps_total else ""
        out.append(f"  ⚙ {job.kind}{progress} {job.step or ''}".rstrip(), style="bold magenta")
    if host.error:
        out.append(f"\n  {clean(host.error, 200)}", style="red")
    for b in host.backends:
        out.append("\n")
        out.append_text(_backend_line(b, now))
    return out


class HostsList(OptionList):
    snapshot: reactive[Snapshot | None] = reactive(None, repaint=False)  # redraws what changed itself

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._prompts: dict[str, Text] = {}

    def on_mount(self) -> None:
        self.border_title = "Hosts"
        self.watch_snapshot(self.snapshot)

    @guarded
    def watch_snapshot(self, snapshot: Snapshot | None) -> None:
        if snapshot is None or not self.is_mounted:
            return
        running = {j.host: j for j in snapshot.jobs if j.state == "running"}
        prompts = [(h.name, host_text(h, snapshot.taken_at, running.get(h.name))) for h in snapshot.hosts]
        current = [self.get_option_at_index(i).id for i in range(self.option_count)]
        if current == [name for name, _ in prompts]:
            for name, prompt in prompts:
                if not same_text(self._prompts.get(name), prompt):
                    self.replace_option_prompt(name, prompt)
            self._prompts = dict(prompts)
            return
        self._prompts = dict(prompts)
        selected = self.selected_host
        self.set_options(Option(prompt, id=name) for name, prompt in prompts)
        names = [name for name, _ in prompts]
        if names:
            self.highlighted = names.index(selected) if selected in names else 0

    @property
    def selected_host(self) -> str | None:
        option = self.highlighted_option
        return option.id if option is not None else None
