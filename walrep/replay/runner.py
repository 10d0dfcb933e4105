"""Replaying a log into an engine: where to start, and the apply loop.

**The start** (``start_engine``): a replay to offset ``target`` starts from the newest
snapshot that the node itself could restore there — the rule is the node's
(``walrep.node.restore.snapshot_refusal``: within the log held, of the same history),
plus: at or below ``target``, written by the same app versions, and verified by the
store (a damaged one is skipped and noted, an older one used). None: from the log's
first offset, which must be 0 (``--from-scratch`` asks for that explicitly). An explicit
``--snapshot ID`` that does not qualify is an error saying why (another app version:
offer ``--from-scratch``).

**The loop** (``Replayer.run``): batches from ``LogSource`` applied in offset order by the
same ``Engine`` the node runs, so the state after ``[0, N)`` is the node's state at N
(the engine's determinism contract). A run stops at ``to_offset``, before the first
record ingested after ``until_ms``, at the log's end, or between two batches once
``stop`` is set (Ctrl-C): the state is then that of a batch boundary, never half a
batch. ``checkpoints`` are offsets where the caller sees the engine exactly there (the
batches are split at them), in ascending order.

The cyclic garbage collector is paused during a run (``paused_gc``): the engine's state
and the decoded events hold no reference cycles, and a full collection walks every row
of a state of millions, every few thousand allocations: it cost a replay a third of
its time. Memory is freed by reference counting as ever; one collection runs at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from walrep.engine.app import App
from walrep.engine.core import DigestPoint, Engine, EngineOutput
from walrep.engine.snapshots import SnapshotId
from walrep.engine.types import SnapshotMeta
from walrep.errors import SnapshotError
from walrep.log.types import Record
from walrep.node.restore import snapshot_refusal
from walrep.replay.errors import LogRangeError, ReplayError
from walrep.replay.inputs import ReadOnlySnapshots, ReplayInputs
from walrep.replay.source import LogSource

NO_DIGEST_POINTS: Final = 2**62  # a replay hashes where it is asked to, not on an interval


@dataclass(frozen=True)
class StartPoint:
    """Where a replay began: a snapshot (id, epoch, digest) or the log's offset 0."""

    offset: int
    snapshot_id: str | None = None
    snapshot_epoch: int | None = None
    snapshot_digest: str | None = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        if self.snapshot_id is None:
            return {"from": "scratch", "offset": self.offset}
        return {
            "from": "snapshot",
            "snapshot": self.snapshot_id,
            "offset": self.offset,
            "epoch": self.snapshot_epoch,
            "digest": self.snapshot_digest,
        }


def _versions(apps: Sequence[App]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((a.name, a.version) for a in apps))


def _show_versions(versions: Iterable[tuple[str, str]]) -> str:
    return ", ".join(f"{name} {version}" for name, version in versions) or "none"


def refusal(
    meta: SnapshotMeta, source: LogSource, apps: Sequence[App], target: int | None
) -> str | None:
    """Why a replay to ``target`` may not start from ``meta``'s snapshot (None: it may)."""
    if target is not None and meta.offset > target:
        return f"it is at offset {meta.offset}, after the target {target}"
    if tuple(sorted(meta.app_versions)) != _versions(apps):
        return (
            f"it holds the state of app versions {_show_versions(meta.app_versions)}, "
            f"the apps given are {_show_versions(_versions(apps))}"
        )
    return snapshot_refusal(
        meta, log_start=source.log_start, durable_end=source.log_end, epoch_at=source.epoch_at
    )


def fresh_engine(apps: Sequence[App], source: LogSource) -> Engine:
    if source.log_start > 0:
        raise LogRangeError(
            f"the log in {source.directory} starts at offset {source.log_start} (older "
            "segments were deleted by retention): a replay from scratch needs offset 0; "
            "start from a snapshot at or after it instead"
        )
    return Engine(apps, digest_interval=NO_DIGEST_POINTS)


