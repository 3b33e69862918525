"""ForgeApp: the operations console. It talks to a gateway only through ``Control``.

The app owns the control and every worker. A poll worker fetches one snapshot at a time (polls
never overlap; the next is scheduled when the last one has finished) and hands it to the screen
on top, unless a dialog is open. Screens turn keys into ``*Requested`` messages; the app runs
the change in a worker and reports the outcome as a notification. A refusal changes nothing.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import App
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widgets import Input
from textual.worker import Worker, WorkerState

from ..control.base import Control, ControlError
from ..schema import ChangeResult, JobInfo, RoleInfo, Snapshot
from ..smoke import SmokeResult, smoke_roles
from .commands import ForgeCommands
from .keymap import APP_KEYS, bindings
from .messages import (
    DeprecationRequested,
    JobLogRequested,
    JobRequested,
    RollbackRequested,
    RollbackTrialRequested,
    SmokeRequested,
    SnapshotReady,
    SwapRequested,
)
from .screens.audit import AuditScreen
from .screens.confirm import ConfirmScreen
from .screens.deprecate import DeprecateScreen
from .screens.help import HelpScreen
from .screens.job import JobScreen
from .screens.main import MainScreen
from .screens.smoke import SmokeScreen
from .screens.swap import SwapScreen
from .screens.trial import TrialScreen
from .widgets._guard import PaneFailed

__all__ = ["ForgeApp", "Notice"]

POLL_GROUP = "poll"
log = logging.getLogger("forge_tui.console")
_APP_ACTIONS = frozenset(spec.action for spec in APP_KEYS)


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification as shown to the operator (kept for the record and for tests)."""

    title: str
    message: str
    severity: str


