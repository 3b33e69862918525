"""Replay a past time range from the SQLite history into fresh rolling windows.

The console uses it to show a trial window as it was (days later, or after a restart): the
returned ``Telemetry`` is in-memory only, its window spans exactly the range, and
``info(now=until)`` gives the same panes as the live view.
"""

from __future__ import annotations

from pathlib import Path

from ._history import History
from ._telemetry import Telemetry

__all__ = ["replay"]


def replay(
    history_path: Path,
    since: float,
    until: float,
    *,
    role: str | None = None,
    buckets: int = 120,
    chunk: int = 5000,
    max_records: int = 2_000_000,
) -> Telemetry:
    """Load records with ``since <= time < until`` (at most ``max_records``) into a new Telemetry.

    Reads in chunks by row id, so a range of millions of rows never sits in memory at once.
    Raises HistoryError when the file cannot be read.
    """
    if until <= since:
        raise ValueError(f"replay needs since < until (got {since} .. {until})")
    bucket_s = (until - since) / buckets
    # One spare bucket: an unaligned range touches buckets + 1 bucket indices.
    tel = Telemetry(None, window_s=bucket_s * (buckets + 1), bucket_s=bucket_s, recent=300, last_errors=50)
    source = History(Path(history_path))
    last_id: int | None = 0
    loaded = 0
    while loaded < max_records:
        rows = source.read(
            since=since, until=until, role=role, after_id=last_id, limit=min(chunk, max_records - loaded)
        )
        if not rows:
            break
        for _, rec in rows:
            tel.ingest(rec)
        last_id = rows[-1][0]
        loaded += len(rows)
    return tel
