"""``Wal``'s group commit: the interval force outside the lock, durable progress announced,
and disk errors injected through ``FileOps`` (write, fdatasync, interval fdatasync,
truncation, small files): each fails the log with ``LogFailedError``, for good.
"""

from __future__ import annotations

import asyncio
import errno
import threading
from pathlib import Path

import pytest

from tests.log.helpers import FaultyOps, batch, dir_snapshot, event
from walrep.errors import LogFailedError
from walrep.log import FileOps, FsyncPolicy, LogConfig, ReplicaState, Wal
from walrep.log.frame import build_frame

INTERVAL = LogConfig(fsync_policy=FsyncPolicy.INTERVAL, fsync_interval_ms=5)
WAIT_S = 10  # bound on waiting for something that must happen


async def assert_failed_for_good(wal: Wal, cause: OSError | None = None) -> None:
    """Every later call raises ``LogFailedError``; the fault may be gone by now."""
    frame = build_frame(wal.encode([event(0)]), base_offset=wal.log_end, epoch=9, ingest_time_ms=0)
    calls = [
        lambda: wal.append_sync([event(1)], epoch=9),
        lambda: wal.truncate_after(wal.log_start),
        lambda: wal.delete_before(0),
        lambda: wal.save_replica_state(ReplicaState(0, 9)),
        lambda: list(wal.read()),
    ]
    for call in calls:
        with pytest.raises(LogFailedError):
            call()
    for coro in (
        lambda: wal.append([event(1)], epoch=9),
        lambda: wal.append_encoded(wal.encode([event(1)]), epoch=9),
        lambda: wal.append_frames(frame),
        lambda: wal.sync(),
        lambda: wal.wait_durable(wal.log_end + 1),
    ):
        with pytest.raises(LogFailedError):
            await coro()


async def test_a_write_error_fails_the_append_and_the_log(tmp_path: Path) -> None:
    ops = FaultyOps()
    wal = Wal.open(tmp_path / "log", file_ops=ops)
    await wal.append(batch(0, 2), epoch=1)
    ops.failing.add("pwritev")
    with pytest.raises(LogFailedError) as info:
        await wal.append(batch(2, 2), epoch=1)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == errno.EIO
    assert wal.durable_end == 2
    ops.failing.clear()  # the disk is fine again: the log stays failed all the same
    await assert_failed_for_good(wal)
    await wal.aclose()
    with Wal.open(tmp_path / "log") as again:  # what is on disk
        assert again.log_end == 2 and [r.offset for r in again.read()] == [0, 1]


async def test_an_fdatasync_error_is_never_retried_as_if_the_data_were_safe(
    tmp_path: Path,
) -> None:
    ops = FaultyOps()
    wal = Wal.open(tmp_path / "log", file_ops=ops)
    announced: list[int] = []
    wal.add_durable_listener(announced.append)
    await wal.append(batch(0, 2), epoch=1)
    ops.failing.add("fdatasync")
    with pytest.raises(LogFailedError) as info:
        await wal.append(batch(2, 3), epoch=1)
    assert isinstance(info.value.__cause__, OSError)
    assert (wal.log_end, wal.durable_end) == (5, 2)  # written, never called durable
    syncs = ops.calls["fdatasync"]
    ops.failing.clear()
    await assert_failed_for_good(wal)
    assert ops.calls["fdatasync"] == syncs  # no second fdatasync "to make sure"
    assert announced == [2]
    wal.close()
    with Wal.open(tmp_path / "log") as again:  # the bytes did reach the file
        assert again.log_end == 5 and again.recovery.lines() == []


async def test_an_interval_fdatasync_error_fails_the_log(tmp_path: Path) -> None:
    ops = FaultyOps()
    ops.failing.add("fdatasync")
    wal = Wal.open(tmp_path / "log", INTERVAL, file_ops=ops)
    result = await wal.append(batch(0, 3), epoch=1)  # written; the timer forces it
    with pytest.raises(LogFailedError):
        await asyncio.wait_for(wal.wait_durable(result.end_offset), WAIT_S)
    assert wal.durable_end == 0
    await assert_failed_for_good(wal)
    wal.close()
    with Wal.open(tmp_path / "log") as again:
        assert again.log_end == 3


async def test_a_failed_truncation_fails_the_log_and_open_finishes_it(tmp_path: Path) -> None:
    ops = FaultyOps()
    wal = Wal.open(tmp_path / "log", file_ops=ops)
    for i in range(4):
        await wal.append(batch(i * 3, 3), epoch=1)
    ops.failing.add("ftruncate")  # after the intent record is durable
    with pytest.raises(LogFailedError):
        wal.truncate_after(4)
    await assert_failed_for_good(wal)
    wal.close()
    with Wal.open(tmp_path / "log") as again:
        assert again.recovery.truncation_redone_to == 4
        assert [r.offset for r in again.read()] == [0, 1, 2, 3]


