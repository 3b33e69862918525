"""The operator service (everything an operator can see and change) and its admin HTTP adapter.

``service.OperatorService`` is the one implementation; ``admin_http.AdminHttp`` serves it over
HTTP on the gateway's port, ``control.local.LocalControl`` calls it in-process.
"""

from .service import OperatorError, OperatorService

__all__ = ["OperatorError", "OperatorService"]
