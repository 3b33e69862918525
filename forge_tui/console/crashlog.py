"""The console's log file: while the console owns the terminal, the ``forge_tui`` loggers write here.

Stderr is the terminal the console draws on, so a warning or a traceback printed there would be
lost (Textual captures it) or would tear the screen. ``ConsoleLog`` sends the package's log records
to a file for as long as the console runs; pane faults and the console's own crash (``ForgeApp``
logs the traceback before it ends) are found there.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType

__all__ = ["ConsoleLog"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ConsoleLog:
    def __init__(self, path: Path, *, level: int = logging.INFO) -> None:
        self.path = Path(path)
        self._level = level
        self._handler: logging.Handler | None = None
        self._logger = logging.getLogger("forge_tui")
        self._old_level = self._logger.level
        self._old_propagate = self._logger.propagate

    def __enter__(self) -> ConsoleLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.path, encoding="utf-8")
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler.setLevel(self._level)
        self._handler = handler
        self._logger.addHandler(handler)
        if self._logger.level == logging.NOTSET or self._logger.level > self._level:
            self._logger.setLevel(self._level)
        self._logger.propagate = False  # nothing reaches stderr (the terminal) while the console draws
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            self._logger.error("console ended on an exception", exc_info=(kind, exc, tb))  # type: ignore[arg-type]
        if self._handler is not None:
            self._logger.removeHandler(self._handler)
            self._handler.close()
            self._handler = None
        self._logger.setLevel(self._old_level)
        self._logger.propagate = self._old_propagate
