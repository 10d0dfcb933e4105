"""The snapshot restore rule: durable here, replayable, the same history."""

from walrep.engine.types import SnapshotMeta
from walrep.log.replica_state import ReplicaState
from walrep.node.restore import log_epoch_before, raised_floor, snapshot_refusal


def meta(offset: int, log_epoch: int) -> SnapshotMeta:
    return SnapshotMeta(offset, 4, "0" * 32, (("a", "1"),), 1, 0, log_epoch)


def epochs(offset: int) -> int | None:
    """A log written by epoch 1 on [0, 100), epoch 3 from 100."""
    return 1 if offset < 100 else 3


def refusal(m: SnapshotMeta, *, start: int = 0) -> str | None:
    return snapshot_refusal(m, log_start=start, durable_end=600, epoch_at=epochs)


def test_a_snapshot_of_this_history_held_durably_is_usable() -> None:
    assert refusal(meta(300, 3)) is None
    assert refusal(meta(100, 1)) is None  # the record at 99 is epoch 1
    assert refusal(meta(0, 0)) is None


def test_beyond_the_durable_end_it_is_refused() -> None:
    assert "holds 600 durably" in (refusal(meta(601, 3)) or "")


def test_a_usable_snapshot_above_the_floor_raises_it() -> None:
    """Same epoch at offset - 1 as its writer: this prefix is the writer's, committed."""
    assert refusal(meta(550, 3)) is None
    state = ReplicaState(committed_floor=500, highest_epoch=4)
    assert raised_floor(meta(550, 3), state) == ReplicaState(550, 4)
    assert raised_floor(meta(300, 3), state) == state  # never lowered


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