class ForgeApp(App[None]):
    CSS_PATH = Path(__file__).with_name("forge.tcss")
    TITLE = "forge"
    BINDINGS = bindings(APP_KEYS)
    COMMANDS = App.COMMANDS | {ForgeCommands}
    NOTIFICATION_TIMEOUT = 8

    def __init__(
        self,
        control: Control,
        *,
        refresh_s: float = 1.0,
        actor: str = "operator",
        keymap: dict[str, str] | None = None,
        api_key: str | None = None,
        smoke_timeout: float = 60.0,
    ) -> None:
        super().__init__()
        self.control = control
        self.refresh_s = max(0.1, refresh_s)  # bounded: the console must not starve the gateway
        self.actor = actor
        self.keymap_overrides = dict(keymap or {})
        self.api_key = api_key
        self.smoke_timeout = smoke_timeout
        self.snapshot: Snapshot | None = None
        self.link_error: str | None = None
        self.last_smoke: list[SmokeResult] | None = None
        self.last_change: ChangeResult | None = None
        self.notices: deque[Notice] = deque(maxlen=200)
        self.polls = 0
        self.link_down_since: float | None = None  # wall clock of the first failed poll in a row
        self.last_ok: float | None = None  # wall clock of the last snapshot that arrived
        self.pane_failures: list[PaneFailed] = []  # panes that could not draw (shown, logged, kept running)
        self.crash: str | None = None  # the traceback, if the app ended on an unhandled exception
        self._poll_timer: Timer | None = None
        self._polling = False
        self._poll_again = False

    # ------------------------------------------------------------------ lifecycle
    def get_default_screen(self) -> Screen[None]:
        return MainScreen()

    def on_mount(self) -> None:
        self.sub_title = self.control.mode
        if self.keymap_overrides:
            self.set_keymap(self.keymap_overrides)
        main = self.screen
        if isinstance(main, MainScreen):
            main.mode = self.control.mode
        self.screen_change_signal.subscribe(self, self._screen_changed)
        self.poll_now()

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: str = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        # Gateway text (paths, model ids, upstream errors) is shown verbatim, never as markup.
        self.notices.append(Notice(title, message, severity))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ polling
    def poll_now(self) -> None:
        """Fetch a snapshot now; if one is on its way, fetch again right after it (it may predate a change)."""
        if self._poll_timer is not None:
            self._poll_timer.stop()
            self._poll_timer = None
        if self._polling:
            self._poll_again = True
            return
        self._polling = True
        self._fetch_snapshot()

    @work(exclusive=True, group=POLL_GROUP, exit_on_error=False, name="snapshot")
    async def _fetch_snapshot(self) -> Snapshot:
        return await self.control.snapshot()

    def _poll_finished(self, worker: Worker[Snapshot]) -> None:
        self._polling = False
        self.polls += 1
        again, self._poll_again = self._poll_again, False
        if worker.state is WorkerState.SUCCESS and worker.result is not None:
            if self.link_error is not None:
                self.notify("gateway reachable again", title="Link")
            self.link_error = None
            self.link_down_since = None
            self.last_ok = time.time()
            self._deliver(worker.result)
        elif worker.state is WorkerState.ERROR:
            error = str(worker.error) or type(worker.error).__name__
            if self.link_error is None:
                self.notify(error, title="Gateway unreachable", severity="error")
                self.link_down_since = time.time()
            self.link_error = error
            self._set_link_error(error)
        if self.is_running and self.screen_stack and worker.state is not WorkerState.CANCELLED:
            self._poll_timer = self.set_timer(0.01 if again else self.refresh_s, self.poll_now)

    def _deliver(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        if not self.screen_stack:  # a poll that lands while the app is closing
            return
        self._set_link_error(None)
        if not isinstance(self.screen, ModalScreen):
            # Drawing is skipped while a dialog is open; the screen gets the latest on resume.
            self.screen.post_message(SnapshotReady(snapshot))

    def _set_link_error(self, error: str | None) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, MainScreen):
                screen.link_down_since = self.link_down_since
                screen.last_ok = self.last_ok
                screen.link_error = error
                screen.link_checked = time.time()  # the ages in the status bar move on while down

    # ------------------------------------------------------------------ faults
    def pane_failed(self, failure: PaneFailed) -> None:
        """A pane could not draw: it says so in its border, the log has the traceback; tell the operator once."""
        first = not any(f.pane == failure.pane and f.error == failure.error for f in self.pane_failures)
        self.pane_failures.append(failure)
        del self.pane_failures[:-50]
        if first:
            self.notify(
                f"{failure.pane} could not draw ({failure.error}); the gateway keeps serving, details in the log",
                title="Console fault",
                severity="error",
            )

    def _handle_exception(self, error: Exception) -> None:
        # The app is about to end: keep the traceback for the log file and the exit code.
        self.crash = "".join(traceback.format_exception(error))
        log.error("console crashed:\n%s", self.crash)
        super()._handle_exception(error)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A key typed into an input is text, never a command (? a q are printable too).
        return not (action in _APP_ACTIONS and isinstance(self.focused, Input))

    def _screen_changed(self, screen: Screen[object]) -> None:
        if self.snapshot is not None and not isinstance(screen, ModalScreen):
            screen.post_message(SnapshotReady(self.snapshot))

    # ------------------------------------------------------------------ outcomes
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """One place that maps a worker's end to what the operator sees."""
        worker = event.worker
        if worker.group == POLL_GROUP:
            if event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
                self._poll_finished(worker)
            return
        if event.state is WorkerState.ERROR:
            error = worker.error
            text = str(error) if isinstance(error, ControlError) else f"{type(error).__name__}: {error}"
            self.notify(text, title=f"{worker.name or 'action'} failed", severity="error")

    def _report(self, result: ChangeResult, what: str) -> None:
        self.last_change = result
        if result.ok:
            self.notify(result.message, title=what)
            self.poll_now()
        else:
            self.notify(result.message, title=f"{what} refused", severity="error")

    def _role(self, name: str) -> RoleInfo | None:
        if self.snapshot is None:
            return None
        return next((r for r in self.snapshot.roles if r.name == name), None)

    # Dialog flows are not exclusive: one must never cancel another that is already applying
    # a change (dialogs are modal, so two cannot ask at once anyway).

    # ------------------------------------------------------------------ swap
    @on(SwapRequested)
    def _swap_requested(self, message: SwapRequested) -> None:
        self.begin_swap(message.role, message.origin)

    def begin_swap(self, role: str, origin: str = "") -> None:
        self._swap_flow(role, origin)

    @work(group="dialog", exit_on_error=False, name="swap")
    async def _swap_flow(self, role: str, origin: str = "") -> None:
        info = self._role(role)
        if info is None or self.snapshot is None:
            self.notify(f"unknown role {role!r}", title="swap refused", severity="error")
            return
        eligible = await self.control.eligible_models(role)
        if not [m for m in eligible if m != info.model]:
            self.notify(
                f"no other model can hold {role} (needs {', '.join(info.requires) or 'chat'})",
                title="swap",
                severity="warning",
            )
            return
        choice = await self.push_screen_wait(
            SwapScreen(info, self.snapshot.models, eligible, self.control.preflight, origin=origin)
        )
        if choice is not None:
            await self.apply_swap(role, choice.model, force=choice.force, preflight_id=choice.preflight_id)

    async def apply_swap(
        self, role: str, model: str, *, force: bool = False, preflight_id: str | None = None
    ) -> ChangeResult:
        """The change behind the swap dialog; the gateway validates, a refusal changes nothing."""
        try:
            result = await self.control.swap(role, model, force=force, actor=self.actor, preflight_id=preflight_id)
        except ControlError as exc:
            result = ChangeResult(ok=False, message=str(exc))
        self._report(result, f"swap {role}" + (" (forced)" if force else ""))
        return result

    # ------------------------------------------------------------------ rollback
    @on(RollbackRequested)
    def _rollback_requested(self, message: RollbackRequested) -> None:
        self.begin_rollback(message.role, message.origin)

    def begin_rollback(self, role: str, origin: str = "") -> None:
        self._rollback(role, origin)

    @work(group="change", exit_on_error=False, name="rollback")
    async def _rollback(self, role: str, origin: str = "") -> None:
        try:
            result = await self.control.rollback(role, actor=self.actor)
        except ControlError as exc:
            result = ChangeResult(ok=False, message=str(exc))
        self._report(result, f"rollback {role}" + (f" ({origin})" if origin else ""))

    @on(RollbackTrialRequested)
    def _rollback_trial_requested(self) -> None:
        self.begin_rollback_trial()

    def begin_rollback_trial(self) -> None:
        self._rollback_trial_flow()

    @work(group="dialog", exit_on_error=False, name="rollback trial")
    async def _rollback_trial_flow(self) -> None:
        snap = self.snapshot
        # Each trial role goes back to its baseline (the model its trial started from); a gateway that
        # does not report baselines is read as before (the previous model).
        roles = [
            r
            for r in (snap.roles if snap else [])
            if r.in_trial and (r.baseline or r.previous) and r.model != (r.baseline or r.previous)
        ]
        if not roles:
            if snap is not None and snap.trial_status == "rolled-back":
                why = "the trial is already rolled back: every trial role is on its baseline"
            else:
                why = "no role in the current trial is off its baseline"
            self.notify(why, title="rollback trial refused", severity="error")
            return
        trial = snap.trial if snap else None
        body = "\n".join(f"  {r.name}: {r.model} -> {r.baseline or r.previous}" for r in roles)
        sure = await self.push_screen_wait(
            ConfirmScreen(
                f"Roll back the whole trial{' ' + trial if trial else ''}?", body, yes="Roll back all", danger=True
            )
        )
        if not sure:
            return
        try:
            result = await self.control.rollback_trial(actor=self.actor)
        except ControlError as exc:
            result = ChangeResult(ok=False, message=str(exc))
        self._report(result, "rollback trial")

    # ------------------------------------------------------------------ deprecation
    @on(DeprecationRequested)
    def _deprecation_requested(self, message: DeprecationRequested) -> None:
        self.begin_toggle_deprecation(message.model, message.origin)

    def begin_toggle_deprecation(self, model: str, origin: str = "") -> None:
        self._deprecation_flow(model, origin)

    @work(group="dialog", exit_on_error=False, name="deprecation")
    async def _deprecation_flow(self, model: str, origin: str = "") -> None:
        snap = self.snapshot
        info = next((m for m in snap.models if m.id == model), None) if snap else None
        if info is None:
            self.notify(f"unknown model {model!r}", title="deprecation refused", severity="error")
            return
        if info.deprecated:
            sure = await self.push_screen_wait(
                ConfirmScreen(
                    f"Remove the deprecation of {model}?",
                    (f"({origin}) " if origin else "")
                    + f"sunset {info.sunset or 'unset'}; its Deprecation and Sunset headers stop.",
                    yes="Undeprecate",
                )
            )
            if sure:
                await self.apply_deprecation(model, False)
            return
        default = snap.trial_rollback_by if snap else None
        sunset = await self.push_screen_wait(DeprecateScreen(model, default=default, roles=info.roles, origin=origin))
        if sunset is not None:
            await self.apply_deprecation(model, True, sunset=sunset)

    async def apply_deprecation(self, model: str, deprecated: bool, *, sunset: str | None = None) -> ChangeResult:
        try:
            result = await self.control.set_deprecated(model, deprecated, sunset=sunset, actor=self.actor)
        except ControlError as exc:
            result = ChangeResult(ok=False, message=str(exc))
        self._report(result, ("deprecate " if deprecated else "undeprecate ") + model)
        return result

    # ------------------------------------------------------------------ smoke
    @on(SmokeRequested)
    def _smoke_requested(self, message: SmokeRequested) -> None:
        self.begin_smoke(message.roles, message.origin)

    def begin_smoke(self, roles: list[str] | None, origin: str = "") -> None:
        self._smoke(roles, origin)

    @work(group="smoke", exclusive=True, exit_on_error=False, name="smoke")
    async def _smoke(self, names: list[str] | None, origin: str = "") -> None:
        known = self.snapshot.roles if self.snapshot else []
        roles = known if names is None else [r for r in known if r.name in names]
        if not roles:
            self.notify("no roles to smoke yet (waiting for the gateway?)", title="smoke", severity="warning")
            return
        url = self.control.gateway_url
        screen = SmokeScreen([r.name for r in roles], url, origin=origin)
        self.push_screen(screen)
        try:
            results = await smoke_roles(url, roles, api_key=self.api_key, timeout=self.smoke_timeout)
        except Exception as exc:  # shown in the open dialog, then re-raised for the one error handler
            if screen.is_attached:
                screen.show_error(str(exc) or type(exc).__name__)
            raise
        self.last_smoke = results
        if screen.is_attached:
            screen.show_results(results)
        failed = [r for r in results if not r.ok]
        summary = f"{len(results) - len(failed)}/{len(results)} passed"
        if failed:
            summary += "; failed: " + ", ".join(f"{r.role} ({r.reason})" for r in failed)
        self.notify(summary, title="smoke", severity="error" if failed else "information")
        self.poll_now()

    # ------------------------------------------------------------------ jobs
    @on(JobRequested)
    def _job_requested(self, message: JobRequested) -> None:
        self.begin_job(message.kind, message.host, message.origin)

    def begin_job(self, kind: str, host: str, origin: str = "") -> None:
        self._start_job(kind, host, origin)

    @work(group="job", exit_on_error=False, name="job")
    async def _start_job(self, kind: str, host: str, origin: str = "") -> None:
        job = await self.control.start_job(kind, host)
        self.notify(f"{kind} {host}{f' ({origin})' if origin else ''} started ({job.id})", title="job")
        self.open_job(job)
        self.poll_now()

    def open_job(self, job: JobInfo) -> None:
        self.push_screen(JobScreen(self.control, job))

    @on(JobLogRequested)
    def _job_log_requested(self, message: JobLogRequested) -> None:
        jobs = sorted(self.snapshot.jobs if self.snapshot else [], key=lambda j: j.started, reverse=True)
        mine = [j for j in jobs if j.host == message.host] or jobs
        if not mine:
            self.notify("no jobs yet: b rebuilds, v verifies the selected host", title="jobs", severity="warning")
            return
        self.open_job(mine[0])

    # ------------------------------------------------------------------ app keys
    def action_help_quit(self) -> None:
        # Textual's ctrl+c hint, without markup (this app shows notifications as plain text).
        self.notify("press q to quit (it asks first when requests or jobs are in flight)", title="Quit?")

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.keymap_overrides))

    def action_evals(self) -> None:
        from .screens.evals import EvalsScreen

        role = self.screen.selected_role if isinstance(self.screen, MainScreen) else None
        info = next((r for r in (self.snapshot.roles if self.snapshot else []) if r.name == role), None)
        previous = info.previous if info is not None and info.previous != info.model else None
        self.push_screen(EvalsScreen(self.control.gateway_url, role, previous=previous, api_key=self.api_key))

    def action_audit(self) -> None:
        if isinstance(self.screen, AuditScreen):
            self.screen.action_reload()
        else:
            self.push_screen(AuditScreen(self.control))

    def action_trial(self) -> None:
        if isinstance(self.screen, TrialScreen):
            self.screen.action_reload()
        else:
            self.push_screen(TrialScreen(self.control, actor=self.actor))

    def action_request_quit(self) -> None:
        self._quit_flow()

    @work(group="dialog", exit_on_error=False, name="quit")
    async def _quit_flow(self) -> None:
        snap: Snapshot | None
        try:
            snap = await self.control.snapshot()
        except ControlError:
            snap = self.snapshot  # an unreachable gateway must not keep the operator in
        busy: list[str] = []
        if snap is not None:
            if snap.telemetry.inflight:
                busy.append(f"{snap.telemetry.inflight} request(s) in flight")
            running = [j for j in snap.jobs if j.state == "running"]
            if running:
                busy.append("jobs running: " + ", ".join(f"{j.kind} {j.host}" for j in running))
        if busy:
            sure = await self.push_screen_wait(
                ConfirmScreen(
                    "Quit forge?",
                    "\n".join(busy) + "\nIn-flight requests get a bounded drain.",
                    yes="Quit",
                    danger=True,
                )
            )
            if not sure:
                return
        self.exit()
