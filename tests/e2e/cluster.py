"""Both ends of event sync, wired for end-to-end tests: real loopback TCP, real WAL files.

* ``Recorder`` is the active's ``record_in_sync`` callback: it keeps one ordered journal
  of in-sync records (start and confirmation) and publisher acks, so a test can check the
  order "recorded out of sync, then acknowledged an event the standby lacks".
* ``PassiveNode`` runs a ``PassiveServer`` in this process; ``PassiveProcess`` runs one
  in a child process (``tests/e2e/passive_main.py``) that a test may SIGKILL or SIGSTOP.
* ``ActiveNode`` runs a ``Shipper`` + ``ActiveLink`` + ``ReplicatedLog`` on its own WAL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from walrep.log.frame import Event
from walrep.log.types import AppendResult
from walrep.log.wal import Wal
from walrep.replica.active_link import ActiveLink, ReplicatedLog
from walrep.replica.passive_server import PassiveServer, ReplicaSettings
from walrep.replica.shipper import Shipper, ShipperConfig

GROUP = "g"
SECRET = b"s3cret"
ACTIVE = "a"
PASSIVE = "p"
HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 10.0  # upper bound of any single wait; tests normally finish far below it


async def wait_until(
    predicate: Callable[[], bool], what: str, seconds: float = WAIT_S, poll: float = 0.005
) -> None:
    """Poll a condition that no event announces (metrics, offsets), bounded."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for: {what}")
        await asyncio.sleep(poll)


async def within(awaitable: Awaitable[object], what: str, seconds: float = WAIT_S) -> object:
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds} s: {what}") from None


def frames_of(wal: Wal) -> list[bytes]:
    """Every stored frame, byte for byte."""
    return [frame.data for frame in wal.frames()]


def frames_in(directory: Path) -> list[bytes]:
    """Frames of a closed log directory (opens and closes it)."""
    with Wal.open(directory) as wal:
        return frames_of(wal)


def events(n: int, tag: str = "e", pad: int = 0) -> list[Event]:
    return [Event("s", {"tag": tag, "i": i, "pad": os.urandom(pad).hex()}) for i in range(n)]


# --- the journal of in-sync records and acks ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str  # "record-start" | "record-done" | "ack"
    standby: str = ""
    in_sync: bool = False
    offset: int = 0  # record-start: the shipper's acked offset then; ack: end offset
    ok: bool = True  # record-done: what the store answered (False: the lease is gone)