def start_engine(
    inputs: ReplayInputs,
    *,
    target: int | None,
    snapshot_id: str | None = None,
    from_scratch: bool = False,
    apps: Sequence[App] | None = None,
    oldest: bool = False,
) -> tuple[Engine, StartPoint]:
    """The engine a replay to ``target`` starts with (see the module docstring);
    ``oldest``: the oldest usable snapshot instead of the newest (``verify``: the most
    recorded digests lie after it)."""
    chosen = list(inputs.apps if apps is None else apps)
    if from_scratch or inputs.snapshots is None:
        if snapshot_id is not None:
            raise ReplayError(
                f"--snapshot {snapshot_id}: there is no snapshot store to read it from"
            )
        return fresh_engine(chosen, inputs.source), StartPoint(0)
    store, source = inputs.snapshots, inputs.source
    return asyncio.run(_from_store(store, source, chosen, target, snapshot_id, oldest))


async def _from_store(
    store: ReadOnlySnapshots,
    source: LogSource,
    apps: list[App],
    target: int | None,
    snapshot_id: str | None,
    oldest: bool,
) -> tuple[Engine, StartPoint]:
    try:
        if snapshot_id is not None:
            return await _named(store, source, apps, target, SnapshotId(snapshot_id))
        notes: list[str] = []
        listed = await store.list()
        for info in reversed(listed) if oldest else listed:
            why = refusal(info.meta, source, apps, target) if info.meta is not None else None
            if why is not None:
                notes.append(f"snapshot {info.id} (offset {info.offset}) not used: {why}")
                continue
            try:
                meta, state = await store.load(info.id)
            except SnapshotError as e:
                if e.retriable:
                    raise ReplayError(f"the snapshots in {store.where}: {e}") from e
                notes.append(f"snapshot {info.id} (offset {info.offset}) is damaged: {e}")
                continue
            why = refusal(meta, source, apps, target)
            if why is not None:
                notes.append(f"snapshot {info.id} (offset {info.offset}) not used: {why}")
                continue
            engine = Engine.restore(apps, state, digest_interval=NO_DIGEST_POINTS)
            return engine, StartPoint(meta.offset, info.id, meta.epoch, meta.digest, tuple(notes))
        return fresh_engine(apps, source), StartPoint(0, notes=tuple(notes))
    finally:
        await store.close()


async def _named(
    store: ReadOnlySnapshots,
    source: LogSource,
    apps: list[App],
    target: int | None,
    sid: SnapshotId,
) -> tuple[Engine, StartPoint]:
    try:
        meta, state = await store.load(sid)
    except SnapshotError as e:
        raise ReplayError(f"snapshot {sid} in {store.where}: {e}") from e
    why = refusal(meta, source, apps, target)
    if why is not None:
        hint = " (--from-scratch replays from offset 0 instead)" if "app versions" in why else ""
        raise ReplayError(f"snapshot {sid} cannot start this replay: {why}{hint}")
    engine = Engine.restore(apps, state, digest_interval=NO_DIGEST_POINTS)
    return engine, StartPoint(meta.offset, sid, meta.epoch, meta.digest)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic collector off for the block (see the module docstring), then one run."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
            gc.collect()


@dataclass
class RunResult:
    """How a run ended: the engine's position, the epoch of its last record."""

    applied: int
    epoch: int | None
    interrupted: bool = False
    reached_time: bool = False
    notes: list[str] = field(default_factory=list)


Progress = Callable[[int], None]  # called with the engine's position after every batch


