"""The engine's IO in the node process: restore, digest chain, snapshots, sinks, retention.

The decisions are made elsewhere, once: *what* the engine applies and when (the core's
``Apply`` effects, ``walrep.node.apply``), *which* snapshot a node may restore
(``walrep.node.restore``), *how much* log may be deleted (``walrep.node.retention``),
exactly-once writes (the fenced stores and sinks). This module only does the IO, as the
simulator does its own (``tests/sim/engine.py``). Ordering contracts:

* **restore before the core starts**: ``open`` loads the newest snapshot this node may
  use (its digest verified by the store), or starts from 0, before the core is built,
  so the core's first ``Apply`` continues from the engine's position;
* **digest chain**: every ``DigestPoint`` is hashed in a thread (never on the loop: a
  hash of the whole state at 1M rows takes seconds) and appended to ``digests.ndjson`` in
  the data directory, in offset order (``{"offset", "digest"}``; a point already recorded
  is compared instead: a different digest for the same offset is a
  ``NondeterminismError`` that fences the node). At most ``DIGESTS_PENDING_MAX`` points
  wait for their hash; a point beyond that is skipped and counted
  (``digests_skipped_behind``): the chain then has a gap, never a wrong entry;
* **snapshots only on the active, under its epoch**: capture on the loop (copy-on-write,
  cheap), encode in a thread while apply goes on, then ``save_then_trim``: nothing is
  trimmed unless the save succeeded; a failure is logged, counted
  (``snapshot_failures``) and retried at the next interval;
* **sinks only on the active, only under a valid lease**: on promotion each sink resumes
  after its own applied offset (behind the engine: every current row is written once,
  absolute values, so an upsert sink ends equal, and the app outputs from that offset,
  which both roles keep until every sink has them, bounded); then the rows changed and
  the outputs produced since;
* **retention after a successful snapshot**: ``retention_floor`` over the snapshots this
  node may restore, the standby's acks and every sink's applied offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from walrep.engine.app import App
from walrep.engine.canonical import FORMAT_VERSION, digest_of
from walrep.engine.core import DigestPoint, Engine, EngineOutput
from walrep.engine.sinks.base import Output, Sink, SinkBatch
from walrep.engine.snapshots.store import SnapshotStore, load_newest_valid, save_then_trim
from walrep.engine.types import SnapshotMeta
from walrep.errors import EngineError, NondeterminismError, WalrepError
from walrep.log.wal import Wal
from walrep.node.restore import log_epoch_before, raised_floor, refusal_for
from walrep.node.retention import retention_floor
from walrep.node.role import Role

if TYPE_CHECKING:
    from walrep.node.runtime import Node

log = logging.getLogger("walrep.engine")

DIGESTS_FILE = "digests.ndjson"
SINK_INTERVAL_S = 0.2
PENDING_OUTPUTS_MAX = 100_000  # app outputs kept for the sinks (beyond: the oldest go)
DIGESTS_PENDING_MAX = 4  # digest points waiting for their hash (each holds a frozen state)


class EngineHost:
    """One node's engine and what it does with the world (see the module docstring)."""

    def __init__(
        self,
        apps: Sequence[App],
        *,
        store: SnapshotStore | None = None,
        sinks: Sequence[Sink] = (),
        snapshot_interval_s: float = 60.0,
        revisions_to_keep: int = 2,
        digest_interval: int = 10_000,
        wall_clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.apps = list(apps)
        self.store = store
        self.sinks = list(sinks)
        self.snapshot_interval_s = snapshot_interval_s
        self.revisions_to_keep = revisions_to_keep
        self.digest_interval = digest_interval
        self._wall_clock_ms = wall_clock_ms
        self.engine: Engine | None = None
        self.metrics: Counter[str] = Counter()
        self.last_snapshot: SnapshotMeta | None = None
        # A cold standby's promotion: engines loaded, not installed yet (by epoch).
        self._loaded: dict[int, tuple[Engine, SnapshotMeta]] = {}
        self.last_capture_pause_ms = 0.0
        self._digests_path: Path | None = None
        self._last_digest_offset = -1
        self._digests: deque[DigestPoint] = deque()
        self._digest_task: asyncio.Task[None] | None = None
        # App outputs not yet in every sink, in offset order; kept on the passive too, so
        # a new active re-sends what its sinks lack (bounded: see ``_keep_output``).
        self._outputs: deque[EngineOutput] = deque()
        self._outputs_dropped_through = -1  # outputs at or below this offset were dropped
        # How a failure found off the loop's call path fences the node (``Node`` sets it).
        self.on_failure: Callable[[WalrepError], None] = _unhandled

    @property
    def engine_(self) -> Engine:
        assert self.engine is not None, "EngineHost.open first"
        return self.engine

    # --- start --------------------------------------------------------------------------

    async def open(self, wal: Wal, data_dir: Path) -> Engine:
        """Restore the engine: the newest snapshot this node may use, else from 0."""
        self._digests_path = data_dir / DIGESTS_FILE
        chain = read_digest_chain(self._digests_path)
        self._last_digest_offset = chain[-1][0] if chain else -1
        found = await self._restore(wal)
        if found is not None:
            self._restored(found[1])
            # Restoring it proves its prefix committed here: persisted before the core starts.
            raised = raised_floor(found[1], wal.replica_state)
            if raised != wal.replica_state:
                wal.save_replica_state(raised)
        engine = found[0] if found is not None else None
        if engine is None:
            if wal.log_start > 0:
                raise EngineError(
                    f"the log in {wal.directory} starts at {wal.log_start} and no snapshot "
                    "this node may restore is left: rebuild this node from its peer"
                )
            engine = Engine(self.apps, digest_interval=self.digest_interval)
        self.engine = engine
        return engine

    async def load_newer(self, wal: Wal, epoch: int) -> int | None:
        """A cold standby's promotion under ``epoch``: an engine from the newest snapshot
        this node may restore that is ahead of the engine in use, kept until
        ``adopt(epoch)``; its applied offset (None: no such snapshot)."""
        found = await self._restore(wal, above=self.engine_.applied)
        if found is None:
            return None
        self._loaded[epoch] = found
        return found[0].applied

    def adopt(self, epoch: int) -> None:
        """Install the engine loaded for ``epoch``; forget every other loaded one."""
        engine, meta = self._loaded.pop(epoch)
        self._loaded.clear()
        self.engine = engine
        self._restored(meta)

    def _restored(self, meta: SnapshotMeta) -> None:
        log.info(
            "engine restored from the snapshot at offset %d (epoch %d)", meta.offset, meta.epoch
        )
        self.last_snapshot = meta

    async def _restore(self, wal: Wal, *, above: int = -1) -> tuple[Engine, SnapshotMeta] | None:
        """The engine of the newest snapshot this node may use, with state beyond offset
        ``above``, and that snapshot (none: None)."""
        if self.store is None:
            return None
        await self.store.setup()

        def accept(meta: SnapshotMeta) -> bool:
            usable = meta.offset > above and refusal_for(meta, wal) is None
            return usable and meta.app_versions == _versions(self.apps)

        def skipped(snapshot: str, reason: str) -> None:
            self.metrics["snapshots_damaged"] += 1
            log.warning("snapshot %s is damaged, an older one is used: %s", snapshot, reason)

        found = await load_newest_valid(self.store, accept, on_skip=skipped)
        if found is None:
            return None
        meta, state, _ = found
        return Engine.restore(self.apps, state, digest_interval=self.digest_interval), meta

    # --- what Apply produced ------------------------------------------------------------

    def on_outputs(self, outputs: Sequence[object], active: bool) -> None:
        """The engine's outputs of one ``Apply``: digest points, and app outputs kept for
        the sinks (on both roles: a passive that is promoted re-sends what they lack).
        A passive forgets which rows changed (a new active writes them all)."""
        if not active:
            self.drop_changes()
        for out in outputs:
            if isinstance(out, DigestPoint):
                self._queue_digest(out)
            elif isinstance(out, EngineOutput) and self.sinks:
                self._keep_output(out)

    def _keep_output(self, out: EngineOutput) -> None:
        if len(self._outputs) >= PENDING_OUTPUTS_MAX:
            dropped = self._outputs.popleft()
            self._outputs_dropped_through = dropped.offset
            self.metrics["sink_outputs_dropped_behind"] += 1
        self._outputs.append(out)

    def _outputs_for(self, sink: Sink, applied: int, to_offset: int) -> list[Output]:
        """The kept outputs a sink at ``applied`` lacks, below ``to_offset``."""
        if applied <= self._outputs_dropped_through:
            self.metrics["sink_outputs_lost"] += 1
            log.error(
                "sink %s resumes at offset %d, but outputs up to offset %d were dropped "
                "(more than %d waited for the sinks): those are not sent",
                getattr(sink, "target", type(sink).__name__),
                applied,
                self._outputs_dropped_through,
                PENDING_OUTPUTS_MAX,
            )
        return [
            Output((o.offset, o.index), o.app, o.stream, o.attributes)
            for o in self._outputs
            if applied <= o.offset < to_offset
        ]

    def _sent(self, to_offset: int) -> None:
        """Every sink holds the outputs below ``to_offset``: let them go."""
        while self._outputs and self._outputs[0].offset < to_offset:
            self._outputs.popleft()

    def _queue_digest(self, point: DigestPoint) -> None:
        if len(self._digests) >= DIGESTS_PENDING_MAX:
            self.metrics["digests_skipped_behind"] += 1
            return
        self._digests.append(point)
        if self._digest_task is None or self._digest_task.done():
            self._digest_task = asyncio.get_running_loop().create_task(
                self._hash_digests(), name="engine digests"
            )

    async def _hash_digests(self) -> None:
        """Hash queued points in a thread, in offset order, and record each."""
        while self._digests:
            point = self._digests[0]
            try:
                digest = await asyncio.to_thread(point.digest)
                self._record_digest(point.offset, digest)
            except WalrepError as e:
                self._digests.clear()
                self.on_failure(e)
                return
            except OSError as e:
                self._digests.clear()
                failure = EngineError(f"recording the digest chain in {self._digests_path}: {e}")
                failure.__cause__ = e
                self.on_failure(failure)
                return
            self._digests.popleft()
            self.metrics["digests_recorded"] += 1

    async def drain_digests(self) -> None:
        """Wait until every queued digest point is hashed and recorded (tests, stop)."""
        while self._digest_task is not None and not self._digest_task.done():
            await asyncio.shield(self._digest_task)

    def _record_digest(self, offset: int, digest: str) -> None:
        path = self._digests_path
        assert path is not None
        if offset <= self._last_digest_offset:
            recorded = dict(read_digest_chain(path)).get(offset)
            if recorded is not None and recorded != digest:
                raise NondeterminismError(
                    f"the engine's digest at offset {offset} is {digest}, "
                    f"{path} recorded {recorded}: the same records gave another state"
                )
            return
        line = orjson.dumps({"offset": offset, "digest": digest}) + b"\n"
        with path.open("ab") as f:
            f.write(line)
        self._last_digest_offset = offset

    # --- the active's work ----------------------------------------------------------------

    async def serve_term(self, node: Node, epoch: int) -> None:
        """Snapshots and sinks while ``node`` is active under ``epoch``. A sink or store
        failure is logged, counted and retried; it never stops the node."""
        sinks_ready = False
        next_snapshot = time.monotonic() + self.snapshot_interval_s
        while _still_active(node, epoch):
            try:
                if not sinks_ready:
                    sinks_ready = await self._resume_sinks(node, epoch)
                else:
                    await self._feed_sinks(node, epoch)
            except WalrepError as e:
                sinks_ready = False  # rows are absolute: resuming rewrites them all
                self.metrics["sink_failures"] += 1
                log.error("sink write up to offset %d failed: %s", self.engine_.applied, e)
            if self.store is not None and time.monotonic() >= next_snapshot:
                await self.snapshot(node, epoch)
                next_snapshot = time.monotonic() + self.snapshot_interval_s
            await asyncio.sleep(SINK_INTERVAL_S)

    async def snapshot(self, node: Node, epoch: int) -> SnapshotMeta | None:
        """Capture, encode off the loop, save fenced by ``epoch``, trim, then retention."""
        assert self.store is not None
        engine, wal = self.engine_, node.log
        started = time.perf_counter()
        capture = engine.begin_capture()
        self.last_capture_pause_ms = (time.perf_counter() - started) * 1000
        log_epoch = log_epoch_before(capture.applied, wal.epochs.epoch_at)
        try:
            state = await asyncio.to_thread(capture.encode)
            meta = SnapshotMeta(
                capture.applied,
                epoch,
                digest_of(state),
                capture.app_versions,
                FORMAT_VERSION,
                self._wall_clock_ms(),
                log_epoch,
            )
            await save_then_trim(self.store, meta, state, self.revisions_to_keep)
        except WalrepError as e:  # the store is down, or a newer epoch fenced us out
            self.metrics["snapshot_failures"] += 1
            log.error("snapshot at offset %d failed (retried later): %s", capture.applied, e)
            return None
        self.metrics["snapshots_saved"] += 1
        self.last_snapshot = meta
        try:
            await self._retain(node)
        except WalrepError as e:
            self.metrics["retention_failures"] += 1
            log.error("retention after the snapshot at offset %d failed: %s", meta.offset, e)
        return meta

    async def _retain(self, node: Node) -> None:
        assert self.store is not None
        wal, core = node.log, node.core_
        snapshots = await self.store.list()
        usable = [i.offset for i in snapshots if i.meta and refusal_for(i.meta, wal) is None]
        term = core.term
        acked = term.shipper.acked if term is not None and term.link is not None else None
        sink_offsets = [await s.applied_offset() for s in self.sinks]
        floor = retention_floor(
            committed_floor=wal.replica_state.committed_floor,
            standby_acked=acked,
            sink_applied=sink_offsets,
            snapshot_offsets=usable,
        )
        if floor > wal.log_start:
            before = wal.log_start
            if wal.delete_before(floor) > before:
                node.log_start_moved()

    async def _resume_sinks(self, node: Node, epoch: int) -> bool:
        """Bring every sink to the engine's offset: all rows (absolute values) and the
        kept outputs from the sink's own applied offset. False if the lease lapsed first
        (nothing is forgotten then: the next try resumes again)."""
        engine = self.engine_
        applied: list[int] = []
        for sink in self.sinks:
            await sink.setup(engine.schemas())
            applied.append(await sink.applied_offset())
        if not _holds(node, epoch):
            return False
        # One consistent cut, taken with no await in between: the offset, every row, and
        # from here on the changes after it (written by the next feed).
        engine.set_tracking(True)
        to_offset = engine.applied
        lagging = [(s, a) for s, a in zip(self.sinks, applied, strict=True) if a < to_offset]
        rows = engine.all_rows() if lagging else []
        batches = [
            (sink, SinkBatch(epoch, to_offset, rows, self._outputs_for(sink, a, to_offset)))
            for sink, a in lagging
        ]
        for sink, batch in batches:
            await sink.write(batch)
        self._sent(to_offset)
        return True

    async def _feed_sinks(self, node: Node, epoch: int) -> None:
        engine = self.engine_
        if not self.sinks:
            engine.set_tracking(False)  # nobody will ask for them
            return
        if not _holds(node, epoch):
            return
        to_offset = engine.applied
        rows = engine.changed_rows()
        outputs = self._outputs_for_all(to_offset)
        if not (rows or outputs):
            return
        batch = SinkBatch(epoch, to_offset, rows, outputs)
        for sink in self.sinks:
            await sink.write(batch)
        self._sent(to_offset)

    def _outputs_for_all(self, to_offset: int) -> list[Output]:
        return [
            Output((o.offset, o.index), o.app, o.stream, o.attributes)
            for o in self._outputs
            if o.offset < to_offset
        ]

    async def close(self) -> None:
        """Record the digest points still queued, close the snapshot store and the sinks
        (the node has stopped)."""
        with contextlib.suppress(asyncio.CancelledError):
            await self.drain_digests()
        for sink in self.sinks:
            with contextlib.suppress(WalrepError):
                await sink.close()
        if self.store is not None:
            with contextlib.suppress(WalrepError):
                await self.store.close()

    def drop_changes(self) -> None:
        """On the passive: no rows are written to sinks, so forget which changed (the
        outputs are kept: see ``on_outputs``)."""
        if self.engine is not None:
            self.engine.set_tracking(False)


def _unhandled(error: WalrepError) -> None:
    raise error


def _versions(apps: Sequence[App]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((a.name, a.version) for a in apps))


def _still_active(node: Node, epoch: int) -> bool:
    return node.role is Role.ACTIVE and node.epoch == epoch


def _holds(node: Node, epoch: int) -> bool:
    """Sink outputs, like acks, only under a valid lease of this term."""
    core = node.core
    return core is not None and _still_active(node, epoch) and core.holds_lease_at(node.now_ms())


def read_digest_chain(path: Path) -> list[tuple[int, str]]:
    """The digest chain a node recorded (``DIGESTS_FILE``): ``(offset, digest)`` in file
    order, none without the file; reading stops at a torn or malformed line (what came
    before it stands). The one reader of the file: the node and the replay tool."""
    if not path.exists():
        return []
    out: list[tuple[int, str]] = []
    for line in path.read_bytes().splitlines():
        try:
            doc = orjson.loads(line)
            out.append((int(doc["offset"]), str(doc["digest"])))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            break
    return out
