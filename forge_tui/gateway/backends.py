"""Per-backend runtime: health (from the process's one probe loop, ``forge_tui.health``, through
``set_health``), circuit breaker (passive), concurrency limiter.

All of it lives on the event loop thread; nothing here locks. The prober writes health, the
request path reads it, and the limiter hands slots out first come, first served.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config.models import Backend, BackendKind
from ..health import DOWN, READY, STARTING, UNKNOWN, is_startup_text
from .errors import Saturated

# The state vocabulary is the process's one (``forge_tui.health``); re-exported for the request path.
__all__ = [
    "DOWN",
    "READY",
    "STARTING",
    "UNKNOWN",
    "BackendBad",
    "BackendRuntime",
    "Breaker",
    "Limiter",
    "is_startup_text",
]


class BackendBad(Exception):
    """The backend turned bad while a request waited on it (queued, or no answer yet): go elsewhere."""


class Breaker:
    """Opens after ``failures`` consecutive failures (connect failures, read timeouts); after ``reset_s``
    lets one trial through. ``on_open`` is called when it opens."""

    __slots__ = ("_clock", "consecutive", "failures", "on_open", "opened_at", "reset_s", "trial")

    def __init__(self, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self.consecutive = 0
        self.opened_at: float | None = None
        self.trial = False  # a half-open trial request is in flight
        self._clock = clock
        self.on_open: Callable[[], None] | None = None

    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self._clock() - self.opened_at >= self.reset_s:
            return "half-open"
        return "open"

    def allows(self) -> bool:
        s = self.state()
        return s == "closed" or (s == "half-open" and not self.trial)

    def enter(self) -> bool:
        """Claim the right to send one request now (the single trial when half-open)."""
        s = self.state()
        if s == "closed":
            return True
        if s == "half-open" and not self.trial:
            self.trial = True
            return True
        return False

    def success(self) -> None:
        self.consecutive = 0
        self.opened_at = None
        self.trial = False

    def failure(self) -> None:
        self.consecutive += 1
        was_closed = self.opened_at is None
        if self.trial or self.consecutive >= self.failures:
            self.opened_at = self._clock()
            if was_closed and self.on_open is not None:
                self.on_open()
        self.trial = False

    def abandon(self) -> None:
        """The trial request ended without telling us anything (e.g. the caller left)."""
        self.trial = False


@dataclass(slots=True)
class _Waiter:
    fut: asyncio.Future[None]
    image: bool
    granted: bool = False


class Limiter:
    """A concurrency cap with a bounded FIFO wait queue and a lower cap for image requests."""

    def __init__(
        self, name: str, limit: int, image_limit: int | None, queue_limit: int, queue_timeout_s: float
    ) -> None:
        self.name = name
        self.limit = limit
        self.image_limit = min(image_limit, limit) if image_limit else limit
        self.queue_limit = queue_limit
        self.queue_timeout_s = queue_timeout_s
        self.inflight = 0
        self.image_inflight = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def queued(self) -> int:
        return sum(1 for w in self._waiters if not w.fut.done())

    def _fits(self, image: bool) -> bool:
        return self.inflight < self.limit and (not image or self.image_inflight < self.image_limit)

    def _take(self, image: bool) -> None:
        self.inflight += 1
        if image:
            self.image_inflight += 1

    def try_acquire(self, image: bool) -> bool:
        if not self._fits(image):
            return False
        # Arrival order among requests that could use the slot; an image waiter held by the image
        # cap cannot use it, so it never blocks a text request that fits.
        for w in self._waiters:
            if not w.fut.done() and self._fits(w.image):
                return False
        self._take(image)
        return True

    def fail_waiters(self, exc: BaseException) -> int:
        """The backend turned bad: every queued request moves on now (sees ``exc``). Returns how many."""
        n = 0
        for w in list(self._waiters):
            if not w.fut.done():
                w.fut.set_exception(exc)
                n += 1
        self._waiters.clear()
        return n

    async def acquire(
        self,
        image: bool,
        *,
        spill_after_s: float | None = None,
        spill: Callable[[], object | None] | None = None,
    ) -> object | None:
        """Wait (FIFO, bounded) for a slot; None once it is held.

        With ``spill``: after ``spill_after_s`` in the queue, ``spill()`` is asked (then again every
        few ms while waiting) whether the request should go elsewhere; whatever non-None it returns
        is returned instead, and the place in this queue is given up.
        """
        if self.try_acquire(image):
            return None
        if self.queued >= self.queue_limit:
            raise Saturated(
                f"backend {self.name!r} is at its concurrency cap ({self.limit}"
                f"{f', {self.image_limit} for images' if image and self.image_limit < self.limit else ''}) "
                f"and its wait queue is full ({self.queue_limit}); retry shortly",
            )
        w = _Waiter(asyncio.get_running_loop().create_future(), image)
        self._waiters.append(w)
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                if spill is None or spill_after_s is None:
                    await w.fut
                    return None
                step = spill_after_s
                while True:
                    await asyncio.wait((w.fut,), timeout=step)
                    if w.fut.done():
                        w.fut.result()  # raises BackendBad when the backend turned bad meanwhile
                        return None
                    other = spill()
                    if other is not None:
                        self._drop(w)
                        return other
                    step = max(0.005, min(0.05, spill_after_s / 4))
        except TimeoutError:
            if w.granted:
                return None  # the slot arrived as the timer fired: keep it
            self._drop(w)
            raise Saturated(
                f"backend {self.name!r} had no free slot within {self.queue_timeout_s:g}s "
                f"(cap {self.limit}, {self.queued} waiting); retry shortly",
                retry_after=max(1, round(self.queue_timeout_s / 4)),
            ) from None
        except BaseException:
            if w.granted:
                self.release(image)
            else:
                self._drop(w)
            raise
        return None

    def _drop(self, w: _Waiter) -> None:
        try:
            self._waiters.remove(w)
        except ValueError:
            pass

    def release(self, image: bool) -> None:
        self.inflight -= 1
        if image:
            self.image_inflight -= 1
        if self._waiters:
            self._wake()

    def _wake(self) -> None:
        # Grant in arrival order; an image request held by the image cap does not block text requests.
        for w in list(self._waiters):
            if self.inflight >= self.limit:
                break
            if w.fut.done():
                self._waiters.remove(w)
                continue
            if self._fits(w.image):
                self._take(w.image)
                w.granted = True
                self._waiters.remove(w)
                w.fut.set_result(None)


@dataclass(slots=True)
class BackendRuntime:
    name: str
    cfg: Backend
    breaker: Breaker
    limiter: Limiter
    health: str = UNKNOWN
    detail: str | None = None
    checked_at: float | None = None  # unix seconds of the last probe
    down_since: float | None = None  # monotonic time the probe first saw it down
    loaded: frozenset[str] = frozenset()
    model_states: dict[str, str] = field(default_factory=dict)
    # Why the request path distrusts it (a connect timeout, the circuit opening, a failed probe) until
    # the next answer from it; routing skips a suspect backend like a down one.
    suspect: str | None = None
    suspect_until: float = 0.0  # monotonic; a suspect backend gets another chance after the breaker's reset time
    # Called with the reason when the backend turns bad (the upstream cancels what waits on it).
    bad_listeners: list[Callable[[str], None]] = field(default_factory=list)
    # What happened on the request path, for /metrics by backend and host (also the pool's
    # connection counts): connect_timeout, connect_refused, read_timeout, went_bad, redispatched,
    # cancelled_upstream, spilled_from, spilled_to, no_replay, connections_opened, stale_closed, stray_closed.
    events: dict[str, int] = field(default_factory=dict)
    where: str = field(init=False)  # "backend 'x' on host": the start of every message about it

    def __post_init__(self) -> None:
        self.where = f"backend {self.name!r} on {self.cfg.host}"
        # The open circuit itself keeps requests away (and lets its half-open trial through).
        self.breaker.on_open = lambda: self.mark_bad(
            f"circuit opened after {self.breaker.consecutive} consecutive failures", suspect=False
        )

    @property
    def host(self) -> str:
        return self.cfg.host

    @property
    def kind(self) -> BackendKind:
        return self.cfg.kind

    def usable(self) -> bool:
        if self.suspect is not None and time.monotonic() >= self.suspect_until:
            self.suspect = None
        return self.health != DOWN and self.suspect is None and self.breaker.allows()

    def count(self, event: str, n: int = 1) -> None:
        self.events[event] = self.events.get(event, 0) + n

    def mark_bad(self, reason: str, *, suspect: bool = True) -> None:
        """The backend is known bad: skip it, move its queued requests on, cancel what waits on it.

        Called on a connect timeout and when the circuit opens (the request path), and through
        ``set_health(DOWN, ...)`` when the health probe fails: whichever module runs the probe loop
        must report through ``set_health`` (or call this) for a frozen backend to be left at once.
        """
        self.count("went_bad")
        if suspect:
            self.suspect = reason
            self.suspect_until = time.monotonic() + self.breaker.reset_s
        moved = self.limiter.fail_waiters(BackendBad(f"backend {self.name!r} on {self.host}: {reason}"))
        if moved:
            self.count("redispatched", moved)
        for cb in list(self.bad_listeners):
            cb(reason)

    def answered(self) -> None:
        """The backend answered (a request or a probe): it is no longer suspect."""
        self.suspect = None

    def maybe_starting(self, now: float) -> bool:
        """Down by the probe, but recently enough that it may be restarting (within its warmup window)."""
        return self.down_since is None or now - self.down_since < self.cfg.warmup_timeout_s

    def status_label(self) -> str:
        b = self.breaker.state()
        if b == "open":
            return "circuit-open"
        if self.suspect is not None and self.health != DOWN:
            return "suspect"
        return self.health

    def set_health(self, health: str, detail: str | None) -> None:
        went_down = health == DOWN and self.health != DOWN
        if health == DOWN:
            if self.health != DOWN or self.down_since is None:
                self.down_since = time.monotonic()
            self.loaded = frozenset()
            self.model_states = {}
        else:
            self.down_since = None
            self.suspect = None  # the probe got an answer
        self.health = health
        self.detail = detail
        self.checked_at = time.time()
        if went_down:
            self.mark_bad(detail or "health probe failed")
