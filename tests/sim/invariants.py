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
5. Bounded: network streams, receiver buffers, inboxes, decoder buffers, the shipper's
   window, client requests and the event queue all stay under their maxima.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.sim import settings as n
from tests.sim.world import run_now
from walrep.log.frame import Event
from walrep.replica.messages import PREFIX_BYTES

if TYPE_CHECKING:
    from tests.sim.cluster import Simulation
    from tests.sim.disk import SimFrame, SimLog

# Bounds (5): derived from the run's maxima, with the slack each one explains.
LARGEST_FRAME_BYTES = 16 * 1024  # the workload never builds a bigger frame
READER_BUFFER_MAX = n.MAX_MESSAGE_BYTES + PREFIX_BYTES
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
        self._bounds()
        self._single_holder()
        self._acked_present()
        self._committed_prefix()

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
            names = {name for name, epoch in in_sync.items() if epoch == seen.epoch}
            if seen.holder is not None:
                names.add(seen.holder)
            targets = sorted(names)
            why = f"is in-sync or last holder (no holder, epoch {seen.epoch})"
        for name in targets:
            log = sim.nodes[name].log
            version, start = self._acked_verified.get(name, (-1, 0))
            if version != log.version:
                start = 0
            durable = log.durable_end
            for offset in sim.acked_order[start:]:
                expected = sim.acked[offset]
                got = log.event_at(offset) if offset < durable else None
                if got != expected:
                    where = "missing" if got is None else f"holds {short(got)}"
                    raise InvariantViolation(
                        f"(1) acked event lost: offset {offset} ({short(expected)}) is {where} in "
                        f"the durable log of {name}, which {why}; its log ends at "
                        f"{log.log_end}, durable {durable}"
                    )
            self._acked_verified[name] = (log.version, len(sim.acked_order))

    # --- 2 -------------------------------------------------------------------------------

    def _committed_prefix(self) -> None:
        a, b = self.sim.nodes.values()
        for node in (a, b):
            if node.log.durable_end < node.known_committed:
                raise InvariantViolation(
                    f"(2) {node.name} knew offset {node.known_committed} committed, but its "
                    f"durable log ends at {node.log.durable_end}"
                )
        limit = min(a.known_committed, b.known_committed)
        key = (a.log.version, b.log.version)
        if key != self._prefix_key:
            self._prefix_key, self._prefix_checked = key, 0
        offset = self._prefix_checked
        while offset < limit:
            x = _frame(a.log, offset)
            y = _frame(b.log, offset)
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

    def on_truncate(self, name: str, to_offset: int, known_committed: int) -> None:
        if to_offset < known_committed:
            raise InvariantViolation(
                f"(2) {name} truncates its log to {to_offset}, below {known_committed}, "
                "an offset it knew to be committed"
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
        for node in sim.nodes.values():
            if len(node.requests) > n.CLIENT_BATCHES_MAX:
                raise InvariantViolation(f"(5) {node.name}: {len(node.requests)} client batches")
            active = node.active
            if active and active.reader and active.reader.buffered_bytes > READER_BUFFER_MAX:
                raise InvariantViolation(f"(5) {node.name}: active decoder buffer over bound")
            shipper = active.shipper if active else None
            # The window is the shipper's own bound; reading its private queue is the one
            # way to see it from outside.
            if shipper is not None and len(shipper._in_flight) > window:
                raise InvariantViolation(
                    f"(5) {node.name}: {len(shipper._in_flight)} Appends in flight "
                    f"(window {window})"
                )
            for conn in node.passive.conns.values():
                r = conn.receiver
                if r.pending_bytes > pending_max:
                    raise InvariantViolation(
                        f"(5) {node.name}: receiver holds {r.pending_bytes} bytes not yet "
                        f"durable (bound {pending_max})"
                    )
                if conn.inbox_bytes > stream_max:
                    raise InvariantViolation(f"(5) {node.name}: inbox of {conn.inbox_bytes} B")
                if conn.reader.buffered_bytes > READER_BUFFER_MAX:
                    raise InvariantViolation(f"(5) {node.name}: passive decoder over bound")


def _frame(log: SimLog, offset: int) -> SimFrame:
    return log.frames[log.frame_index(offset)]


def short(event: Event) -> str:
    """An event for a message: its attributes, a blob by its length only."""
    shown = {k: (f"<{len(v)} chars>" if k == "blob" else v) for k, v in event.attributes.items()}
    return f"Event({shown})"
