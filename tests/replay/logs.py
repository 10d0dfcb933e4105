"""Data directories for replay tests: a real ``Wal`` of API-M events (two epochs), file
snapshots written the way the node writes them, and the digest chain beside them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import orjson

from walrep.apim.generator import ApimGenerator
from walrep.engine.app import App
from walrep.engine.canonical import FORMAT_VERSION, digest_of
from walrep.engine.core import Engine
from walrep.engine.loader import load_apps
from walrep.engine.snapshots import FileSnapshotStore
from walrep.engine.types import SnapshotMeta
from walrep.log.types import Record
from walrep.log.wal import Wal
from walrep.node.engine_host import DIGESTS_FILE
from walrep.node.restore import log_epoch_before

REPO = Path(__file__).resolve().parents[2]
APPS_DIR = REPO / "conf" / "apps"
BASE_MS = 1_767_225_600_000
BATCH = 250


@dataclass
class DataDir:
    path: Path
    records: list[Record]
    apps: list[App]

    def engine_at(self, offset: int) -> Engine:
        """The state after ``[0, offset)``, applied in one straight run (the oracle)."""
        engine = Engine(self.apps)
        engine.apply(self.records[:offset])
        return engine


def write_log(path: Path, n: int, *, seed: int = 7, producer: str | None = None) -> DataDir:
    """``n`` API-M events in frames of ``BATCH``; epoch 1 for the first half, then 2;
    ingest times 1 ms per offset from 2026-01-01."""
    wal = Wal.open(path)
    gen = ApimGenerator(seed, rate_per_s=200.0)
    for i in range(0, n, BATCH):
        events = gen.log_events(min(BATCH, n - i), producer_id=producer, first_seq=i)
        wal.append_sync(events, epoch=1 if i < n // 2 else 2, ingest_time_ms=BASE_MS + i)
    wal.close()
    wal = Wal.open(path)
    records = list(wal.read())
    wal.close()
    return DataDir(path, records, load_apps(APPS_DIR))


def save_snapshot(data: DataDir, offset: int, epoch: int = 2) -> SnapshotMeta:
    """A snapshot of the state at ``offset`` in ``DATA/snapshots``, as a node saves it."""
    state = data.engine_at(offset).state_bytes()
    wal = Wal.open(data.path)
    try:
        log_epoch = log_epoch_before(offset, wal.epochs.epoch_at)
    finally:
        wal.close()
    meta = SnapshotMeta(
        offset,
        epoch,
        digest_of(state),
        tuple(sorted((a.name, a.version) for a in data.apps)),
        FORMAT_VERSION,
        BASE_MS,
        log_epoch,
    )
    store = FileSnapshotStore(data.path / "snapshots")

    async def save() -> None:
        await store.setup()
        await store.save(meta, state)

    asyncio.run(save())
    return meta


def write_chain(data: DataDir, offsets: list[int]) -> list[tuple[int, str]]:
    """The digest chain a node would have recorded at ``offsets``."""
    chain = [(o, data.engine_at(o).digest()) for o in offsets]
    lines = b"".join(orjson.dumps({"offset": o, "digest": d}) + b"\n" for o, d in chain)
    (data.path / DIGESTS_FILE).write_bytes(lines)
    return chain
