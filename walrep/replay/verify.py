"""``walrep replay verify``: recompute the digest chain and compare it with every record.

What is recorded, and so checked:

* the node's **digest chain** (``digests.ndjson`` in its data directory: the engine's
  digest every ``digest_interval`` offsets);
* every **snapshot** in the store: first the store's own verification (CRC, chunks, the
  state hashing to the digest its metadata names: an edited digest or a flipped byte
  fails here), then its digest against the replayed state's at its offset (a snapshot
  that verifies but holds another state fails there);
* the **log** itself: every frame's CRC and sequence, every payload decoded
  (``LogSource``): a flipped byte is a damaged frame, named by offset.

The state is recomputed from offset 0 when the log starts there, else from the oldest
snapshot the node could restore (whose own digest the store verifies; what lies before
it cannot be recomputed and is reported as unchecked). The run stops at the first
mismatch, naming offset, epoch and what recorded the other digest.

Snapshots that cannot be compared are noted, not failed: one of another history (a
forced takeover wrote it off), one beyond the log's end, one of other app versions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from walrep.engine.core import Engine
from walrep.engine.snapshots import SnapshotInfo
from walrep.engine.types import SnapshotMeta
from walrep.errors import SnapshotError
from walrep.replay.errors import DamagedLogError, ReplayError
from walrep.replay.inputs import ReplayInputs
from walrep.replay.runner import Progress, Replayer, StartPoint, refusal, start_engine


@dataclass(frozen=True)
class Expectation:
    """A digest some record holds for the state at ``offset``."""

    offset: int
    digest: str
    recorded_by: str  # "digest chain" or "snapshot <id> (epoch E)"


@dataclass
class Mismatch:
    offset: int
    epoch: int | None
    recorded_by: str
    expected: str | None
    got: str | None
    reason: str

    def __str__(self) -> str:
        return f"offset {self.offset} (epoch {self.epoch}): {self.recorded_by}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "epoch": self.epoch,
            "recorded_by": self.recorded_by,
            "expected": self.expected,
            "got": self.got,
            "reason": self.reason,
        }


@dataclass
class VerifyReport:
    start: StartPoint | None = None
    applied: int = 0
    checked: int = 0
    mismatch: Mismatch | None = None
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.mismatch is None and not self.interrupted

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "start": self.start.to_json() if self.start is not None else None,
            "applied": self.applied,
            "checked": self.checked,
            "mismatch": self.mismatch.to_json() if self.mismatch is not None else None,
            "interrupted": self.interrupted,
            "notes": self.notes,
        }


async def _load_snapshots(
    inputs: ReplayInputs,
) -> list[tuple[SnapshotInfo, SnapshotMeta | None, str | None]]:
    """Every snapshot with its verified meta, or None and why it failed the store's check."""
    store = inputs.snapshots
    if store is None:
        return []
    out: list[tuple[SnapshotInfo, SnapshotMeta | None, str | None]] = []
    try:
        for info in await store.list():
            try:
                meta, _ = await store.load(info.id)
            except SnapshotError as e:
                if e.retriable:
                    raise ReplayError(f"the snapshots in {store.where}: {e}") from e
                out.append((info, None, f"{type(e).__name__}: {e}"))
                continue
            out.append((info, meta, None))
    finally:
        await store.close()
    return out


def verify(
    inputs: ReplayInputs,
    replayer: Replayer,
    *,
    progress: Progress | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Recompute and compare (see the module docstring)."""
    report = VerifyReport()
    source = inputs.source
    snapshots = asyncio.run(_load_snapshots(inputs))
    expected: dict[int, list[Expectation]] = {}
    for offset, digest in inputs.recorded_digests():
        expected.setdefault(offset, []).append(Expectation(offset, digest, "digest chain"))
    for info, meta, damage in snapshots:
        who = f"snapshot {info.id} (epoch {info.epoch})"
        if meta is None:
            report.mismatch = Mismatch(
                info.offset, info.epoch, who, None, None, f"the store refuses it: {damage}"
            )
            return report
        why = refusal(meta, source, inputs.apps, None)
        if why is not None:
            report.notes.append(f"{who} at offset {meta.offset} not compared: {why}")
            continue
        expected.setdefault(meta.offset, []).append(Expectation(meta.offset, meta.digest, who))
    from_scratch = source.log_start == 0
    engine, start = start_engine(inputs, target=None, from_scratch=from_scratch, oldest=True)
    if not from_scratch:
        report.notes.append(
            f"the log starts at {source.log_start}: the state before offset {start.offset} "
            f"is taken from snapshot {start.snapshot_id} (verified by the store), not recomputed"
        )
    report.start = start
    if start.snapshot_id is not None:  # the replay starts from it: nothing to compare
        mine = f"snapshot {start.snapshot_id} "
        kept = [e for e in expected.get(start.offset, []) if not e.recorded_by.startswith(mine)]
        expected[start.offset] = kept
        if not kept:
            del expected[start.offset]
    late = [o for o in expected if o > source.log_end]
    for offset in sorted(late):
        for e in expected.pop(offset):
            report.notes.append(
                f"{e.recorded_by} at offset {offset} not compared: "
                f"beyond the log's end {source.log_end}"
            )
    early = [o for o in expected if o < engine.applied]
    for offset in sorted(early):
        for e in expected.pop(offset):
            report.notes.append(
                f"{e.recorded_by} at offset {offset} not compared: "
                f"before the replay's start {engine.applied}"
            )
    if on_start is not None:
        on_start(engine.applied, source.log_end)

    def check(at: Engine) -> None:
        if report.mismatch is not None:
            return
        digest = at.digest()
        for e in expected[at.applied]:
            report.checked += 1
            if e.digest != digest:
                report.mismatch = Mismatch(
                    at.applied,
                    source.epoch_at(at.applied - 1) if at.applied else None,
                    e.recorded_by,
                    e.digest,
                    digest,
                    f"recorded digest {e.digest}, the replayed state's is {digest}",
                )
                replayer.stop.set()
                return

    try:
        result = replayer.run(engine, checkpoints=expected, on_checkpoint=check, progress=progress)
    except DamagedLogError as e:
        report.applied = engine.applied
        report.mismatch = Mismatch(
            e.offset,
            source.epoch_at(e.offset),
            "the log",
            None,
            None,
            f"damaged frame ({e.where}): {e.reason}",
        )
        return report
    report.applied = result.applied
    report.notes += result.notes
    report.interrupted = result.interrupted and report.mismatch is None
    return report
