"""Observe and steer a gateway, embedded or remote, through one interface."""

from .base import Control, ControlError
from .schema import *  # noqa: F401,F403
from .schema import __all__ as _schema_all

__all__ = ["Control", "ControlError", *_schema_all]
