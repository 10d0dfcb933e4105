"""The two log implementations behind one test interface, for the contract suite.

``Impl.open(config)`` makes a fresh log; ``Impl.reopen(log)`` closes it and opens what
it left behind: ``Wal.open`` of its directory, or ``MemoryLog.recover`` of its disk
image. ``state(log)`` is everything a refused call must leave unchanged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tests.log.helpers import dir_snapshot
from walrep.log import LogConfig, MemoryLog, Wal
from walrep.log.frame import Event as FrameEvent
from walrep.log.frame import build_frame, encode_batch

Log = Wal | MemoryLog


class Impl:
    name = ""

    def open(self, config: LogConfig) -> Log:
        raise NotImplementedError

    def reopen(self, log: Log, config: LogConfig | None = None) -> Log:
        raise NotImplementedError

    def state(self, log: Log) -> tuple[Any, ...]:
        """What a refused call must leave unchanged (files or image included)."""
        return (
            log.log_start,
            log.log_end,
            log.durable_end,
            log.epochs.entries,
            log.replica_state,
            [(f.header, f.data) for f in log.frames()],
        )

    def close_all(self) -> None:
        raise NotImplementedError

    def reopen_losing_last_frame(self, log: Log) -> Log:
        raise NotImplementedError


class WalImpl(Impl):
    name = "wal"

    def reopen_losing_last_frame(self, log: Log) -> Wal:
        """A crash lost the newest frame (its epoch's history entry had been saved)."""
        assert isinstance(log, Wal)
        *_, (_, _, _, path) = log.segments()
        last = list(log.frames())[-1]
        log.close()
        with open(path, "r+b") as f:
            f.truncate(last.position)
        return self.reopen_closed(log)

    def reopen_closed(self, log: Wal) -> Wal:
        wal = Wal.open(log.directory, log.config)
        self.opened.append(wal)
        return wal

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.opened: list[Wal] = []
        self.count = 0

    def open(self, config: LogConfig) -> Wal:
        self.count += 1
        wal = Wal.open(self.tmp_path / f"log-{self.count}", config)
        self.opened.append(wal)
        return wal

    def reopen(self, log: Log, config: LogConfig | None = None) -> Wal:
        assert isinstance(log, Wal)
        log.close()
        wal = Wal.open(log.directory, config or log.config)
        self.opened.append(wal)
        return wal

    def state(self, log: Log) -> tuple[Any, ...]:
        assert isinstance(log, Wal)
        return (*super().state(log), dir_snapshot(log.directory))

    def close_all(self) -> None:
        for wal in self.opened:
            wal.close()


class MemoryImpl(Impl):
    name = "memory"

    def reopen_losing_last_frame(self, log: Log) -> MemoryLog:
        """A crash lost the newest frame (its epoch's history entry had been saved)."""
        assert isinstance(log, MemoryLog)
        last = list(log.frames())[-1]
        log.close()
        image = log.disk_image()
        *sealed, newest = image.segments
        cut = dataclasses.replace(
            newest, data=newest.data[: last.position], durable_bytes=last.position
        )
        return MemoryLog.recover(dataclasses.replace(image, segments=(*sealed, cut)), log.config)

    def open(self, config: LogConfig) -> MemoryLog:
        return MemoryLog.create(config)

    def reopen(self, log: Log, config: LogConfig | None = None) -> MemoryLog:
        assert isinstance(log, MemoryLog)
        log.close()
        return MemoryLog.recover(log.disk_image(), config or log.config)

    def state(self, log: Log) -> tuple[Any, ...]:
        assert isinstance(log, MemoryLog)
        return (*super().state(log), log.disk_image())

    def close_all(self) -> None:
        return None


def frame_at_end(
    log: Log,
    events: list[FrameEvent],
    epoch: int,
    *,
    ingest_time_ms: int = 1,
    max_batch_bytes: int | None = None,
    compress_threshold_bytes: int | None = None,
) -> bytes:
    """A frame of ``events`` at ``log_end``, encoded with the log's limits or other ones."""
    c = log.config
    batch = encode_batch(
        events,
        max_event_bytes=max_batch_bytes or c.max_event_bytes,
        max_batch_bytes=max_batch_bytes or c.max_batch_bytes,
        compress_threshold_bytes=compress_threshold_bytes or c.compress_threshold_bytes,
    )
    return build_frame(batch, base_offset=log.log_end, epoch=epoch, ingest_time_ms=ingest_time_ms)
