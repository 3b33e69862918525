"""Process plumbing shared by the benchmark's programs: CPU pinning, /proc readings, serve-until-stopped."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from forge_tui import aio

__all__ = ["CLK_TCK", "ForeignLoad", "cpu_seconds", "pin_pid", "pin_to_cpu", "rss_mb", "serve_until_stopped"]

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def pin_to_cpu(cpu: int | None) -> None:
    """Pin the calling process to one CPU (no-op for None or a CPU this process may not use)."""
    if cpu is not None and cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})


def pin_pid(pid: int, cpus: set[int]) -> None:
    """Pin every thread of ``pid`` (threads started before the call included)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except (ProcessLookupError, OSError):
            pass  # the thread ended meanwhile


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` so far, all threads.

    Read from the process's CPU-time clock (the scheduler's nanosecond runtime, what
    ``clock_getcpuclockid(3)`` returns): /proc/<pid>/stat's utime + stime are sampled at the
    timer tick, too coarse for slices of a fraction of a second. /proc is the fallback.
    """
    try:
        return time.clock_gettime((~pid << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    except OSError:
        pass
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB, from /proc/<pid>/statm."""
    resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return resident * PAGE / (1024 * 1024)


class ForeignLoad:
    """CPU time the rest of the machine used while the benchmark ran (other jobs sharing the cores).

    Machine busy time from /proc/stat minus this process and its reaped children (every program the
    benchmark starts is a child it waits for), so read ``stop()`` after all of them have exited.
    """

    def __init__(self) -> None:
        self._t0 = time.perf_counter()
        self._busy0 = self._machine_busy()
        self._ours0 = self._ours()

    @staticmethod
    def _machine_busy() -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        steal = fields[7] if len(fields) > 7 else 0
        return (sum(fields[:8]) - idle - steal) / CLK_TCK

    @staticmethod
    def _ours() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def stop(self) -> float:
        """Average share of one CPU used by other processes, in percent."""
        wall = time.perf_counter() - self._t0
        foreign = (self._machine_busy() - self._busy0) - (self._ours() - self._ours0)
        return max(0.0, 100.0 * foreign / wall) if wall > 0 else 0.0


def serve_until_stopped(start: Callable[[], Awaitable[asyncio.Server]]) -> int:
    """Start a server, print ``LISTENING host port``, and run until SIGTERM/SIGINT or stdin EOF.

    Stopping at stdin EOF means a crashed parent never leaves this process behind.
    """

    async def run() -> None:
        server = await start()
        host, port = server.sockets[0].getsockname()[:2]
        print(f"LISTENING {host} {port}", flush=True)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watcher: asyncio.Task[None] | None = None  # kept referenced: a bare task may be collected
        if not sys.stdin.isatty():
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

            async def watch_stdin() -> None:
                while await reader.read(4096):
                    pass
                stop.set()

            watcher = loop.create_task(watch_stdin())
        await stop.wait()
        if watcher is not None:
            watcher.cancel()
        server.close()

    # The same loop forge runs on (uvloop when installed), so the floor stays a fair floor.
    aio.run(run())
    return 0
