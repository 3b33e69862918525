"""Run the process's event loop: uvloop when it is installed (the ``fast`` extra), else asyncio.

uvloop cuts the gateway's CPU per request by about a fifth (bench/RESULTS.md); the product
behaves the same on either loop. ``FORGE_UVLOOP=0`` forces the standard loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["loop_name", "run"]

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
