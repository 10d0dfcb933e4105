"""``walrep_fsync_seconds``: how long each force of the node's log takes.

``TimedFileOps`` is the log's file seam (``walrep.log.fsutil.FileOps``) with every
``fdatasync``/``fsync`` timed into a histogram (they run on the log's group-commit
thread; ``prometheus_client`` metrics are thread-safe). Nothing else changes: the call,
its errors and their handling are the default's.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Histogram
from prometheus_client.registry import CollectorRegistry

from walrep.log.fsutil import FileOps

BUCKETS_S = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class TimedFileOps(FileOps):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = Histogram(
            "walrep_fsync_seconds",
            "Duration of each fdatasync/fsync of the node's log",
            buckets=BUCKETS_S,
            registry=registry,
        )

    def fdatasync(self, fd: int) -> None:
        self._timed(super().fdatasync, fd)

    def fsync(self, fd: int) -> None:
        self._timed(super().fsync, fd)

    def _timed(self, force: Callable[[int], None], fd: int) -> None:
        started = time.perf_counter()
        try:
            force(fd)
        finally:
            self.seconds.observe(time.perf_counter() - started)