class Replayer:
    """Applies a source's records to an engine (see the module docstring)."""

    def __init__(self, source: LogSource, stop: threading.Event | None = None) -> None:
        self.source = source
        self.stop = stop if stop is not None else threading.Event()

    def run(
        self,
        engine: Engine,
        *,
        to_offset: int | None = None,
        until_ms: int | None = None,
        checkpoints: Iterable[int] = (),
        on_checkpoint: Callable[[Engine], None] | None = None,
        on_records: Callable[[Engine, list[Record], list[EngineOutput]], None] | None = None,
        progress: Progress | None = None,
        max_records: int | None = None,
    ) -> RunResult:
        """Apply from ``engine.applied`` on; see the module docstring for where it ends.

        ``on_records(engine, records, outputs)`` is called after each applied piece with
        its records and the outputs they produced; ``on_checkpoint(engine)`` when the
        engine is exactly at a checkpoint.
        """
        start = engine.applied
        end = self.source.log_end
        if to_offset is not None and to_offset > end:
            raise LogRangeError(
                f"offset {to_offset} is beyond the log in {self.source.directory}, which "
                f"ends at {end}"
            )
        if start < self.source.log_start:
            raise LogRangeError(
                f"the replay starts at offset {start}, before the log's first offset "
                f"{self.source.log_start} (deleted by retention)"
            )
        marks = sorted(c for c in set(checkpoints) if c >= start)
        result = RunResult(start, self.source.epoch_at(start - 1) if start else None)
        if marks and marks[0] == start and on_checkpoint is not None:
            on_checkpoint(engine)
        mark = 0
        while mark < len(marks) and marks[mark] <= start:
            mark += 1
        with paused_gc():
            self._run(engine, result, marks, mark, to_offset, until_ms, on_checkpoint,
                      on_records, progress, max_records)  # fmt: skip
        if self.source.skipped:
            result.notes += [
                f"offsets {s.first}..{s.end - 1} skipped (damaged: {s.where}: {s.reason})"
                for s in self.source.skipped
            ]
        return result

    def _run(
        self,
        engine: Engine,
        result: RunResult,
        marks: list[int],
        mark: int,
        to_offset: int | None,
        until_ms: int | None,
        on_checkpoint: Callable[[Engine], None] | None,
        on_records: Callable[[Engine, list[Record], list[EngineOutput]], None] | None,
        progress: Progress | None,
        max_records: int | None,
    ) -> None:
        start = engine.applied
        kwargs = {} if max_records is None else {"max_records": max_records}
        for batch in self.source.batches(start, to_offset, **kwargs):
            if until_ms is not None and batch[-1].ingest_time_ms > until_ms:
                cut = next(n for n, r in enumerate(batch) if r.ingest_time_ms > until_ms)
                batch = batch[:cut]
                result.reached_time = True
            pos = 0
            while pos < len(batch):
                first = batch[pos].offset
                stop_at = len(batch)
                if mark < len(marks) and marks[mark] < first + (len(batch) - pos):
                    stop_at = pos + marks[mark] - first
                piece = batch[pos:stop_at]
                outputs = [o for o in engine.apply(piece) if not isinstance(o, DigestPoint)]
                if piece[-1].epoch:
                    result.epoch = piece[-1].epoch
                if on_records is not None:
                    on_records(engine, piece, outputs)
                pos = stop_at
                while mark < len(marks) and marks[mark] <= engine.applied:
                    if marks[mark] == engine.applied and on_checkpoint is not None:
                        on_checkpoint(engine)
                    mark += 1
            result.applied = engine.applied
            if progress is not None:
                progress(engine.applied)
            if result.reached_time:
                break
            if self.stop.is_set():
                result.interrupted = True
                break


async def snapshot_list(inputs: ReplayInputs) -> list[dict[str, object]]:
    """Every snapshot in the store, newest first: id, epoch, offset, when, app versions,
    and whether a replay of this log may start from it (else why not). Reads metadata
    only (``list``), no state."""
    store = inputs.snapshots
    if store is None:
        return []
    out: list[dict[str, object]] = []
    try:
        for info in await store.list():
            meta = info.meta
            row: dict[str, object] = {"id": info.id, "epoch": info.epoch, "offset": info.offset}
            if meta is None:
                row["usable"] = "damaged: its metadata does not read"
            else:
                why = refusal(meta, inputs.source, inputs.apps, None)
                row |= {
                    "created_ms": meta.created_ms,
                    "digest": meta.digest,
                    "app_versions": dict(meta.app_versions),
                    "usable": "yes" if why is None else why,
                }
            out.append(row)
    finally:
        await store.close()
    return out
