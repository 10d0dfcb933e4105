"""One contract suite for every snapshot store: file, SQLite, MariaDB, PostgreSQL.

Each test gets its own table names (``wsnap_<random>``, dropped afterwards) or its own
directory, so parallel runs do not meet. Damage is done the way it happens: a byte
flipped in a stored chunk by a raw UPDATE, or in the file. The config section of
``state_persistence`` is tested at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
import sqlalchemy as sa

from tests.services import require_service
from walrep.config.model import StatePersistenceSection, WalrepConfig, load_config
from walrep.config.seed import import_seed, parse_seed
from walrep.db import create_engine, normalize_url
from walrep.engine.snapshots import (
    DbSnapshotStore,
    FileSnapshotStore,
    SnapshotId,
    SnapshotStore,
    load_newest_valid,
    save_then_trim,
    store_from_config,
)
from walrep.engine.snapshots import format as fmt
from walrep.engine.snapshots.db_store import blob_value
from walrep.engine.snapshots.file_store import FENCE_NAME, LOCK_NAME, fence_bytes
from walrep.engine.types import SnapshotMeta
from walrep.errors import (
    ConfigError,
    SnapshotCorruptError,
    SnapshotError,
    SnapshotFencedError,
    SnapshotNotFoundError,
    SnapshotTooLargeError,
)
from walrep.log.fsutil import FileOps

BACKENDS = ["file", "sqlite", "mariadb", "postgresql"]
DB_BACKENDS = BACKENDS[1:]
ROOT = Path(__file__).resolve().parents[2]
MULTI_CHUNK = 2 * 1024 * 1024 + 4321  # > 2 MiB: five chunks of 512 KiB
Damage = Literal["payload", "magic", "truncate"]


def meta_for(state: bytes, offset: int, epoch: int) -> SnapshotMeta:
    return SnapshotMeta(
        offset=offset,
        epoch=epoch,
        digest=fmt.state_digest(state),
        app_versions=(("apim-analytics", "4.2.0"),),
        format_version=1,
        created_ms=1_700_000_000_000 + offset,
    )


def state_of(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


class FlakyFsync(FileOps):
    """A disk whose fsync fails while ``failing`` is set."""

    failing = False

    def fsync(self, fd: int) -> None:
        if self.failing:
            raise OSError(errno.EIO, "injected fsync failure")
        super().fsync(fd)


class Harness:
    """Stores of one backend on one table (or directory), and raw access to their bytes."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.group = f"g-{uuid.uuid4().hex[:12]}"
        self.table = f"wsnap_{uuid.uuid4().hex[:10]}"
        self.directory = tmp_path / "snapshots"
        self.ops = FlakyFsync()
        self.stores: list[SnapshotStore] = []
        if backend == "sqlite":
            self.url = f"sqlite:///{tmp_path / 'snapshots.db'}"
        elif backend != "file":
            self.url = require_service(backend)

    def new_store(self, *, group: str | None = None, **kw: int) -> SnapshotStore:
        store: SnapshotStore
        if self.backend == "file":
            store = FileSnapshotStore(self.directory, file_ops=self.ops, **kw)
        else:
            store = DbSnapshotStore(
                create_engine(normalize_url(self.url)),
                group_id=group or self.group,
                table=self.table,
                call_timeout_ms=20_000,
                **kw,
            )
        self.stores.append(store)
        return store

    @property
    def db(self) -> DbSnapshotStore:
        assert isinstance(self.stores[0], DbSnapshotStore)
        return self.stores[0]

    async def close(self) -> None:
        if self.backend != "file" and self.stores:
            async with self.db.engine.begin() as conn:
                await conn.run_sync(self.db.metadata.drop_all)
        for store in self.stores:
            await store.close()

    # --- raw access ---------------------------------------------------------------------

    async def damage(self, snapshot_id: SnapshotId, how: Damage) -> None:
        """Change stored bytes behind the store's back."""
        if self.backend == "file":
            path = self.directory / snapshot_id
            data = bytearray(path.read_bytes())
            if how == "truncate":
                del data[-100:]
            else:
                data[0 if how == "magic" else len(data) // 2] ^= 0x01
            path.write_bytes(bytes(data))
            return
        t = self.db.chunks_t
        where = sa.and_(t.c.group_id == self.group, t.c.snapshot_id == int(snapshot_id))
        async with self.db.engine.begin() as conn:
            if how == "truncate":
                last = await conn.execute(sa.select(sa.func.max(t.c.chunk_index)).where(where))
                await conn.execute(sa.delete(t).where(where, t.c.chunk_index == last.scalar()))
                return
            last = await conn.execute(sa.select(sa.func.max(t.c.chunk_index)).where(where))
            index = 0 if how == "magic" else min(1, last.scalar_one())
            row = where & (t.c.chunk_index == index)
            data = bytearray((await conn.execute(sa.select(t.c.data).where(row))).scalar_one())
            data[0 if how == "magic" else len(data) // 2] ^= 0x01
            value = blob_value(self.db.engine, bytes(data))
            await conn.execute(sa.update(t).where(row).values(data=value))

    async def leftovers(self) -> list[str]:
        """Traces of a save that should have left none: temp files, or headerless chunks."""
        if self.backend == "file":
            return sorted(p.name for p in self.directory.iterdir() if p.name.endswith(".tmp"))
        c, h = self.db.chunks_t, self.db.header_t
        query = (
            sa.select(c.c.snapshot_id)
            .distinct()
            .where(
                c.c.group_id == self.group,
                c.c.snapshot_id.not_in(
                    sa.select(h.c.snapshot_id).where(h.c.group_id == self.group)
                ),
            )
        )
        async with self.db.engine.connect() as conn:
            return [str(r[0]) for r in await conn.execute(query)]

    @contextlib.asynccontextmanager
    async def fence_held_at(self, epoch: int) -> AsyncIterator[None]:
        """Raise the fence to ``epoch`` in a transaction (or under the lock) held open."""
        if self.backend == "file":
            fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                (self.directory / FENCE_NAME).write_bytes(fence_bytes(epoch))
                yield
            finally:
                os.close(fd)
            return
        raw = create_engine(normalize_url(self.url))
        try:
            async with raw.begin() as conn:
                f = self.db.fence_t
                await conn.execute(
                    sa.update(f).where(f.c.group_id == self.group).values(epoch=epoch)
                )
                yield
        finally:
            await raw.dispose()

    async def break_next_save(self) -> None:
        """Make the next save fail half way (after some of its chunks are written)."""
        if self.backend == "file":
            self.ops.failing = True
            return
        f, c = self.db.fence_t, self.db.chunks_t
        async with self.db.engine.begin() as conn:
            next_id = (
                await conn.execute(
                    sa.select(f.c.next_snapshot_id).where(f.c.group_id == self.group)
                )
            ).scalar_one()
            # A stray row where the save's third chunk goes: its insert hits the primary key.
            values = {"group_id": self.group, "snapshot_id": next_id, "chunk_index": 2}
            stray = blob_value(self.db.engine, b"stray")
            await conn.execute(sa.insert(c).values(data=stray, **values))
        self._stray = int(next_id)

    async def dead_save(self) -> None:
        """What a save that died after its first chunk leaves: an id taken, one chunk."""
        f, c = self.db.fence_t, self.db.chunks_t
        async with self.db.engine.begin() as conn:
            where = f.c.group_id == self.group
            next_id = (
                await conn.execute(sa.select(f.c.next_snapshot_id).where(where))
            ).scalar_one()
            await conn.execute(sa.update(f).where(where).values(next_snapshot_id=next_id + 1))
            values = {"group_id": self.group, "snapshot_id": next_id, "chunk_index": 0}
            await conn.execute(sa.insert(c).values(data=blob_value(self.db.engine, b"x"), **values))

    async def heal(self) -> None:
        self.ops.failing = False
        if self.backend != "file":
            c = self.db.chunks_t
            async with self.db.engine.begin() as conn:
                await conn.execute(
                    sa.delete(c).where(c.c.group_id == self.group, c.c.snapshot_id == self._stray)
                )


@pytest.fixture(params=BACKENDS)
async def h(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(request.param, tmp_path)
    store = harness.new_store()
    await store.setup()
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
def store(h: Harness) -> SnapshotStore:
    return h.stores[0]


async def save_series(store: SnapshotStore, points: list[tuple[int, int]]) -> list[SnapshotId]:
    """Save a small distinct snapshot at each ``(offset, epoch)``, in order."""
    ids = []
    for offset, epoch in points:
        state = state_of(20_000, seed=offset * 1000 + epoch)
        ids.append(await store.save(meta_for(state, offset, epoch), state))
    return ids


def accept_all(_: SnapshotMeta) -> bool:
    return True


# --- the contract ----------------------------------------------------------------------


async def test_a_multi_chunk_snapshot_round_trips(h: Harness, store: SnapshotStore) -> None:
    state = state_of(MULTI_CHUNK, seed=1)
    meta = meta_for(state, offset=12_345, epoch=7)
    snapshot_id = await store.save(meta, state)
    [info] = await store.list()
    assert (info.id, info.epoch, info.offset, info.meta) == (snapshot_id, 7, 12_345, meta)
    assert await store.load(snapshot_id) == (meta, state)
    assert await h.new_store().load(snapshot_id) == (meta, state)  # another process's view
    if h.backend != "file":
        c = h.db.chunks_t
        async with h.db.engine.connect() as conn:
            count = await conn.execute(sa.select(sa.func.count()).where(c.c.group_id == h.group))
            assert count.scalar_one() == 5


async def test_an_empty_state_round_trips(store: SnapshotStore) -> None:
    meta = meta_for(b"", offset=0, epoch=0)
    assert await store.load(await store.save(meta, b"")) == (meta, b"")


async def test_list_is_newest_first(store: SnapshotStore) -> None:
    ids = await save_series(store, [(10, 1), (20, 1), (15, 2), (30, 2)])
    listed = await store.list()
    assert [i.id for i in listed] == [ids[3], ids[2], ids[1], ids[0]]
    assert [(i.offset, i.epoch) for i in listed] == [(30, 2), (15, 2), (20, 1), (10, 1)]
    assert all(
        i.meta is not None and (i.meta.offset, i.meta.epoch) == (i.offset, i.epoch) for i in listed
    )


async def test_trim_keeps_the_newest_n(store: SnapshotStore) -> None:
    ids = await save_series(store, [(10, 1), (20, 1), (30, 1), (40, 2), (50, 2)])
    assert await store.trim(2) == 3
    assert [i.id for i in await store.list()] == [ids[4], ids[3]]
    for snapshot_id in ids[:3]:
        with pytest.raises(SnapshotNotFoundError):
            await store.load(snapshot_id)
    assert await store.trim(2) == 0
    assert (await store.load(ids[3]))[0].offset == 40


async def test_a_lower_epoch_is_refused_and_leaves_nothing(
    h: Harness, store: SnapshotStore
) -> None:
    other = h.new_store()
    await other.setup()
    [newer] = await save_series(store, [(100, 5)])
    state = state_of(MULTI_CHUNK, seed=2)
    with pytest.raises(SnapshotFencedError) as info:
        await other.save(meta_for(state, 200, 4), state)
    assert (info.value.epoch, info.value.fence_epoch, info.value.retriable) == (4, 5, False)
    for reader in (store, other):
        assert [i.id for i in await reader.list()] == [newer]
    assert await h.leftovers() == []
    # The same epoch and higher ones still write, from either store; then 5 is stale.
    await save_series(other, [(150, 5), (300, 6)])
    with pytest.raises(SnapshotFencedError):
        await save_series(store, [(400, 5)])
    assert [i.epoch for i in await store.list()] == [6, 5, 5]


async def test_the_fence_is_read_inside_the_saving_transaction(h: Harness) -> None:
    """A fence raised by a transaction still open when the save starts stops the save.

    The save must wait for that transaction and then see its epoch: a check outside the
    save's own locked transaction (or before the lock) would read the old fence and pass.
    """
    store = h.stores[0]
    state = state_of(30_000, seed=3)
    async with h.fence_held_at(9):
        save = asyncio.create_task(store.save(meta_for(state, 10, 8), state))
        await asyncio.sleep(0.3)  # let it reach the lock (the outcome does not depend on it)
        assert not save.done()
    with pytest.raises(SnapshotFencedError) as info:
        await save
    assert info.value.fence_epoch == 9
    assert await store.list() == []


async def test_a_failed_save_writes_nothing_and_trims_nothing(
    h: Harness, store: SnapshotStore
) -> None:
    ids = await save_series(store, [(10, 1), (20, 1), (30, 1)])
    await h.break_next_save()
    state = state_of(MULTI_CHUNK, seed=4)
    with pytest.raises(SnapshotError) as info:
        await save_then_trim(store, meta_for(state, 40, 3), state, revisions_to_keep=1)
    assert info.value.retriable is True
    assert not isinstance(info.value, SnapshotFencedError)
    assert "save" in str(info.value)
    await h.heal()
    assert [i.id for i in await store.list()] == ids[::-1]  # nothing trimmed, nothing added
    assert await h.leftovers() == []
    # The attempt raised the fence (a database store saves in short transactions): epoch
    # 3 wrote, so epoch 2's writer is stale; epoch 3 saves again.
    if h.backend != "file":
        with pytest.raises(SnapshotFencedError):
            await store.save(meta_for(state, 40, 2), state)
    await save_then_trim(store, meta_for(state, 40, 3), state, revisions_to_keep=2)
    assert [(i.offset, i.epoch) for i in await store.list()] == [(40, 3), (30, 1)]


@pytest.mark.parametrize("backend", DB_BACKENDS)
async def test_chunks_of_a_save_that_never_finished_are_removed_by_the_next_trim(
    backend: str, tmp_path: Path
) -> None:
    """A save whose node died between its transactions leaves chunks without a header
    (the database stores save in short transactions; the file store renames one file):
    never listed, deleted by the next trim."""
    h = Harness(backend, tmp_path)
    store = h.new_store()
    await store.setup()
    try:
        await save_series(store, [(10, 1)])
        await h.dead_save()
        assert await h.leftovers() != []
        assert [i.offset for i in await store.list()] == [10]
        state = state_of(MULTI_CHUNK, seed=5)
        await save_then_trim(store, meta_for(state, 20, 1), state, revisions_to_keep=2)
        assert [i.offset for i in await store.list()] == [20, 10]
        assert await h.leftovers() == []
    finally:
        await h.close()


async def test_a_stale_save_trims_nothing(store: SnapshotStore) -> None:
    await save_series(store, [(10, 1), (20, 2), (30, 2)])
    state = state_of(1000, seed=5)
    with pytest.raises(SnapshotFencedError):
        await save_then_trim(store, meta_for(state, 40, 1), state, revisions_to_keep=1)
    assert len(await store.list()) == 3


@pytest.mark.parametrize("how", ["payload", "magic", "truncate"])
async def test_a_damaged_latest_snapshot_falls_back_to_the_previous(
    h: Harness, store: SnapshotStore, how: Damage
) -> None:
    states = [state_of(MULTI_CHUNK // 2, seed=s) for s in (10, 11, 12)]
    ids = [
        await store.save(meta_for(s, offset, 1), s)
        for s, offset in zip(states, (100, 200, 300), strict=True)
    ]
    await h.damage(ids[2], how)
    heard: list[tuple[SnapshotId, str]] = []
    found = await load_newest_valid(store, accept_all, on_skip=lambda i, r: heard.append((i, r)))
    assert found is not None
    meta, state, skipped = found
    assert (meta, state) == (meta_for(states[1], 200, 1), states[1])
    [(skipped_id, reason)] = skipped
    assert skipped_id == ids[2] and "SnapshotCorruptError" in reason
    expected = {"payload": "CRC32C mismatch", "magic": "magic", "truncate": "chunk|bytes"}[how]
    assert any(word in reason for word in expected.split("|")), reason
    assert heard == skipped
    with pytest.raises(SnapshotCorruptError):
        await store.load(ids[2])


async def test_no_valid_snapshot_gives_none(h: Harness, store: SnapshotStore) -> None:
    assert await load_newest_valid(store, accept_all) is None
    ids = await save_series(store, [(10, 1), (20, 1)])
    for snapshot_id in ids:
        await h.damage(snapshot_id, "payload")
    heard: list[SnapshotId] = []
    assert await load_newest_valid(store, accept_all, on_skip=lambda i, _: heard.append(i)) is None
    assert heard == ids[::-1]


async def test_accept_passes_over_snapshots_silently(store: SnapshotStore) -> None:
    await save_series(store, [(10, 1), (20, 1), (30, 2)])
    found = await load_newest_valid(store, lambda m: m.epoch == 1)
    assert found is not None and found[0].offset == 20 and found[2] == []
    assert await load_newest_valid(store, lambda m: False) is None


async def test_an_unknown_id_is_not_found(store: SnapshotStore) -> None:
    for bad in ["999", "snap-00000000000000000001-1.wsnap", "../etc/passwd", ""]:
        with pytest.raises(SnapshotNotFoundError):
            await store.load(SnapshotId(bad))


async def test_a_state_over_the_limit_is_refused(h: Harness) -> None:
    small = h.new_store(max_state_bytes=1024 * 1024)
    await small.setup()
    state = state_of(MULTI_CHUNK, seed=6)
    with pytest.raises(SnapshotTooLargeError):
        await small.save(meta_for(state, 1, 1), state)
    ok = await h.stores[0].save(meta_for(state, 1, 1), state)
    with pytest.raises(SnapshotTooLargeError):  # and a stored one too large to load here
        await small.load(ok)


async def test_setup_is_idempotent_and_two_racing_stores_both_succeed(h: Harness) -> None:
    h.table = f"wsnap_{uuid.uuid4().hex[:10]}"  # fresh tables, created by the race
    h.directory = h.tmp_path / "fresh"
    first, second = h.new_store(), h.new_store()
    try:
        await asyncio.gather(first.setup(), second.setup())
        await first.setup()
        await save_series(first, [(1, 1)])
        await save_series(second, [(2, 1)])
        assert len(await first.list()) == 2
    finally:
        if isinstance(first, DbSnapshotStore):
            async with first.engine.begin() as conn:
                await conn.run_sync(first.metadata.drop_all)


@pytest.mark.parametrize("backend", DB_BACKENDS)
async def test_groups_sharing_tables_have_their_own_snapshots_and_fences(
    backend: str, tmp_path: Path
) -> None:
    h = Harness(backend, tmp_path)
    a, b = h.new_store(), h.new_store(group=f"other-{uuid.uuid4().hex[:8]}")
    try:
        await a.setup()
        await b.setup()
        [a_id] = await save_series(a, [(10, 5)])
        await save_series(b, [(10, 1), (20, 1)])  # epoch 1 is fine: group a's fence is not b's
        assert [i.id for i in await a.list()] == [a_id]
        assert len(await b.list()) == 2
        await b.trim(1)
        assert [i.id for i in await a.list()] == [a_id]
    finally:
        await h.close()


# --- an unreachable store ----------------------------------------------------------------


def unreachable(backend: str, tmp_path: Path) -> SnapshotStore:
    """A store whose storage cannot be reached: a closed port, a path that cannot exist."""
    if backend == "file":
        (tmp_path / "a-file").write_text("not a directory")
        return FileSnapshotStore(tmp_path / "a-file" / "snapshots")
    url = {
        "sqlite": f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}",
        "mariadb": "mysql://root@127.0.0.1:1/test",
        "postgresql": "postgresql://postgres@127.0.0.1:1/test",
    }[backend]
    return DbSnapshotStore(
        create_engine(normalize_url(url), connect_timeout_ms=2000),
        group_id="g",
        table="wsnap_unreachable",
        call_timeout_ms=5000,
    )


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_unreachable_store_raises_retriable_errors_naming_the_step(
    backend: str, tmp_path: Path
) -> None:
    store = unreachable(backend, tmp_path)
    state = state_of(1000, seed=7)
    meta = meta_for(state, 10, 1)
    some_id = SnapshotId("1" if backend != "file" else "snap-" + "0" * 20 + "-1.wsnap")
    steps: dict[str, Callable[[], Awaitable[object]]] = {
        "setup": store.setup,
        "save": lambda: save_then_trim(store, meta, state, revisions_to_keep=1),
        "list": store.list,
        "load": lambda: store.load(some_id),
        "trim": lambda: store.trim(1),
    }
    for step, call in steps.items():
        with pytest.raises(SnapshotError) as info:
            await call()
        assert info.value.retriable is True, (step, info.value)
        assert not isinstance(info.value, SnapshotCorruptError | SnapshotNotFoundError)
        word = {"setup": "creat", "save": "save", "list": "list", "load": "load", "trim": "trim"}
        assert word[step] in str(info.value), (step, str(info.value))
    with pytest.raises(SnapshotError):  # an outage is not damage: recovery does not skip it
        await load_newest_valid(store, accept_all)
    await store.close()


# --- file store specifics ---------------------------------------------------------------


async def test_file_setup_removes_temp_files_of_a_crashed_save(tmp_path: Path) -> None:
    store = FileSnapshotStore(tmp_path)
    await store.setup()
    (tmp_path / ".snap-00000000000000000001-1.wsnap.tmp").write_bytes(b"half")
    (tmp_path / "fence.tmp").write_bytes(b"half")
    await store.setup()
    assert sorted(os.listdir(tmp_path)) == [LOCK_NAME]
    assert await store.list() == []


async def test_file_store_damaged_fence_refuses_saves(tmp_path: Path) -> None:
    store = FileSnapshotStore(tmp_path)
    await store.setup()
    await save_series(store, [(10, 3)])
    assert (tmp_path / FENCE_NAME).read_bytes() == fence_bytes(3)
    (tmp_path / FENCE_NAME).write_bytes(b"garbage")
    with pytest.raises(SnapshotCorruptError, match="fence"):
        await save_series(store, [(20, 3)])


async def test_file_store_fence_survives_a_lost_fence_file(tmp_path: Path) -> None:
    store = FileSnapshotStore(tmp_path)
    await store.setup()
    await save_series(store, [(10, 4)])
    (tmp_path / FENCE_NAME).unlink()
    with pytest.raises(SnapshotFencedError):  # the file names still hold epoch 4
        await save_series(store, [(20, 3)])


async def test_file_list_reports_unreadable_meta_as_none(tmp_path: Path) -> None:
    store = FileSnapshotStore(tmp_path)
    await store.setup()
    [good, bad] = await save_series(store, [(10, 1), (20, 1)])
    (tmp_path / bad).write_bytes(b"WSNP")
    infos = await store.list()
    assert [(i.id, i.meta is None) for i in infos] == [(bad, True), (good, False)]
    found = await load_newest_valid(store, accept_all)
    assert found is not None and found[0].offset == 10 and found[2][0][0] == bad


# --- configuration ---------------------------------------------------------------------


@pytest.fixture
def no_walrep_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith("WALREP_") and not name.upper().startswith(
            ("WALREP_REQUIRE_SERVICES", "WALREP_TEST_")
        ):
            monkeypatch.delenv(name)
    yield


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(text)
    return path


def test_config_defaults(no_walrep_env: None, tmp_path: Path) -> None:
    section = load_config(write(tmp_path, "node: {id: n1}\n")).state_persistence
    assert section == StatePersistenceSection()
    assert (section.enabled, section.interval_s, section.revisions_to_keep) == (True, 60, 2)
    assert (section.store, section.datasource, section.table) == ("db", None, "walrep_snapshots")
    assert section.max_snapshot_bytes == fmt.STATE_BYTES_MAX_DEFAULT
    assert section.chunk_bytes == fmt.CHUNK_BYTES_DEFAULT


def test_config_bounds_match_the_format() -> None:
    fields = StatePersistenceSection.model_fields
    chunk = {type(m).__name__: m for m in fields["chunk_bytes"].metadata}
    assert chunk["Ge"].ge == fmt.CHUNK_BYTES_MIN and chunk["Le"].le == fmt.CHUNK_BYTES_MAX


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("{store: s3}", "state_persistence.store"),
        ("{revisions_to_keep: 0}", "state_persistence.revisions_to_keep"),
        ("{interval_s: -1}", "state_persistence.interval_s"),
        ("{table: 'bad-name'}", "state_persistence.table"),
        ("{chunk_bytes: 100}", "state_persistence.chunk_bytes"),
        ("{datasource: NOPE}", "state_persistence.datasource"),
        ("{unknown_key: 1}", "state_persistence.unknown_key"),
    ],
)
def test_config_bad_values_name_the_key(
    no_walrep_env: None, tmp_path: Path, body: str, key: str
) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        load_config(write(tmp_path, f"node: {{id: n1}}\nstate_persistence: {body}\n"))
    assert "node.yaml" in str(info.value)


def test_config_environment_overrides(
    no_walrep_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALREP_STATE_PERSISTENCE__INTERVAL_S", "5")
    path = write(tmp_path, "node: {id: n1}\nstate_persistence: {store: file}\n")
    section = load_config(path).state_persistence
    assert (section.interval_s, section.store) == (5, "file")


def test_the_example_configs_carry_the_section(no_walrep_env: None) -> None:
    files = [ROOT / "conf" / name for name in ("node1.yaml", "node2.yaml")]
    files += sorted((ROOT / "conf" / "mariadb").glob("node*.yaml"))
    files += sorted((ROOT / "conf" / "postgresql").glob("node*.yaml"))
    assert len(files) == 6
    for path in files:
        assert "state_persistence:" in path.read_text(), path
        assert load_config(path).state_persistence.store == "db"


async def test_store_from_config_builds_the_configured_store(
    no_walrep_env: None, tmp_path: Path
) -> None:
    text = f"node: {{id: n1, data_dir: {tmp_path}}}\nstate_persistence: {{store: file}}\n"
    file_store = store_from_config(load_config(write(tmp_path, text)))
    assert isinstance(file_store, FileSnapshotStore)
    assert file_store.directory == tmp_path / "snapshots"
    db_text = (
        f"node: {{id: n1}}\ncluster: {{group_id: gx}}\n"
        f"datasources: [{{name: WALREP_DB, url: 'sqlite:///{tmp_path / 'c.db'}'}}]\n"
        "state_persistence: {table: my_snaps}\n"
    )
    db_store = store_from_config(load_config(write(tmp_path, db_text)))
    assert isinstance(db_store, DbSnapshotStore)
    assert (db_store.group_id, db_store.table) == ("gx", "my_snaps")
    await db_store.setup()
    [snapshot_id] = await save_series(db_store, [(5, 1)])
    assert (await db_store.load(snapshot_id))[0].offset == 5
    await db_store.close()


def test_seed_state_persistence_is_mapped() -> None:
    seed = parse_seed((ROOT / "tests" / "data" / "seed-deployment.yaml").read_text())
    result = import_seed(seed)
    assert result.config["state_persistence"] == {
        "enabled": True,
        "interval_s": 60,
        "revisions_to_keep": 2,
        "store": "db",
        "datasource": "PERSISTENCE_DB",
        "table": "PERSISTENCE_TABLE",
    }
    assert any("intervalInMin (1): interval_s 60" in n for n in result.notes)
    assert WalrepConfig.model_fields["state_persistence"] is not None


@pytest.mark.parametrize(
    ("store_class", "expected", "note"),
    [
        ("io.siddhi.distribution.core.persistence.FileSystemPersistenceStore", "file", None),
        (
            "io.siddhi.distribution.core.persistence.IncrementalFileSystemPersistenceStore",
            "file",
            "full snapshots",
        ),
        ("com.example.MyStore", None, "default (db)"),
    ],
)
def test_seed_persistence_store_classes(
    store_class: str, expected: str | None, note: str | None
) -> None:
    seed = {
        "wso2.carbon": {"id": "n1"},
        "state.persistence": {
            "enabled": True,
            "intervalInMin": 0.5,
            "persistenceStore": store_class,
            "config": {"location": "siddhi-app-persistence", "other": 1},
        },
    }
    result = import_seed(seed)
    section = result.config["state_persistence"]
    assert section.get("store") == expected
    assert section["interval_s"] == 30
    assert section["directory"] == "siddhi-app-persistence"
    if note:
        assert any(note in n for n in result.notes)
    assert any("config.other" in n and "no counterpart" in n for n in result.notes)


def test_seed_bad_persistence_value_names_the_seed_key() -> None:
    seed = {"wso2.carbon": {"id": "n1"}, "state.persistence": {"revisionsToKeep": 0}}
    with pytest.raises(ConfigError, match=r"state\.persistence\.revisionsToKeep"):
        import_seed(seed)
