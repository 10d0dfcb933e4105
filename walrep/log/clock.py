"""The one wall clock of the log: the default source of a batch's ingest time.

Kept apart from the plain types and the codec, which take times as arguments (the
simulator and the tests pass their own clock to ``Wal.open`` / ``MemoryLog.create``).
"""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    """The default clock of a log's ingest times: ms since the Unix epoch."""
    return time.time_ns() // 1_000_000
