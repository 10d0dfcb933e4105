"""Engine snapshots: the format, the fenced stores (database or files), recovery selection.

This subpackage is IO (asyncio, SQLAlchemy, files); the engine core does not import it.
``format`` is pure. See docs/snapshots.md.
"""

from __future__ import annotations

from pathlib import Path

from walrep.config.model import WalrepConfig
from walrep.db import create_engine, normalize_url
from walrep.engine.snapshots.db_store import DbSnapshotStore
from walrep.engine.snapshots.file_store import FileSnapshotStore
from walrep.engine.snapshots.format import decode, decode_blob, encode, state_digest
from walrep.engine.snapshots.store import (
    Skipped,
    SnapshotId,
    SnapshotInfo,
    SnapshotReader,
    SnapshotStore,
    load_newest_valid,
    save_then_trim,
)


def store_from_config(config: WalrepConfig) -> SnapshotStore:
    """The store ``state_persistence`` names, with an engine of its own for ``db``.

    ``datasource`` defaults to the cluster's; a relative ``directory`` is under
    ``node.data_dir``. Call ``setup()`` before use and ``close()`` after.
    """
    section = config.state_persistence
    if section.store == "file":
        directory = section.directory
        if not directory.is_absolute():
            directory = Path(config.node.data_dir) / directory
        return FileSnapshotStore(
            directory, chunk_bytes=section.chunk_bytes, max_state_bytes=section.max_snapshot_bytes
        )
    source = config.datasource(section.datasource or config.cluster.datasource)
    url = normalize_url(source.url, username=source.username, password=source.resolved_password())
    engine = create_engine(
        url, connect_timeout_ms=source.connect_timeout_ms, pool_size=source.pool_size
    )
    return DbSnapshotStore(
        engine,
        group_id=config.cluster.group_id,
        table=section.table,
        chunk_bytes=section.chunk_bytes,
        max_state_bytes=section.max_snapshot_bytes,
        call_timeout_ms=section.db_call_timeout_ms,
    )


__all__ = [
    "DbSnapshotStore",
    "FileSnapshotStore",
    "SnapshotId",
    "SnapshotInfo",
    "SnapshotReader",
    "SnapshotStore",
    "Skipped",
    "decode",
    "decode_blob",
    "encode",
    "load_newest_valid",
    "save_then_trim",
    "state_digest",
    "store_from_config",
]
