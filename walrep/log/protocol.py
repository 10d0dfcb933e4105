"""``WriteAheadLog``: the interface ``Wal`` and ``MemoryLog`` both implement.

One contract, checked statically here (mypy) and by one test suite run against both
(``tests/log/test_log_contract.py``). The ordering contracts are those of ``wal.py``
(appends, durability), ``reader.py`` (reads across truncation) and ``durable.py``
(durable listeners).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from walrep.log.config import LogConfig
from walrep.log.durable import DurableListener
from walrep.log.epochs import EpochHistory
from walrep.log.frame import EncodedBatch, Event
from walrep.log.limits import LogLimits
from walrep.log.replica_state import ReplicaState
from walrep.log.types import AppendResult, Record, RecoveryReport, StoredFrame


class WriteAheadLog(Protocol):
    config: LogConfig
    recovery: RecoveryReport
    epochs: EpochHistory

    @property
    def log_start(self) -> int: ...
    @property
    def log_end(self) -> int: ...
    @property
    def durable_end(self) -> int: ...
    @property
    def limits(self) -> LogLimits: ...
    @property
    def last_epoch(self) -> int: ...
    @property
    def last_epoch_start(self) -> int: ...
    @property
    def replica_state(self) -> ReplicaState: ...
    @property
    def group_commit_stats(self) -> tuple[int, int]: ...

    def encode(self, events: Sequence[Event]) -> EncodedBatch: ...
    async def append(
        self, events: Sequence[Event], *, epoch: int, ingest_time_ms: int | None = None
    ) -> AppendResult: ...
    async def append_encoded(
        self, batch: EncodedBatch, *, epoch: int, ingest_time_ms: int | None = None
    ) -> AppendResult: ...
    async def append_frames(self, frames: bytes) -> AppendResult: ...
    def append_sync(
        self, events: Sequence[Event], *, epoch: int, ingest_time_ms: int | None = None
    ) -> AppendResult: ...

    async def sync(self) -> int: ...
    async def wait_durable(self, offset: int) -> None: ...
    def add_durable_listener(self, callback: DurableListener) -> None: ...
    def save_replica_state(self, state: ReplicaState) -> None: ...

    def frames(
        self, from_offset: int | None = None, to_offset: int | None = None
    ) -> Iterator[StoredFrame]: ...
    def read(
        self, from_offset: int | None = None, to_offset: int | None = None
    ) -> Iterator[Record]: ...
    def tail(self, from_offset: int) -> AsyncIterator[Record]: ...
    async def wait_beyond(self, offset: int) -> None: ...

    def truncate_after(self, offset: int) -> None: ...
    def delete_before(self, offset: int) -> int: ...
    async def aclose(self) -> None: ...
    def close(self) -> None: ...


if TYPE_CHECKING:  # both implementations conform (checked by mypy, never run)
    from walrep.log.memory import MemoryLog
    from walrep.log.wal import Wal

    def _wal(log: Wal) -> WriteAheadLog:
        return log

    def _memory(log: MemoryLog) -> WriteAheadLog:
        return log
