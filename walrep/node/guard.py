"""May this node ask for the lease automatically? A pure decision (no IO, no clock).

The store lets a node acquire an expired lease when it is recorded in sync under the
current epoch, or when it was the last holder. Both say "this node holds everything
committed" — true unless its data directory lost events while it was down (wiped,
replaced by an older copy, cut by a repair). ``hold_back`` tells, from what survives a
crash, when a node knows it may lack what the store takes it to hold:

* it has not read its own node row yet: it cannot tell (the very first probe, with
  epoch 0, is allowed: it can only win a group that never had a holder, which holds
  nothing);
* its durable log ends below the committed offset it published in the store before it
  started — unless it was the lease's last holder under an epoch it knew it held
  (persisted when promoted): its log is then what that epoch wrote, even after a forced
  takeover wrote off more than it held;
* the lease is at an epoch above every epoch it has seen while another node holds it: a
  standby really in sync under epoch E persisted E before its first Ack.

A forced takeover (operator) is never held back: it is recorded with its possible loss.
Known limit: an older copy of the directory of the last holder, from the same epoch,
cannot be told from the real one (``docs/operations.md``: do not restore it).
"""

from __future__ import annotations

from dataclasses import dataclass

from walrep.replica.lease import Observed


@dataclass(frozen=True, slots=True)
class Knowledge:
    """What the node knows about itself when it would ask for the lease."""

    node_id: str
    durable_end: int
    highest_epoch: int  # the highest epoch seen (persisted, or learnt since)
    persisted_epoch: int  # the highest epoch persisted in its replica state
    published_committed: int | None  # what it published as committed (None: not read)


def hold_back(me: Knowledge, seen: Observed | None, expected_epoch: int, force: bool) -> str:
    """Why an acquire must not be asked for now; ``""`` when it may."""
    if force or (seen is None and expected_epoch == 0):
        return ""
    if me.published_committed is None:
        return "its row in the store is not read yet"
    held_it = seen is not None and seen.holder == me.node_id and seen.epoch == me.persisted_epoch
    if me.durable_end < me.published_committed and not held_it:
        return (
            f"its log ends at {me.durable_end}, below {me.published_committed}, which it "
            "published as committed before: its data directory lost events; it must catch up"
        )
    if seen is not None and seen.epoch > me.highest_epoch and seen.holder != me.node_id:
        return (
            f"the lease is at epoch {seen.epoch}, this node has seen epoch "
            f"{me.highest_epoch} at most: it has not caught up with the current term (a new "
            "node, or one whose data directory lost what it held); it follows until it has"
        )
    return ""
