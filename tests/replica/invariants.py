"""What the transcript harness checks after every step (raising ``InvariantViolation``).

No rewrite of an expected output can bless a violation: these checks raise. They read
the cores, the logs and the store, and change nothing:

* committed offsets only grow (within one term of one process) and never pass the
  active's durable end;
* with ack policy ``all``, while the store records the standby in sync under the
  active's epoch, every committed offset is durable on the standby with the same events
  (unless the standby's disk lost data in a fault since it was last recorded in sync);
* the passive's committed prefix equals the active's, event for event (``init
  check-prefix=false`` turns this off for a setup that lost committed events on purpose);
* the active never has more Appends (or bytes, beyond a single one) unacknowledged on
  its connection than its window allows.

Checked at the effect itself (``executor.World.check_acked``, ``check_truncate``):
nothing is acknowledged unless the store says the node holds an unexpired lease at that
moment, and no truncation goes below the node's persisted committed floor or the
committed offset it knows.
"""

from __future__ import annotations

from typing import Any

from tests.replica.executor import InvariantViolation, Slot, World, run_now
from walrep.log.memory import MemoryLog
from walrep.node.core import NodeCore


class Invariants:
    def __init__(self, world: World, *, check_prefix: bool) -> None:
        self.world = world
        self.check_prefix = check_prefix
        self._committed: dict[tuple[str, int], tuple[NodeCore, int]] = {}

    def check(self) -> None:
        for slot in self.world.slots.values():
            if slot.up and slot.core_.term is not None:
                self._commit_grows(slot)
                self._in_sync_holds(slot)
                self._window(slot)
                if self.check_prefix:
                    for other in self.world.slots.values():
                        if other is not slot and other.up:
                            self._same_prefix(slot, other)

    def _commit_grows(self, slot: Slot) -> None:
        core = slot.core_
        term = core.term
        assert term is not None
        key = (slot.name, term.epoch)
        committed = core.committed
        seen = self._committed.get(key)
        if seen is not None and seen[0] is core and committed < seen[1]:
            raise InvariantViolation(f"{slot.name}: committed {committed} after {seen[1]}")
        if committed > slot.log.durable_end:
            raise InvariantViolation(
                f"{slot.name}: committed {committed} beyond its durable end {slot.log.durable_end}"
            )
        self._committed[key] = (core, committed)

    def _in_sync_holds(self, slot: Slot) -> None:
        core = slot.core_
        term = core.term
        assert term is not None
        standby = term.shipper.standby
        if not slot.settings.shipper.ack_all or standby is None:
            return
        records = run_now(self.world.store.in_sync_nodes(slot.settings.group))
        if records.get(standby) != term.epoch:
            return
        peer = next((s for s in self.world.slots.values() if s.node_id == standby), None)
        if peer is None or peer.damaged:
            return
        committed = core.committed
        if peer.log.durable_end < committed:
            raise InvariantViolation(
                f"{standby} is recorded in sync under epoch {term.epoch}, but {committed} is "
                f"committed and only {peer.log.durable_end} is durable there"
            )
        lo = max(slot.log.log_start, peer.log.log_start)
        if events(slot.log, lo, committed) != events(peer.log, lo, committed):
            raise InvariantViolation(
                f"{standby} is in sync but its events differ below {committed}"
            )

    def _same_prefix(self, active: Slot, passive: Slot) -> None:
        known = passive.core_.committed
        if known > active.log.log_end:
            raise InvariantViolation(
                f"{passive.name} knows {known} committed; the active's log ends at "
                f"{active.log.log_end}"
            )
        lo = max(active.log.log_start, passive.log.log_start)
        if events(active.log, lo, known) != events(passive.log, lo, known):
            raise InvariantViolation(f"the committed prefixes differ below {known}")

    def _window(self, slot: Slot) -> None:
        term = slot.core_.term
        assert term is not None
        link = term.link
        if link is None:
            return
        conn = self.world.find(slot, link.cid)
        if conn is None:
            return
        acked = term.shipper.acked
        waiting = [size for end, size in conn.appends if end > acked]
        c = slot.settings.shipper
        if len(waiting) > c.window_batches or (len(waiting) > 1 and sum(waiting) > c.window_bytes):
            raise InvariantViolation(
                f"{len(waiting)} Appends of {sum(waiting)} bytes unacknowledged (window "
                f"{c.window_batches} batches, {c.window_bytes} bytes)"
            )


def events(log: MemoryLog, lo: int, hi: int) -> list[tuple[int, list[Any]]]:
    """``(epoch, event)`` for every offset in ``[lo, hi)``."""
    if hi <= lo:
        return []
    return [(r.epoch, list(r.event)) for r in log.read(lo, hi)]
