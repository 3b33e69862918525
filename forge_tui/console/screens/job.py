"""A rebuild/verify job: its live log, the current step and a progress bar; ``c`` cancels."""

from __future__ import annotations

import asyncio

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Label, ProgressBar, RichLog

from ...control.base import Control
from ...schema import JobInfo
from ..messages import SnapshotReady
from .confirm import ConfirmScreen

__all__ = ["JobScreen"]

STATE_STYLES = {"running": "bold magenta", "succeeded": "bold green", "failed": "bold red", "cancelled": "bold yellow"}


class JobScreen(Screen[None]):
    # Two Back keys, one shown at a time: "job keeps running" is only true while it runs.
    BINDINGS = [
        Binding("escape", "close", "Back (job keeps running)", id="job.back"),
        Binding("escape", "close_finished", "Back", id="job.back-done"),
        Binding("c", "cancel_job", "Cancel job", id="job.cancel"),
        Binding("c", "cancel_finished", "Cancel job", show=False, id="job.cancel-done"),
    ]

    def __init__(self, control: Control, job: JobInfo, *, poll_s: float = 0.3) -> None:
        super().__init__()
        self._control = control
        self.job = job
        self._poll_s = poll_s
        self.lines: list[str] = []

    def compose(self) -> ComposeResult:
        yield Label(id="job-title")
        yield ProgressBar(total=self.job.steps_total or None, show_eta=False, id="job-progress")
        yield RichLog(id="job-log", wrap=True, highlight=False, markup=False, max_lines=20_000)
        yield Footer()

    def on_mount(self) -> None:
        self._show_job()
        self._follow()

    @on(SnapshotReady)
    def _snapshot(self, message: SnapshotReady) -> None:
        self._take(message.snapshot.jobs)

    def _take(self, jobs: list[JobInfo]) -> bool:
        """Adopt this job's latest state from ``jobs``; True when it was there."""
        for job in jobs:
            if job.id == self.job.id:
                self.job = job
                self._show_job()
                return True
        return False

    def _show_job(self) -> None:
        job = self.job
        title = Text(f" {job.kind} {job.host} ", style="bold reverse")
        title.append(f" {job.state}", style=STATE_STYLES.get(job.state, ""))
        if job.step:
            title.append(f"  step: {job.step}")
        if job.steps_total:
            title.append(f"  ({job.steps_done}/{job.steps_total})", style="dim")
        if job.error:
            title.append(f"  {job.error}", style="bold red")
        self.query_one("#job-title", Label).update(title)
        bar = self.query_one(ProgressBar)
        if job.steps_total:
            bar.update(total=job.steps_total, progress=job.steps_done)
        self.refresh_bindings()

    @property
    def finished(self) -> bool:
        return self.job.state != "running"

    @work(exclusive=True, group="job-log", exit_on_error=False, name="job log")
    async def _follow(self) -> None:
        """Stream the log until the job has finished and a last read brings nothing new."""
        log = self.query_one(RichLog)
        while True:
            lines = await self._control.job_log(self.job.id, since=len(self.lines))
            for line in lines:
                log.write(line)
            self.lines.extend(lines)
            if lines and not self.finished:
                # The log moved on: bring the header (state, step, progress) along with it now,
                # not on the next regular poll.
                self._take((await self._control.snapshot()).jobs)
            if self.finished and not lines:
                return
            await asyncio.sleep(self._poll_s)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("cancel_job", "close"):
            return not self.finished
        if action in ("close_finished", "cancel_finished"):
            return self.finished
        return True

    @work(group="job-cancel", exit_on_error=False, name="cancel job")
    async def action_cancel_job(self) -> None:
        self._take((await self._control.snapshot()).jobs)  # it may have ended since the header was drawn
        if self.finished:
            self.notify(f"{self.job.kind} {self.job.host} already {self.job.state}: nothing to cancel", markup=False)
            return
        sure = await self.app.push_screen_wait(
            ConfirmScreen(
                f"Cancel {self.job.kind} on {self.job.host}?",
                "The job stops and restores the previous build.",
                yes="Cancel job",
                danger=True,
            )
        )
        if sure:
            self.job = await self._control.cancel_job(self.job.id)
            self._show_job()
            self.notify(f"cancel of {self.job.kind} {self.job.host}: the job is {self.job.state}", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_cancel_finished(self) -> None:
        self.notify(f"{self.job.kind} {self.job.host} already {self.job.state}: nothing to cancel", markup=False)

    def action_close_finished(self) -> None:
        self.dismiss(None)
