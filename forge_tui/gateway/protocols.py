"""What the gateway needs from its neighbours, as structural types: telemetry, and mounts (routes
served on its port from outside it, such as the operator's admin API). Anything with these methods will do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from aiohttp import web
from prometheus_client.core import Metric

from ..schema import TelemetryInfo
from ..telemetry.records import RequestRecord

__all__ = ["Mount", "TelemetryLike"]


class TelemetryLike(Protocol):
    def record(self, rec: RequestRecord) -> None: ...

    def info(self, inflight: int = 0) -> TelemetryInfo: ...

    def collect(self) -> Iterable[Metric]:
        """Its ``/metrics`` families (a ``prometheus_client`` custom collector)."""


class Mount(Protocol):
    def routes(self) -> Sequence[web.RouteDef]: ...

    def listening(self, url: str) -> None:
        """The gateway's port is bound and serving at ``url``."""

    def stopped(self) -> None:
        """The gateway stopped serving."""
