"""Typed messages between the console's parts.

The app polls the gateway and posts ``SnapshotReady`` to the screen on top; screens turn the
operator's keys into ``*Requested`` messages that bubble up to the app, which owns the control
and the workers. No widget reaches into another.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from ..schema import Snapshot

__all__ = [
    "DeprecationRequested",
    "JobLogRequested",
    "JobRequested",
    "RollbackRequested",
    "RollbackTrialRequested",
    "SmokeRequested",
    "SnapshotReady",
    "SwapRequested",
]


@dataclass
class SnapshotReady(Message, bubble=False):
    """A fresh snapshot for the screen on top; a burst collapses into the newest one."""

    snapshot: Snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SnapshotReady)


@dataclass
class SwapRequested(Message):
    role: str
    origin: str = ""  # where the operator picked it, said in the dialog ("selected in Roles")


@dataclass
class RollbackRequested(Message):
    role: str
    origin: str = ""  # where the operator picked it, said in the dialog ("selected in Roles")


@dataclass
class RollbackTrialRequested(Message):
    pass


@dataclass
class DeprecationRequested(Message):
    model: str
    origin: str = ""  # where the operator picked it, said in the dialog ("selected in Roles")


@dataclass
class SmokeRequested(Message):
    roles: list[str] | None  # None: every role
    origin: str = ""  # where the operator picked it, said in the dialog ("selected in Roles")


@dataclass
class JobRequested(Message):
    kind: str  # rebuild, verify
    host: str
    origin: str = ""  # where the operator picked it, said in the dialog ("selected in Roles")


@dataclass
class JobLogRequested(Message):
    host: str | None
