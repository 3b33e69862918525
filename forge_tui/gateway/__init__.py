"""The OpenAI-compatible gateway: roles, model states, thinking policy, fallback, telemetry.

Public API: ``Gateway`` (see ``app``) and the error types in ``errors``.
"""

from .app import Gateway
from .errors import GatewayBindError, GatewayError

__all__ = ["Gateway", "GatewayBindError", "GatewayError"]
