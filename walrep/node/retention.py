"""How much of the log may be deleted (pure): the rule, stated once.

Segments below the returned offset may go; never more. Without an engine the log must
keep what the standby has not acknowledged and what is not committed. With an engine the
node must also be able to rebuild its state after a restart: from a snapshot at or above
the new log start, whose offset the node holds as committed (its persisted floor), and
every sink must be able to resume after its applied offset. So the floor is then the
newest snapshot offset that is at or below every other bound; without such a snapshot,
nothing is deleted.
"""

from __future__ import annotations

from collections.abc import Iterable


def retention_floor(
    *,
    committed_floor: int,
    standby_acked: int | None,
    sink_applied: Iterable[int] = (),
    snapshot_offsets: Iterable[int] | None = None,
) -> int:
    """The offset below which the log may be deleted.

    ``committed_floor``: the committed offset this node has persisted; ``standby_acked``:
    what the standby acknowledged on its current connection (None: no standby to wait
    for); ``sink_applied``: every sink's applied offset; ``snapshot_offsets``: the offsets
    of the durable snapshots (None: the node has no engine, no snapshot is needed).
    """
    bounds = [committed_floor, *sink_applied]
    if standby_acked is not None:
        bounds.append(standby_acked)
    bound = min(bounds)
    if snapshot_offsets is None:
        return bound
    return max((s for s in snapshot_offsets if s <= bound), default=0)
