"""Promotion: the steps from winning the lease to serving as the active, in order.

``PROMOTION_STEPS`` (``walrep.node.role``) names them; ``Promotion.advance`` runs each one
as soon as it can be done and emits ``StepDone`` with its duration. Every step is
idempotent and may wait for an input (appends received as a passive reporting back, a
sync): ``advance`` is called again after such inputs. Nothing is acknowledged before the
last step: a lease lost on the way abandons the promotion (the node demotes), a local
failure fences the node. Never a half-active node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from walrep.node.effects import StepDone
from walrep.node.role import PROMOTION_STEPS, Event

if TYPE_CHECKING:
    from walrep.node.core import NodeCore


class Promotion:
    def __init__(self, epoch: int, now_ms: int) -> None:
        self.epoch = epoch
        self.started_ms = now_ms
        self.step = 0
        self.step_started_ms = now_ms
        self.restored = False  # a cold standby's engine restore of this promotion is done

    @property
    def done(self) -> bool:
        return self.step >= len(PROMOTION_STEPS)

    def advance(self, core: NodeCore) -> None:
        """Run the steps that can be done now, in order."""
        while not self.done and core.promotion is self:
            name = PROMOTION_STEPS[self.step]
            if not _run_step(core, name, self.epoch):
                return
            core.emit(StepDone(self.epoch, name, core.now_ms - self.step_started_ms))
            self.step += 1
            self.step_started_ms = core.now_ms


def _run_step(core: NodeCore, name: str, epoch: int) -> bool:
    """One step; True once it is done."""
    term = core.term
    assert term is not None and term.epoch == epoch
    if name == "fence_lower_epochs":
        # No more receiving from an older active; the new epoch persisted as highest seen.
        core.receiving.close_all(f"promoted under epoch {epoch}: no more receiving")
        core.note_epoch(epoch)
        return True
    if name == "finish_log":
        # Appends received as a passive report back first; then the log is forced.
        if core.receiving.appends_in_flight:
            return False
        if core.log.durable_end < core.log.log_end:
            core.request_sync()
            return False
        assert core.log.last_epoch <= epoch, (core.log.last_epoch, epoch)
        return True
    if name == "catch_up":
        # The engine applies every offset this node knows committed before it serves:
        # nothing to do for a warm standby; a cold one first restores the newest
        # snapshot; a replay of the log after it then (or after the start's restore).
        return core.engine_restored_for(epoch) and core.caught_up()
    if name == "open_ingest":
        core.fire(Event.ACTIVATED, f"active under epoch {epoch}")
        return True
    assert name == "ship", name
    term.shipping = True
    term.log_changed()
    term.tick()
    return True
