"""Request telemetry: live rolling windows, Prometheus exposition, SQLite history (past windows: forge_tui.trial).

tel = Telemetry(Path("~/.local/state/forge/history.sqlite3"))
await tel.start()            # HistoryError (names the path) if the file is unusable
tel.record(RequestRecord(...))   # on the request path: O(1), never touches the disk
tel.info()                   # TelemetryInfo for the console
tel.collect()                # its /metrics families (a prometheus_client collector; Exposition renders)
await tel.close()            # flushes; idempotent
"""

from ._history import HistoryError
from ._metrics import CONTENT_TYPE, Exposition
from ._telemetry import Telemetry
from .records import ErrorClass, RequestRecord

__all__ = ["CONTENT_TYPE", "ErrorClass", "Exposition", "HistoryError", "RequestRecord", "Telemetry"]
