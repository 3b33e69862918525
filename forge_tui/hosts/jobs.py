"""Jobs: a sequence of named steps with live output, cancellation and a persisted history.

``JobManager`` owns the bookkeeping (ids, one job per host at a time, logs, history under
``state_dir/jobs/``); the steps themselves live in ``rebuild.py``. A job's log is a list of
lines the console polls with ``job_log(id, since)``; the same lines go to
``state_dir/jobs/<id>.log`` as they arrive, and ``history.jsonl`` gets one record per finished
job with every step's result and duration. A job that was running when forge-tui stopped is
found at the next start (its ``.running.json`` marker) and recorded as interrupted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from ..schema import JobInfo

__all__ = ["JOB_KINDS", "Job", "JobManager", "StepFailed", "StepRecord"]

JOB_KINDS = ("rebuild", "verify")
HISTORY_LIMIT = 200


class StepFailed(Exception):
    """A step did not succeed; the message says why (it becomes the job's error)."""


@dataclass
class StepRecord:
    name: str
    state: str = "pending"  # pending, running, ok, failed, skipped, cancelled
    started: float | None = None
    finished: float | None = None
    detail: str = ""

    @property
    def duration_s(self) -> float | None:
        if self.started is None:
            return None
        return round((self.finished or time.time()) - self.started, 3)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["duration_s"] = self.duration_s
        return d


@dataclass
class Job:
    id: str
    kind: str
    host: str
    started: float
    steps: list[StepRecord]
    state: str = "running"  # running, succeeded, failed, cancelled
    finished: float | None = None
    error: str | None = None
    restored: bool | None = None  # True when a failure/cancel put the backup back
    lines: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    cancel_requested: bool = False
    _log: TextIO | None = None

    @property
    def current(self) -> StepRecord | None:
        running = [s for s in self.steps if s.state == "running"]
        if running:
            return running[-1]
        done = [s for s in self.steps if s.state != "pending"]
        return done[-1] if done else None

    def step(self, name: str) -> StepRecord:
        for s in self.steps:
            if s.name == name:
                return s
        rec = StepRecord(name)  # recovery steps are appended as they happen
        self.steps.append(rec)
        return rec

    def log(self, text: str) -> None:
        stamp = dt.datetime.now().strftime("%H:%M:%S")
        for line in text.splitlines() or [""]:
            entry = f"{stamp} {line}"
            self.lines.append(entry)
            if self._log is not None:
                self._log.write(entry + "\n")
                self._log.flush()

    def info(self) -> JobInfo:
        cur = self.current
        return JobInfo(
            id=self.id,
            kind=self.kind,
            host=self.host,
            state=self.state,
            started=self.started,
            finished=self.finished,
            step=cur.name if cur else None,
            steps_done=sum(1 for s in self.steps if s.state in ("ok", "skipped")),
            steps_total=len(self.steps),
            error=self.error,
        )

    def record(self) -> dict[str, object]:
        return {
            "id": self.id,
            "kind": self.kind,
            "host": self.host,
            "state": self.state,
            "started": self.started,
            "finished": self.finished,
            "error": self.error,
            "restored": self.restored,
            "steps": [s.to_dict() for s in self.steps],
        }


class JobManager:
    def __init__(self, state_dir: Path | None) -> None:
        self.dir = (state_dir / "jobs") if state_dir else None
        self._jobs: dict[str, Job] = {}
        self._history: list[dict[str, object]] = []
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._history = self._load_history()
            self._recover_interrupted()

    # ------------------------------------------------------------------ persistence
    @property
    def history_file(self) -> Path | None:
        return self.dir / "history.jsonl" if self.dir else None

    def _load_history(self) -> list[dict[str, object]]:
        f = self.history_file
        if f is None or not f.exists():
            return []
        out = []
        for line in f.read_text(encoding="utf-8").splitlines()[-HISTORY_LIMIT:]:
            try:
                d = json.loads(line)
            except ValueError:
                continue  # a torn last line after a crash
            if isinstance(d, dict) and "id" in d:
                out.append(d)
        return out

    def _append_history(self, rec: dict[str, object]) -> None:
        self._history.append(rec)
        del self._history[:-HISTORY_LIMIT]
        f = self.history_file
        if f is None:
            return
        with open(f, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _marker(self, job_id: str) -> Path | None:
        return self.dir / f"{job_id}.running.json" if self.dir else None

    def _recover_interrupted(self) -> None:
        assert self.dir is not None
        for marker in sorted(self.dir.glob("*.running.json")):
            try:
                rec = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                marker.unlink(missing_ok=True)
                continue
            backup = rec.pop("backup", None)
            rec["state"] = "failed"
            rec["finished"] = marker.stat().st_mtime
            rec["error"] = "interrupted: forge-tui stopped while the job ran" + (
                f"; the build backup was left in place at {backup}" if backup else ""
            )
            self._append_history(rec)
            marker.unlink(missing_ok=True)

    def checkpoint(self, job: Job, **extra: object) -> None:
        """Write the running job's marker (with e.g. the backup path) so a crash is recoverable."""
        m = self._marker(job.id)
        if m is not None:
            rec = job.record()
            rec.update(extra)
            m.write_text(json.dumps(rec, sort_keys=True), encoding="utf-8")

    # ------------------------------------------------------------------ lifecycle
    def running_on(self, host: str) -> Job | None:
        return next((j for j in self._jobs.values() if j.host == host and j.state == "running"), None)

    def start(self, kind: str, host: str, steps: list[str], body: Callable[[Job], Awaitable[None]]) -> Job:
        """Create the job and run ``body`` as a task. ``body`` raises ``StepFailed`` or is cancelled;
        it is responsible for recovery. Must be called from a running event loop."""
        busy = self.running_on(host)
        if busy is not None:
            raise ValueError(f"host {host!r} already has a running job ({busy.id}); wait for it or cancel it")
        now = time.time()
        job_id = f"{kind}-{host}-{dt.datetime.fromtimestamp(now).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
        job = Job(job_id, kind, host, now, [StepRecord(s) for s in steps])
        if self.dir is not None:
            job._log = open(self.dir / f"{job_id}.log", "a", encoding="utf-8")  # noqa: SIM115 (lives with the job)
        self._jobs[job_id] = job
        self.checkpoint(job)
        job.task = asyncio.get_running_loop().create_task(self._run(job, body), name=f"job {job_id}")
        return job

    async def _run(self, job: Job, body: Callable[[Job], Awaitable[None]]) -> None:
        try:
            await body(job)
            if job.state == "running":
                job.state = "succeeded"
        except StepFailed as exc:
            job.state = "failed"
            job.error = job.error or str(exc)
        except asyncio.CancelledError:
            job.state = "cancelled"
            job.error = job.error or "cancelled"
        except Exception as exc:  # a bug in a step must still end the job visibly
            job.state = "failed"
            job.error = f"internal error: {exc.__class__.__name__}: {exc}"
        finally:
            self._finish(job)

    def _finish(self, job: Job) -> None:
        if job.finished is not None:
            return
        job.finished = time.time()
        job.log(
            f"== job {job.state}" + (f": {job.error}" if job.error else "") + f" ({job.finished - job.started:.1f}s)"
        )
        self._append_history(job.record())
        m = self._marker(job.id)
        if m is not None:
            m.unlink(missing_ok=True)
        if job._log is not None:
            job._log.close()
            job._log = None

    def get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def jobs(self) -> list[JobInfo]:
        live = {j.id: j.info() for j in self._jobs.values()}
        out = [live.pop(r["id"]) if r["id"] in live else _info_from_record(r) for r in self._history]
        out.extend(live.values())
        return sorted(out, key=lambda j: j.started)

    def steps(self, job_id: str) -> list[dict[str, object]]:
        if job_id in self._jobs:
            return [s.to_dict() for s in self._jobs[job_id].steps]
        rec = next((r for r in self._history if r["id"] == job_id), None)
        if rec is None:
            raise KeyError(job_id)
        steps = rec.get("steps")
        return list(steps) if isinstance(steps, list) else []

    def log(self, job_id: str, since: int = 0) -> list[str]:
        if since < 0:
            raise ValueError("since must be >= 0")
        job = self._jobs.get(job_id)
        if job is not None:
            return job.lines[since:]
        if self.dir is not None and any(r["id"] == job_id for r in self._history):
            f = self.dir / f"{job_id}.log"
            if f.exists():
                return f.read_text(encoding="utf-8").splitlines()[since:]
            return []
        raise KeyError(job_id)

    async def cancel(self, job_id: str, timeout: float = 600.0) -> JobInfo:
        """Cancel a running job and wait for its recovery (restore + restart) to finish."""
        job = self.get(job_id)
        if job.state == "running" and job.task is not None:
            if not job.cancel_requested:  # a second cancel must not interrupt the restore
                job.cancel_requested = True
                job.log("== cancel requested")
                job.task.cancel()
            await asyncio.wait({job.task}, timeout=timeout)
            if job.task.done() and job.state == "running":
                # Cancelled before its first step ran: nothing was touched.
                job.state, job.error = "cancelled", "cancelled before it started"
                self._finish(job)
        return job.info()

    async def close(self) -> None:
        for job in list(self._jobs.values()):
            if job.state == "running":
                await self.cancel(job.id)


def _info_from_record(r: dict[str, object]) -> JobInfo:
    steps = r.get("steps") or []
    assert isinstance(steps, list)
    started_steps = [s for s in steps if isinstance(s, dict) and s.get("state") != "pending"]
    return JobInfo(
        id=str(r["id"]),
        kind=str(r.get("kind")),
        host=str(r.get("host")),
        state=str(r.get("state")),
        started=float(r.get("started") or 0.0),  # type: ignore[arg-type]
        finished=r.get("finished"),
        step=started_steps[-1].get("name") if started_steps else None,
        steps_done=sum(1 for s in steps if isinstance(s, dict) and s.get("state") in ("ok", "skipped")),
        steps_total=len(steps),
        error=r.get("error"),
    )
