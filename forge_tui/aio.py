"""Run the process's event loop: uvloop when it is installed (the ``fast`` extra), else asyncio.

uvloop cuts the gateway's CPU per request by about a fifth (bench/RESULTS.md); the product
behaves the same on either loop. ``FORGE_UVLOOP=0`` forces the standard loop.

``settle_gc`` is the process's collector policy once it has started (see there).
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["MIDDLE_GC_THRESHOLD", "YOUNG_GC_THRESHOLD", "loop_name", "run", "settle_gc"]

T = TypeVar("T")


def _uvloop() -> Any:
    if os.environ.get("FORGE_UVLOOP", "1") == "0":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def loop_name() -> str:
    return "uvloop" if _uvloop() is not None else "asyncio"


def run(coro: Coroutine[Any, Any, T]) -> T:
    uv = _uvloop()
    if uv is None:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uv.new_event_loop) as runner:
        return runner.run(coro)


YOUNG_GC_THRESHOLD = 5_000  # surviving allocations between young collections (CPython's default: 700)
MIDDLE_GC_THRESHOLD = 3  # young collections between middle ones (CPython's default: 10)


def settle_gc(young: int = YOUNG_GC_THRESHOLD, middle: int = MIDDLE_GC_THRESHOLD) -> None:
    """Call once a long-running process has started (``serve``, the console).

    What exists by then (modules, the catalog, the object graph) lives as long as the process: it
    is collected once and frozen out of the collector's view (``gc.freeze``), so later full
    collections do not walk it. A request's objects die by reference counting, so young
    collections find little: at CPython's default they ran every ~100 requests on the request
    path, now about seven times less often (~6 % fewer instructions per request, measured under
    callgrind at concurrency 32). A middle collection comes every third young one, so it walks at
    most ~15,000 objects: a few milliseconds, never a pause a console key would feel.
    """
    gc.collect()
    gc.freeze()
    oldest = gc.get_threshold()[2]
    gc.set_threshold(young, middle, oldest)