class Recorder:
    """``record_in_sync`` for the link; optionally forwards to a real store, or holds
    out-of-sync records at a gate so a test can look at the system meanwhile."""

    def __init__(self, store_call: Callable[[str, bool], Awaitable[bool]] | None = None) -> None:
        self.journal: list[Entry] = []
        self.state: dict[str, bool] = {}
        self.shipper: Shipper | None = None
        self.hold_out_of_sync: asyncio.Event | None = None  # set() releases held records
        self._store_call = store_call
        self._changed = asyncio.Event()

    async def __call__(self, standby: str, in_sync: bool) -> bool:
        acked = self.shipper.acked if self.shipper is not None else -1
        self.journal.append(Entry("record-start", standby, in_sync, acked))
        self._poke()
        if not in_sync and self.hold_out_of_sync is not None:
            await self.hold_out_of_sync.wait()
        ok = True if self._store_call is None else await self._store_call(standby, in_sync)
        if ok:
            self.state[standby] = in_sync
        self.journal.append(Entry("record-done", standby, in_sync, ok=ok))
        self._poke()
        return ok

    def note_ack(self, result: AppendResult) -> None:
        self.journal.append(Entry("ack", offset=result.end_offset))

    def _poke(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def records(self, kind: str = "record-done") -> list[tuple[str, bool]]:
        return [(e.standby, e.in_sync) for e in self.journal if e.kind == kind]

    async def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        async def loop() -> None:
            while not predicate():
                await self._changed.wait()

        await within(loop(), what)

    async def wait_recorded(self, in_sync: bool, *, after: int = 0, standby: str = PASSIVE) -> int:
        """Index in the journal of the first confirmed record at or after ``after``."""

        def find() -> int | None:
            for i in range(after, len(self.journal)):
                e = self.journal[i]
                if e.kind == "record-done" and e.standby == standby and e.in_sync == in_sync:
                    return i
            return None

        await self.wait_for(lambda: find() is not None, f"{standby} recorded in_sync={in_sync}")
        index = find()
        assert index is not None
        return index


# --- the passive --------------------------------------------------------------------------


class PassiveNode:
    """A ``PassiveServer`` on its own WAL in this process; restartable on the same port."""

    def __init__(
        self,
        directory: Path,
        *,
        settings: ReplicaSettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.directory = directory
        self.settings = settings or ReplicaSettings(GROUP, PASSIVE, SECRET)
        self.ssl_context = ssl_context
        self.port = 0
        self.wal: Wal | None = None
        self.server: PassiveServer | None = None

    async def start(self) -> tuple[str, int]:
        self.wal = Wal.open(self.directory)
        self.server = PassiveServer(self.wal, self.settings, ssl_context=self.ssl_context)
        host, self.port = await self.server.start(HOST, self.port)
        return host, self.port

    async def stop(self) -> None:
        if self.server is not None:
            await within(self.server.stop(), "passive server stop")
            self.server = None
        if self.wal is not None:
            await within(self.wal.aclose(), "passive wal close")

    async def address(self) -> tuple[str, int] | None:
        return (HOST, self.port) if self.port else None


class PassiveProcess:
    """A passive in a child process (``passive_main.py``), for SIGKILL and SIGSTOP."""

    def __init__(self, directory: Path, *, buffer_bytes_max: int = 0, rcvbuf: int = 0) -> None:
        self.directory = directory
        self.buffer_bytes_max = buffer_bytes_max
        self.rcvbuf = rcvbuf
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.stopped = False

    async def start(self) -> tuple[str, int]:
        args = [sys.executable, "-m", "tests.e2e.passive_main", str(self.directory), str(self.port)]
        args += [str(self.buffer_bytes_max), str(self.rcvbuf)]
        env = {**os.environ, "WALREP_TEST_SECRET": SECRET.decode()}
        self.proc = await asyncio.create_subprocess_exec(
            *args, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE
        )
        assert self.proc.stdout is not None
        line = await within(self.proc.stdout.readline(), "passive process ready")
        assert isinstance(line, bytes)
        word, host, port = line.decode().split()
        assert word == "READY", line
        self.port = int(port)
        return host, self.port

    async def address(self) -> tuple[str, int] | None:
        return (HOST, self.port) if self.port else None

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None and self.proc.returncode is None
        os.kill(self.proc.pid, sig)
        self.stopped = sig is signal.SIGSTOP

    async def kill(self) -> None:
        """SIGKILL: no chance to flush or close anything."""
        assert self.proc is not None
        self.signal(signal.SIGKILL)
        await within(self.proc.wait(), "passive process exits after SIGKILL")

    async def terminate(self) -> None:
        """SIGTERM: the child stops its server and closes its log."""
        assert self.proc is not None
        if self.proc.returncode is None:
            if self.stopped:
                self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            code = await within(self.proc.wait(), "passive process exits after SIGTERM")
            assert code == 0, code

    async def cleanup(self) -> None:
        """Fixture teardown: whatever state the test left the child in, end it."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()


# --- the active ---------------------------------------------------------------------------


class ActiveNode:
    """Shipper + ActiveLink + ReplicatedLog on one WAL, linked to a passive's address."""

    def __init__(
        self,
        directory: Path,
        peer_address: Callable[[], Awaitable[tuple[str, int] | None]],
        *,
        epoch: int = 1,
        config: ShipperConfig | None = None,
        settings: ReplicaSettings | None = None,
        recorder: Recorder | None = None,
        ssl_context: ssl.SSLContext | None = None,
        standby: str | None = PASSIVE,
        standby_in_sync: bool = False,
    ) -> None:
        self.directory = directory
        self.epoch = epoch
        self.settings = settings or ReplicaSettings(GROUP, ACTIVE, SECRET)
        self.config = config or ShipperConfig()
        self.recorder = recorder or Recorder()
        self.wal = Wal.open(directory)
        wal = self.wal
        self.shipper = Shipper(
            self.settings.group,
            self.settings.node_id,
            self.settings.secret,
            epoch=epoch,
            epoch_end=lambda e: wal.epochs.end_offset(e, wal.log_end),
            log_start=wal.log_start,
            log_end=wal.log_end,
            durable_end=wal.durable_end,
            standby=standby,
            standby_in_sync=standby_in_sync,
            config=self.config,
        )
        self.recorder.shipper = self.shipper
        self.link = ActiveLink(
            wal,
            self.shipper,
            self.settings,
            peer_address=peer_address,
            record_in_sync=self.recorder,
            ssl_context=ssl_context,
            connect_timeout_ms=500,
            backoff_max_ms=200,
        )
        self.log = ReplicatedLog(wal, self.link)
        self.task = asyncio.create_task(self.link.run())

    async def append(self, batch: Sequence[Event]) -> AppendResult:
        result = await self.log.append(batch, epoch=self.epoch)
        self.recorder.note_ack(result)
        return result

    async def close(self) -> None:
        try:
            await within(self.link.stop(), "link stop")
            if not self.task.cancelled():  # a test's bounded wait may have cancelled it
                await within(self.task, "link run() returns after stop")
        finally:
            await within(self.wal.aclose(), "active wal close")

    async def wait_caught_up(self, passive_end: Callable[[], int] | None = None) -> None:
        """The standby acked everything, is recorded in-sync, and all is committed."""
        end = self.wal.log_end
        await wait_until(
            lambda: (
                self.shipper.acked == end
                and self.link.committed == end
                and self.recorder.state.get(PASSIVE) is True
                and (passive_end is None or passive_end() == end)
            ),
            f"standby caught up to {end}",
        )


# --- publishers -----------------------------------------------------------------------------


class Writers:
    """Publisher tasks appending without pause (single events, every ``batch_every``-th
    append a batch of 1000) until ``stop``; counts what was acknowledged."""

    def __init__(self, active: ActiveNode, *, tasks: int = 4, batch_every: int = 20) -> None:
        self.active = active
        self.batch_every = batch_every
        self.acks = 0
        self.pending = 0
        self._stopping = False
        self._changed = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run(t)) for t in range(tasks)]

    async def _run(self, t: int) -> None:
        i = 0
        while not self._stopping:
            i += 1
            batch = events(1000, f"w{t}") if i % self.batch_every == 0 else events(1, f"w{t}")
            self.pending += 1
            await self.active.append(batch)
            self.pending -= 1
            self.acks += 1
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_acks(self, more: int, what: str) -> None:
        target = self.acks + more

        async def loop() -> None:
            while self.acks < target:
                for task in self._tasks:  # a publisher that failed: say so at once
                    if task.done():
                        task.result()
                await asyncio.wait_for(self._changed.wait(), WAIT_S)

        await within(loop(), f"{more} more acks: {what}")

    async def stop(self) -> None:
        self._stopping = True
        await within(asyncio.gather(*self._tasks), "publishers finish their last append")


