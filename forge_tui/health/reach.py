"""Is a host reachable? One answer from two kinds of evidence.

The backend prober sees the network every health interval (a connect that times out, or any
answer at all, even a refusal); the hosts service's SSH probe sees the host itself, less often.
A host counts as unreachable when the latest word of either says so, and reachable when every
source that has spoken says so: a dropped link shows within one health interval plus a connect
timeout, long before the next SSH probe gives up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["HostReach", "Reachability"]

SOURCES = ("network", "ssh")


@dataclass(frozen=True, slots=True)
class HostReach:
    host: str
    reachable: bool | None  # None: nobody has said yet
    since: float | None  # unix seconds of the latest word
    detail: str | None  # why it is unreachable (None when reachable)


class Reachability:
    def __init__(self) -> None:
        self._seen: dict[str, dict[str, tuple[bool, float, str | None]]] = {}
        self._listeners: list[Callable[[str, bool | None], None]] = []

    def subscribe(self, cb: Callable[[str, bool | None], None]) -> Callable[[], None]:
        """``cb(host, reachable)`` whenever a host's combined answer changes."""
        self._listeners.append(cb)
        return lambda: self._listeners.remove(cb) if cb in self._listeners else None

    def observe(self, host: str, source: str, reachable: bool, detail: str | None = None) -> None:
        if source not in SOURCES:
            raise ValueError(f"unknown reachability source {source!r} (one of {', '.join(SOURCES)})")
        before = self.get(host).reachable
        self._seen.setdefault(host, {})[source] = (reachable, time.time(), None if reachable else detail)
        after = self.get(host).reachable
        if after != before:
            for cb in list(self._listeners):
                cb(host, after)

    def said(self, host: str, source: str) -> bool | None:
        seen = self._seen.get(host, {}).get(source)
        return None if seen is None else seen[0]

    def get(self, host: str) -> HostReach:
        seen = self._seen.get(host)
        if not seen:
            return HostReach(host, None, None, None)
        down = [(at, src, d) for src, (ok, at, d) in seen.items() if not ok]
        latest = max(at for _, at, _ in seen.values())
        if down:
            at, src, d = max(down, key=lambda x: x[0])
            return HostReach(host, False, at, d or f"{src} says unreachable")
        return HostReach(host, True, latest, None)

    def hosts(self) -> dict[str, HostReach]:
        return {h: self.get(h) for h in self._seen}
