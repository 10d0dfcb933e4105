"""The retention rule: never more than the standby, the sinks and a restorable snapshot allow."""

from walrep.node.retention import retention_floor


def test_without_an_engine_the_standby_and_the_committed_floor_bound_it() -> None:
    assert retention_floor(committed_floor=100, standby_acked=80) == 80
    assert retention_floor(committed_floor=100, standby_acked=None) == 100
    assert retention_floor(committed_floor=50, standby_acked=80) == 50


def test_with_an_engine_the_newest_snapshot_under_every_bound() -> None:
    floor = retention_floor(
        committed_floor=1000,
        standby_acked=900,
        sink_applied=[700],
        snapshot_offsets=[200, 600, 800],
    )
    assert floor == 600  # 800 is above the sink: its rows after 700 must stay replayable


def test_no_usable_snapshot_keeps_everything() -> None:
    assert retention_floor(committed_floor=100, standby_acked=100, snapshot_offsets=[]) == 0
    assert retention_floor(committed_floor=100, standby_acked=100, snapshot_offsets=[150]) == 0


def test_a_failed_snapshot_does_not_move_it() -> None:
    # Only durable snapshots are passed in: one that failed is not there, so the floor
    # stays at the previous one.
    before = retention_floor(committed_floor=500, standby_acked=500, snapshot_offsets=[300])
    assert before == 300
