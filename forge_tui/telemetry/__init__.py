"""Request telemetry: live rolling windows, Prometheus exposition, SQLite history, replay.

tel = Telemetry(Path("~/.local/state/forge/history.sqlite3"))
await tel.start()            # HistoryError (names the path) if the file is unusable
tel.record(RequestRecord(...))   # on the request path: O(1), never touches the disk
tel.info()                   # TelemetryInfo for the console
tel.prometheus()             # /metrics body
await tel.close()            # flushes; idempotent
"""

from ._history import HistoryError
from ._telemetry import Telemetry
from .records import ErrorClass, RequestRecord

__all__ = ["ErrorClass", "HistoryError", "RequestRecord", "Telemetry"]
