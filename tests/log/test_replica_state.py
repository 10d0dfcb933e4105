"""``Wal``'s replica state file (``replica-state``): format, damage, and recovery below the
committed floor (refused on open, lowered and reported by a repair).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.log.helpers import SMALL, batch, dir_snapshot, flip_bit, frame_positions, segment_files
from walrep.errors import CorruptLogError
from walrep.log import ReplicaState, Wal
from walrep.log.replica_state import FILE_NAME
from walrep.log.verify import VerifyStatus, verify_log


def build(directory: Path, floor: int) -> int:
    with Wal.open(directory, SMALL) as wal:
        while len(wal.segments()) < 3:
            wal.append_sync(batch(wal.log_end, 3, pad=40), epoch=1)
        wal.save_replica_state(ReplicaState(committed_floor=floor, highest_epoch=4))
        return wal.log_end


def test_the_file_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    end = build(tmp_path / "log", floor=5)
    text = (tmp_path / "log" / FILE_NAME).read_text()
    assert text.startswith("walrep-replica-state 1\ncommitted_floor 5\nhighest_epoch 4\ncrc32c ")
    with Wal.open(tmp_path / "log", SMALL) as wal:
        assert wal.replica_state == ReplicaState(5, 4) and wal.log_end == end
        before = dir_snapshot(tmp_path / "log")
        wal.save_replica_state(ReplicaState(2, 1))  # nothing new: nothing written
        assert dir_snapshot(tmp_path / "log") == before
    report = verify_log(tmp_path / "log")
    assert report.ok and report.replica_state == ReplicaState(5, 4)


def test_a_damaged_file_is_corrupt_and_named(tmp_path: Path) -> None:
    build(tmp_path / "log", floor=5)
    path = tmp_path / "log" / FILE_NAME
    flip_bit(path, 30, 0)
    with pytest.raises(CorruptLogError) as info:
        Wal.open(tmp_path / "log", SMALL)
    assert info.value.segment == str(path) and "replica state" in info.value.reason
    report = verify_log(tmp_path / "log")
    assert report.status is VerifyStatus.CORRUPT
    assert [f.path for f in report.findings] == [path]


def test_a_torn_tail_below_the_floor_is_refused_then_repaired(tmp_path: Path) -> None:
    end = build(tmp_path / "log", floor=0)
    with Wal.open(tmp_path / "log", SMALL) as wal:
        wal.save_replica_state(ReplicaState(committed_floor=end))
    last = segment_files(tmp_path / "log")[-1]
    position, _, base = frame_positions(last.read_bytes(), SMALL.max_batch_bytes)[-1]
    os.truncate(last, position + 10)  # committed events lost: not only a torn tail
    report = verify_log(tmp_path / "log")
    assert report.status is VerifyStatus.CORRUPT
    assert any("committed floor" in f.reason for f in report.findings)
    with pytest.raises(CorruptLogError) as info:
        Wal.open(tmp_path / "log", SMALL)
    assert info.value.segment.endswith(FILE_NAME) and info.value.offset == base
    with Wal.open(tmp_path / "log", SMALL, repair=True) as wal:
        assert wal.log_end == base
        assert wal.replica_state.committed_floor == base
        assert wal.recovery.repaired == [
            f"committed floor lowered from {end} to the log end {base}"
        ]
    with Wal.open(tmp_path / "log", SMALL) as wal:
        assert wal.recovery.lines() == [] and wal.replica_state.committed_floor == base


def test_a_repair_that_cuts_below_the_floor_lowers_it(tmp_path: Path) -> None:
    end = build(tmp_path / "log", floor=0)
    with Wal.open(tmp_path / "log", SMALL) as wal:
        wal.save_replica_state(ReplicaState(committed_floor=end - 1, highest_epoch=4))
    sealed = segment_files(tmp_path / "log")[1]
    position, _, base = frame_positions(sealed.read_bytes(), SMALL.max_batch_bytes)[1]
    flip_bit(sealed, position + 50, 3)
    with Wal.open(tmp_path / "log", SMALL, repair=True) as wal:
        assert wal.log_end == base
        assert wal.replica_state == ReplicaState(committed_floor=base, highest_epoch=4)
        [cut, lowered] = wal.recovery.repaired
        assert str(sealed) in cut and f"offset {base}" in cut
        assert lowered == f"committed floor lowered from {end - 1} to the log end {base}"
    assert verify_log(tmp_path / "log").ok
