"""The snapshot restore rule: committed, replayable, the same history."""

from walrep.engine.types import SnapshotMeta
from walrep.node.restore import log_epoch_before, snapshot_refusal


def meta(offset: int, log_epoch: int) -> SnapshotMeta:
    return SnapshotMeta(offset, 4, "0" * 32, (("a", "1"),), 1, 0, log_epoch)


def epochs(offset: int) -> int | None:
    """A log written by epoch 1 on [0, 100), epoch 3 from 100."""
    return 1 if offset < 100 else 3


def refusal(m: SnapshotMeta, *, floor: int = 500, start: int = 0) -> str | None:
    return snapshot_refusal(
        m, log_start=start, durable_end=600, committed_floor=floor, epoch_at=epochs
    )


def test_a_snapshot_of_this_history_under_the_floor_is_usable() -> None:
    assert refusal(meta(300, 3)) is None
    assert refusal(meta(100, 1)) is None  # the record at 99 is epoch 1
    assert refusal(meta(0, 0)) is None


def test_above_the_committed_floor_it_is_refused() -> None:
    assert "holds 500" in (refusal(meta(501, 3)) or "")


def test_below_the_log_start_it_cannot_be_replayed_from() -> None:
    assert "log's start 200" in (refusal(meta(150, 3), start=200) or "")


def test_another_history_is_refused() -> None:
    # Written by an active whose record at 299 was epoch 2: a history written off here.
    assert "another history" in (refusal(meta(300, 2)) or "")
    assert refusal(meta(300, 0)) is not None  # unknown log epoch: never used


def test_log_epoch_before() -> None:
    assert log_epoch_before(0, epochs) == 0
    assert log_epoch_before(100, epochs) == 1
    assert log_epoch_before(101, epochs) == 3
