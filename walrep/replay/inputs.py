"""What a replay reads: a data directory's log and digest chain, the apps, the snapshots.

Everything is opened read-only. The snapshot store is the one the node's config names
(``-c``: the database tables or the file directory; a relative file-store directory is
taken under the data directory given, so a copy of a dead node's disk works), else the
file store in ``DATA/snapshots`` if there is one, else none (replays start at the log's
first offset). Only ``list`` and ``load`` are ever called on it (``ReadOnlySnapshots``):
no ``setup``, no save, no trim, so the live cluster's tables are never written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from walrep.config.model import WalrepConfig, load_config
from walrep.engine.app import App
from walrep.engine.loader import DEFAULT_DIRECTORY, load_app, load_apps
from walrep.engine.snapshots import FileSnapshotStore, SnapshotId, SnapshotInfo, store_from_config
from walrep.engine.snapshots.store import SnapshotReader, SnapshotStore
from walrep.engine.types import SnapshotMeta
from walrep.errors import SnapshotError
from walrep.node.engine_host import DIGESTS_FILE, read_digest_chain
from walrep.replay.errors import ReplayError
from walrep.replay.source import LogSource


class ReadOnlySnapshots(SnapshotReader):
    """A snapshot store seen through its read side only (see the module docstring)."""

    def __init__(self, store: SnapshotStore, where: str) -> None:
        self._store = store
        self.where = where

    async def list(self) -> list[SnapshotInfo]:
        try:
            return await self._store.list()
        except SnapshotError as e:
            raise ReplayError(f"the snapshots in {self.where} cannot be listed: {e}") from e

    async def load(self, snapshot_id: SnapshotId) -> tuple[SnapshotMeta, bytes]:
        return await self._store.load(snapshot_id)

    async def close(self) -> None:
        await self._store.close()


@dataclass
class ReplayInputs:
    source: LogSource
    apps: list[App]
    snapshots: ReadOnlySnapshots | None
    digests_path: Path

    def recorded_digests(self) -> list[tuple[int, str]]:
        """The node's digest chain (``digests.ndjson``): ``(offset, digest)`` in file
        order; a torn last line is ignored (what came before stands)."""
        return read_digest_chain(self.digests_path)


def apps_from(path: Path) -> list[App]:
    """The apps of a deployment directory, or the one app of a module file."""
    if path.is_file():
        return [load_app(path)]
    return load_apps(path)


def open_inputs(
    data_dir: Path,
    *,
    config_path: Path | None = None,
    apps_path: Path | None = None,
    skip_damaged: bool = False,
    use_snapshots: bool = True,
) -> ReplayInputs:
    """The inputs of one replay (see the module docstring); errors name the file."""
    config: WalrepConfig | None = load_config(config_path) if config_path is not None else None
    if apps_path is None:
        apps_path = config.engine.apps_dir if config is not None else DEFAULT_DIRECTORY
    apps = apps_from(apps_path)
    source = LogSource(data_dir, skip_damaged=skip_damaged)
    snapshots = _snapshots(config, data_dir) if use_snapshots else None
    return ReplayInputs(source, apps, snapshots, data_dir / DIGESTS_FILE)


def _snapshots(config: WalrepConfig | None, data_dir: Path) -> ReadOnlySnapshots | None:
    if config is None:
        folder = data_dir / "snapshots"
        if not folder.is_dir():
            return None
        return ReadOnlySnapshots(FileSnapshotStore(folder), str(folder))
    section = config.state_persistence
    if section.store == "file":
        folder = (
            section.directory if section.directory.is_absolute() else data_dir / section.directory
        )
        store = FileSnapshotStore(
            folder, chunk_bytes=section.chunk_bytes, max_state_bytes=section.max_snapshot_bytes
        )
        return ReadOnlySnapshots(store, str(folder))
    name = section.datasource or config.cluster.datasource
    return ReadOnlySnapshots(store_from_config(config), f"datasource {name} table {section.table}")