# --- fixture support ----------------------------------------------------------------------------


class Nodes:
    """Creates nodes under ``tmp_path`` and ends them all (actives first) at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.actives: list[ActiveNode] = []
        self.passives: list[PassiveNode] = []
        self.processes: list[PassiveProcess] = []

    async def passive(self, name: str = PASSIVE, **kwargs: object) -> PassiveNode:
        node = PassiveNode(self.root / name, **kwargs)  # type: ignore[arg-type]
        self.passives.append(node)
        await node.start()
        return node

    async def process(self, name: str = PASSIVE, **kwargs: object) -> PassiveProcess:
        node = PassiveProcess(self.root / name, **kwargs)  # type: ignore[arg-type]
        self.processes.append(node)
        await node.start()
        return node

    def active(
        self,
        peer_address: Callable[[], Awaitable[tuple[str, int] | None]],
        name: str = ACTIVE,
        **kwargs: object,
    ) -> ActiveNode:
        node = ActiveNode(self.root / name, peer_address, **kwargs)  # type: ignore[arg-type]
        self.actives.append(node)
        return node

    async def close(self) -> None:
        errors: list[BaseException] = []
        for active in self.actives:
            if not active.wal._closed:
                try:
                    await active.close()
                except (Exception, asyncio.CancelledError) as e:  # keep closing the others
                    errors.append(e)
        for passive in self.passives:
            try:
                await passive.stop()
            except (Exception, asyncio.CancelledError) as e:
                errors.append(e)
        for process in self.processes:
            await process.cleanup()
        if errors:
            raise errors[0]
