"""The invariants, checked after every step of a run (DESIGN.md, "Invariants").

Checks are incremental where they would otherwise be quadratic: what was verified
against a log is remembered with that log's ``version``, which moves only when content
below its end may change (truncate, crash), so a step usually checks only what is new.

1. Acked => durable where it matters: every acknowledged event is in the durable part
   of the log of the node that holds the lease now (store view: holder, unexpired), or,
   when nobody holds it, of every node recorded in-sync under the current epoch and of
   the last holder -- at its offset, with identical content.
2. The logs agree on their common committed prefix, frame for frame, byte for byte
   (up to the smaller of the two nodes' committed offsets); and no node ever loses or
   truncates below an offset it knew to be committed.
3. Epochs strictly increase across ``Promoted`` (checked when it happens).
4. One writer per epoch: at most one node appends under any epoch (checked at each
   append); and at most one node believes it holds the lease at any moment.
5. Bounded: network streams, receiver buffers, decoder buffers, the shipper's window,
   admitted and queued appends, client requests and the event queue stay under their
   maxima.
6. Nothing is acknowledged outside the lease: when the core emits ``Acked`` the store
   says this node holds the lease, unexpired (checked when it happens).
7. A standby recorded in sync under the current epoch has everything committed in that
   epoch durable (the active's committed offsets, recorded as they are reached).
8. No node truncates below the committed floor it has persisted, nor below an offset it
   knew to be committed (checked when it happens).
9. A node whose disk lost what it held (wiped, an older copy, a repair) is not the lease
   holder before it has caught up, unless an operator forced it (recorded in history).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.sim import settings as n
from tests.sim.world import run_now
from walrep.log.frame import Event
from walrep.node.settings import PREAUTH_MESSAGE_BYTES_MAX
from walrep.replica.messages import PREFIX_BYTES

if TYPE_CHECKING:
    from tests.sim.cluster import Simulation
    from tests.sim.disk import SimDisk, SimFrame

# Bounds (5): derived from the run's maxima, with the slack each one explains.
LARGEST_FRAME_BYTES = 16 * 1024  # the workload never builds a bigger frame
READER_BUFFER_MAX = n.MAX_MESSAGE_BYTES + PREFIX_BYTES
PREAUTH_BUFFER_MAX = PREAUTH_MESSAGE_BYTES_MAX + PREFIX_BYTES
EVENT_QUEUE_MAX = 5_000


def stream_bytes_max(settings: n.Settings) -> int:
    """A stream holds at most the window (twice: duplicates) plus heartbeats and acks."""
    window = settings.shipper.window_bytes + settings.shipper.read_bytes_max
    return 2 * (window + LARGEST_FRAME_BYTES) + 64 * 1024


def receiver_pending_max(settings: n.Settings) -> int:
    """The receiver stops reading at its bound; one chunk read may overshoot by one Append."""
    return settings.receiver_buffer_bytes + settings.shipper.read_bytes_max + LARGEST_FRAME_BYTES


class InvariantViolation(AssertionError):
    """An invariant does not hold: the message says which, where and why."""


class Checker:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self._acked_verified: dict[str, tuple[int, int]] = {}  # node -> (log version, count)
        self._prefix_key: tuple[int, int] = (-1, -1)
        self._prefix_checked = 0

    def check(self) -> None:
        self.sim.forgive_forced()
        self._bounds()
        self._single_holder()
        self._acked_present()
        self._committed_prefix()
        self._in_sync_has_committed()
        self._lost_data_never_promoted()

    def forget(self) -> None:
        """The acked set changed (a forced takeover wrote events off): verify afresh."""
        self._acked_verified.clear()

    # --- 1 -------------------------------------------------------------------------------

    def _acked_present(self) -> None:
        sim = self.sim
        if not sim.acked_order:
            return
        seen = run_now(sim.store.read_lease(n.GROUP))
        if seen.holder is not None and seen.expires_at_ms > seen.db_now_ms:
            targets = [seen.holder]
            why = f"holds the lease (epoch {seen.epoch})"
        else:
            in_sync = run_now(sim.store.in_sync_nodes(n.GROUP))
            # A standby whose disk lost events is known not to hold them: (9) checks that
            # it is never promoted before it has caught up.
            names = {
                name
                for name, epoch in in_sync.items()
                if epoch == seen.epoch and not sim.nodes[name].lost_data
            }
            if seen.holder is not None:
                names.add(seen.holder)
            targets = sorted(names)
            why = f"is in-sync or last holder (no holder, epoch {seen.epoch})"
        for name in targets:
            disk = sim.nodes[name].disk
            log = disk.log
            version, start = self._acked_verified.get(name, (-1, 0))
            if version != disk.version:
                start = 0
            durable = log.durable_end
            for offset in sim.acked_order[start:]:
                expected = sim.acked[offset]
                if offset < log.log_start and offset < sim.retired_below:
                    continue  # deleted by retention (a snapshot would hold its effect)
                got = disk.event_at(offset) if offset < durable else None
                if got != expected:
                    where = "missing" if got is None else f"holds {short(got)}"
                    raise InvariantViolation(
                        f"(1) acked event lost: offset {offset} ({short(expected)}) is {where} in "
                        f"the durable log of {name}, which {why}; its log ends at "
                        f"{log.log_end}, durable {durable}"
                    )
            self._acked_verified[name] = (disk.version, len(sim.acked_order))

    # --- 2 -------------------------------------------------------------------------------

    def _committed_prefix(self) -> None:
        a, b = self.sim.nodes.values()
        for node in (a, b):
            if node.up:
                node.known_committed = max(node.known_committed, node.core.known_committed)
            if node.log.durable_end < node.known_committed:
                raise InvariantViolation(
                    f"(2) {node.name} knew offset {node.known_committed} committed, but its "
                    f"durable log ends at {node.log.durable_end}"
                )
        if a.diverged or b.diverged:
            return  # a forced takeover wrote events off: logs differ until the rebuild
        limit = min(a.known_committed, b.known_committed)
        key = (a.disk.version, b.disk.version)
        if key != self._prefix_key:
            self._prefix_key, self._prefix_checked = key, 0
        offset = max(self._prefix_checked, a.log.log_start, b.log.log_start)
        while offset < limit:
            x = _frame(a.disk, offset)
            y = _frame(b.disk, offset)
            if x.data == y.data:
                if x.end > limit:
                    return  # the rest of this frame is not committed on both (yet)
                offset = self._prefix_checked = x.end
                continue
            # Different frames: report the first differing committed event, or the framing.
            for o in range(offset, min(limit, x.end, y.end)):
                ex, ey = x.events[o - x.base], y.events[o - y.base]
                if ex != ey or x.epoch != y.epoch:
                    raise InvariantViolation(
                        f"(2) committed prefixes differ at offset {o} (both committed to "
                        f"{limit}): {a.name} has {short(ex)} (epoch {x.epoch}), {b.name} has "
                        f"{short(ey)} (epoch {y.epoch})"
                    )
            if min(x.end, y.end) <= limit:
                raise InvariantViolation(
                    f"(2) committed frames differ in bytes at offset {offset} (both committed "
                    f"to {limit}): {a.name} frame [{x.base}, {x.end}), {b.name} frame "
                    f"[{y.base}, {y.end})"
                )
            return

    def on_truncate(self, name: str, to_offset: int, known_committed: int, floor: int) -> None:
        if to_offset < floor:
            raise InvariantViolation(
                f"(8) {name} asks to truncate its log to {to_offset}, below its persisted "
                f"committed floor {floor}"
            )
        if to_offset < known_committed:
            raise InvariantViolation(
                f"(8) {name} truncates its log to {to_offset}, below {known_committed}, "
                "an offset it knew to be committed"
            )

    # --- 7 -------------------------------------------------------------------------------

    def _in_sync_has_committed(self) -> None:
        sim = self.sim
        seen = run_now(sim.store.read_lease(n.GROUP))
        committed = sim.committed_in_epoch.get(seen.epoch, 0)
        if not committed:
            return
        in_sync = run_now(sim.store.in_sync_nodes(n.GROUP))
        for name, epoch in in_sync.items():
            node = sim.nodes[name]
            if epoch != seen.epoch or name == seen.holder:
                continue
            if node.lost_data and node.up and node.log.durable_end >= committed:
                node.lost_data = False  # caught up again
            if node.log.durable_end < committed and not node.lost_data:
                raise InvariantViolation(
                    f"(7) {name} is recorded in sync under epoch {epoch}, but its durable log "
                    f"ends at {node.log.durable_end}, below {committed}, committed in that epoch"
                )

    def _lost_data_never_promoted(self) -> None:
        """(9) A node whose disk fault took events it had is never the holder (store
        view) before it has caught up, unless a forced takeover (recorded) made it so."""
        seen = run_now(self.sim.store.read_lease(n.GROUP))
        node = self.sim.nodes.get(seen.holder) if seen.holder else None
        if node is None or not node.lost_data or seen.expires_at_ms <= seen.db_now_ms:
            return
        (latest,) = run_now(self.sim.store.history(n.GROUP, limit=1))
        if latest.epoch == seen.epoch and latest.reason.startswith("FORCED"):
            return
        raise InvariantViolation(
            f"(9) {node.name} holds the lease under epoch {seen.epoch} although its disk lost "
            f"what it held (log ends at {node.log.log_end}): {latest.reason}"
        )

    # --- 4b ------------------------------------------------------------------------------

    def _single_holder(self) -> None:
        holders = [node.name for node in self.sim.nodes.values() if node.holds_lease()]
        if len(holders) > 1:
            raise InvariantViolation(f"(4) two nodes hold the lease at once: {holders}")

    # --- 5 -------------------------------------------------------------------------------

    def _bounds(self) -> None:
        sim = self.sim
        stream_max = stream_bytes_max(sim.settings)
        pending_max = receiver_pending_max(sim.settings)
        window = sim.settings.shipper.window_batches
        if sim.net.max_queued_bytes > stream_max:
            raise InvariantViolation(
                f"(5) a network stream queued {sim.net.max_queued_bytes} bytes (bound {stream_max})"
            )
        if len(sim.sched) > EVENT_QUEUE_MAX:
            raise InvariantViolation(f"(5) {len(sim.sched)} events queued ({EVENT_QUEUE_MAX})")
        limits = sim.settings.appends
        for node in sim.nodes.values():
            if len(node.requests) > n.CLIENT_BATCHES_MAX:
                raise InvariantViolation(f"(5) {node.name}: {len(node.requests)} client batches")
            if not node.up:
                continue
            term = node.core.term
            if term is not None:
                if term.link and term.link.buffered_bytes > PREAUTH_BUFFER_MAX:
                    raise InvariantViolation(f"(5) {node.name}: active decoder buffer over bound")
                # The window is the shipper's own bound; reading its private queue is the
                # one way to see it from outside.
                if len(term.shipper._in_flight) > window:
                    raise InvariantViolation(
                        f"(5) {node.name}: {len(term.shipper._in_flight)} Appends in flight "
                        f"(window {window})"
                    )
                if (
                    term.pending > max(1, limits.max_pending)
                    or len(term.queued) > limits.max_queued
                ):
                    raise InvariantViolation(
                        f"(5) {node.name}: {term.pending} appends admitted "
                        f"(bound {limits.max_pending}), {len(term.queued)} queued"
                    )
            for conn in node.core.receiving.conns.values():
                r = conn.receiver
                if r.pending_bytes > pending_max:
                    raise InvariantViolation(
                        f"(5) {node.name}: receiver holds {r.pending_bytes} bytes not yet "
                        f"durable (bound {pending_max})"
                    )
                bound = READER_BUFFER_MAX if conn.link.authenticated else PREAUTH_BUFFER_MAX
                if conn.link.buffered_bytes > bound:
                    raise InvariantViolation(f"(5) {node.name}: passive decoder over bound")
            open_conns = node.core.receiving.open_count()
            if open_conns > node.settings.edges.max_connections:
                raise InvariantViolation(f"(5) {node.name}: {open_conns} inbound connections")


def _frame(disk: SimDisk, offset: int) -> SimFrame:
    return disk.frame_at(offset)


def short(event: Event) -> str:
    """An event for a message: its attributes, a blob by its length only."""
    shown = {k: (f"<{len(v)} chars>" if k == "blob" else v) for k, v in event.attributes.items()}
    return f"Event({shown})"
