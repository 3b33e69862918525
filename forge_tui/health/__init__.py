"""Backend state, one model for the whole process: the vocabulary, the probe loop, host reachability.

A base-layer package (it imports only ``config`` and ``errortext``): the gateway routes on it,
the hosts service shows it, preflight and smoke check against it, and neither of those two
imports the other to get it.
"""

from .identity import BUNDLED_FILES, answers_as, known_names, matches, models_held
from .prober import BackendProber, describe_failure
from .reach import HostReach, Reachability
from .vocab import DOWN, READY, STARTING, STARTUP_MARKERS, UNKNOWN, BackendState, Health, is_startup_text

__all__ = [
    "BUNDLED_FILES",
    "DOWN",
    "READY",
    "STARTING",
    "STARTUP_MARKERS",
    "UNKNOWN",
    "BackendProber",
    "BackendState",
    "Health",
    "HostReach",
    "Reachability",
    "answers_as",
    "describe_failure",
    "is_startup_text",
    "known_names",
    "matches",
    "models_held",
]
