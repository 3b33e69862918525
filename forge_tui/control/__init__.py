"""Observe and steer a gateway, embedded or remote, through one interface (the schema is ``forge_tui.schema``)."""

from .base import Control, ControlError

__all__ = ["Control", "ControlError"]
