"""The main screen's panes; each redraws itself from a ``Snapshot`` bound by its screen."""

from .errors import ErrorsPane
from .hosts import HostsList
from .latency import LatencyPane
from .models import ModelsTable
from .requests import RequestsPane, RequestsTable
from .roles import RolesTable
from .status import StatusBar

__all__ = [
    "ErrorsPane",
    "HostsList",
    "LatencyPane",
    "ModelsTable",
    "RequestsPane",
    "RequestsTable",
    "RolesTable",
    "StatusBar",
]