async def test_a_failed_write_of_a_small_file_fails_the_log(tmp_path: Path) -> None:
    ops = FaultyOps()
    wal = Wal.open(tmp_path / "log", file_ops=ops)
    await wal.append(batch(0, 3), epoch=1)
    before = dir_snapshot(tmp_path / "log")
    ops.failing.add("write")
    with pytest.raises(LogFailedError):
        wal.save_replica_state(ReplicaState(committed_floor=2))
    assert wal.replica_state == ReplicaState()
    ops.failing.clear()
    await assert_failed_for_good(wal)
    wal.close()
    after = {k: v for k, v in dir_snapshot(tmp_path / "log").items() if not k.endswith(".tmp")}
    assert after == before

    ops = FaultyOps()  # a new epoch is recorded before its first frame: that write fails
    wal = Wal.open(tmp_path / "log", file_ops=ops)
    ops.failing.add("write")
    with pytest.raises(LogFailedError):
        await wal.append(batch(3, 1), epoch=2)
    assert (wal.log_end, wal.last_epoch) == (3, 1)
    await wal.aclose()


async def test_a_read_error_is_log_failed_not_out_of_range(tmp_path: Path) -> None:
    ops = FaultyOps()
    # Nothing kept in memory, so the read goes to the file (recent.py serves fresh frames).
    wal = Wal.open(tmp_path / "log", LogConfig(recent_frames_bytes=0), file_ops=ops)
    await wal.append(batch(0, 3), epoch=1)
    ops.failing.add("pread")
    with pytest.raises(LogFailedError) as info:
        list(wal.read())
    assert isinstance(info.value.__cause__, OSError)
    ops.failing.clear()
    await assert_failed_for_good(wal)
    await wal.aclose()


def test_open_failing_on_disk_is_log_failed(tmp_path: Path) -> None:
    ops = FaultyOps()
    ops.failing.add("fsync")  # creating the first segment forces the directory
    with pytest.raises(LogFailedError) as info:
        Wal.open(tmp_path / "log", file_ops=ops)
    assert isinstance(info.value.__cause__, OSError)
    with Wal.open(tmp_path / "log") as wal:  # the directory was released
        assert wal.log_end == 0


# --- durable progress -----------------------------------------------------------------------


async def test_interval_policy_makes_a_lone_append_durable_and_says_so(tmp_path: Path) -> None:
    wal = Wal.open(tmp_path / "log", INTERVAL)
    announced: list[int] = []
    wal.add_durable_listener(announced.append)
    result = await wal.append(batch(0, 3), epoch=1)
    await asyncio.wait_for(wal.wait_durable(result.end_offset), WAIT_S)
    assert wal.durable_end == 3 and announced == [3]
    assert wal.group_commit_stats == (1, 1)  # no further append was needed
    await wal.aclose()


async def test_interval_policy_forces_under_steady_load_too(tmp_path: Path) -> None:
    """Appends that keep coming do not postpone the interval force."""
    wal = Wal.open(tmp_path / "log", INTERVAL)
    announced: list[int] = []
    wal.add_durable_listener(announced.append)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not announced and loop.time() < deadline:
        await wal.append(batch(wal.log_end, 1), epoch=1)
    assert announced and announced[0] <= wal.log_end
    assert announced == sorted(announced)
    await wal.aclose()


class GatedSyncOps(FileOps):
    """Holds the first ``gates`` fdatasync calls until released (and says when)."""

    def __init__(self, gates: int) -> None:
        self.entered = [threading.Event() for _ in range(gates)]
        self.release = [threading.Event() for _ in range(gates)]
        self.returned = [threading.Event() for _ in range(gates)]
        self._calls = 0

    def fdatasync(self, fd: int) -> None:
        n, self._calls = self._calls, self._calls + 1
        if n < len(self.entered):
            self.entered[n].set()
            self.release[n].wait(WAIT_S)
        super().fdatasync(fd)
        if n < len(self.entered):
            self.returned[n].set()

    def release_all(self) -> None:
        for gate in self.release:
            gate.set()


async def test_the_interval_fdatasync_does_not_hold_the_lock(tmp_path: Path) -> None:
    ops = GatedSyncOps(gates=2)
    wal = Wal.open(tmp_path / "log", INTERVAL, file_ops=ops)
    try:
        await wal.append(batch(0, 4), epoch=1)
        assert await asyncio.to_thread(ops.entered[0].wait, WAIT_S)
        # The interval fdatasync is running: the calls that take the lock go through.
        wal.truncate_after(2)
        wal.append_sync(batch(2, 1), epoch=1)
        wal.save_replica_state(ReplicaState(committed_floor=1))
        assert not ops.returned[0].is_set()  # they did not wait for it
        assert (wal.log_end, wal.durable_end) == (3, 2)  # the cut forced what it kept
        ops.release[0].set()
        assert await asyncio.to_thread(ops.entered[1].wait, WAIT_S)  # the next interval
        # The first fdatasync started at log end 4, before the cut: it proves nothing now.
        assert wal.durable_end == 2
        ops.release[1].set()
        await asyncio.wait_for(wal.wait_durable(3), WAIT_S)
        assert [r.offset for r in wal.read()] == [0, 1, 2]
    finally:
        ops.release_all()
        await wal.aclose()
