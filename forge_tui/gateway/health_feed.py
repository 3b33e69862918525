"""The gateway's side of the one backend probe loop: each ``BackendState`` the prober produces
goes into the backend's ``BackendRuntime`` (health, what it holds, the breaker), which is what
routing reads. ``set_health`` is the runtime's hook: a backend turning bad there moves its
queued requests on and cancels what waits on it."""

from __future__ import annotations

from collections.abc import Callable

from ..health import READY, BackendProber, BackendState
from .backends import BackendRuntime

__all__ = ["feed"]


def apply(rt: BackendRuntime, st: BackendState) -> None:
    rt.set_health(st.health.value, st.detail)
    if st.health is not READY:
        return
    rt.breaker.success()  # an answering backend is evidence enough to close the circuit
    rt.answered()
    # What it holds by its own word: llama-swap's ready models (upstream names), a llama-server's file.
    rt.loaded = st.holds or frozenset()
    rt.model_states = dict(st.model_states)


def feed(prober: BackendProber, runtimes: dict[str, BackendRuntime]) -> Callable[[], None]:
    """Apply every new state to its runtime; returns the unsubscribe."""

    def on_state(st: BackendState) -> None:
        rt = runtimes.get(st.name)
        if rt is not None:
            apply(rt, st)

    return prober.subscribe(on_state)
