"""A deterministic in-memory driver for the replication cores (used by transcript tests).

Two real cores — ``Shipper`` on the active, ``Receiver`` on the passive — joined by an
in-memory wire per direction that carries real encoded bytes through ``MessageReader``.
Each node's log is a list of real WAL frames with a durable prefix and an epoch
history (KIP-101 answers come from ``EpochHistory.end_offset``). A coordinator stub
holds ``RecordInSync`` requests until a step answers them. Nothing here reads a clock
or a random source: nonces and times are fixed, so a step's output is reproducible.

The shell behaviour mirrors ``active_link.py`` and ``passive_server.py``: a core's
``Close`` ends the connection (what it sent before reaching the peer first, then EOF);
a decode error closes without an ``Error``; the active's core hears ``disconnected``
only when the peer or the network ended the connection, not after its own ``Close``.

Steps (one per line; ``#`` starts a comment)::

    init [epoch=E] [standby-in-sync=B] [check-passive-prefix=B] [settings]   first, once
    set a|p key=value...        ack=all|local on-loss=degrade|block window_bytes=
                                window_batches= read_bytes_max= standby_timeout_ms=
                                heartbeat_interval_ms= buffer_bytes_max= buffer_events_max=
                                max_message_bytes= group= node= (the passive's)
    secret-mismatch [off]       the passive's next connections use another secret
    active-append N [epoch=E]   one frame of N events on the active, not durable yet
    active-retention K          the active's log starts at K (before it starts)
    passive-preload [copy=K] [n=N epoch=E] [committed=C] [highest-epoch=H]
    start a                     the active's term begins (connect does it if needed)
    connect / disconnect        open a connection / the network drops it
    deliver a->p|p->a [n]       deliver what is queued, or the next n items
    durable p                   the passive's pending appends are fsynced
    local-durable a             the active's log is fsynced
    tick a MS                   the active's clock moves on by MS
    record ok|fail              answer the oldest pending RecordInSync
    inject a->p|p->a garbage|flip|duplicate|drop|bad-proof|reflect
    inject a->p append [epoch=E] [base=B] [count=C] [commit=X] [frames=corrupt]
    status / log a|p            print state / a log's frames

After every step the harness checks the invariants it can see (raising
``InvariantViolation``, which no rewrite of the expected output can bless):

* committed offsets only grow, and never pass the active's durable end;
* with ack policy ``all``, while the coordinator records the standby in sync, every
  committed offset is durable on the passive with the same events;
* the passive's committed prefix is the active's, event for event.
"""

from __future__ import annotations

import shlex
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from walrep.errors import PeerProtocolError
from walrep.log.epochs import EpochEntry, EpochHistory
from walrep.log.frame import (
    HEADER_SIZE,
    Event,
    FrameStatus,
    build_frame,
    decode_payload,
    encode_batch,
    inspect_frame,
    parse_header,
)
from walrep.replica.messages import (
    Ack,
    Append,
    Challenge,
    Error,
    Heartbeat,
    Hello,
    HelloOk,
    Message,
    MessageReader,
    Reject,
    Truncate,
    encode,
)
from walrep.replica.receiver import (
    AppendFrames,
    Authenticated,
    Close,
    Count,
    Receiver,
    ReceiverAction,
    Send,
    TruncateLog,
)
from walrep.replica.shipper import (
    Committed,
    ReadFrames,
    RecordInSync,
    Shipper,
    ShipperAction,
    ShipperConfig,
)

GROUP = "g1"
ACTIVE = "a1"
PASSIVE = "p1"
SECRET = b"cluster-secret"
WRONG_SECRET = b"not-the-cluster-secret"
INGEST_MS = 1_700_000_000_000
MAX_PAYLOAD_BYTES = 1 << 20
_SHIPPER_INTS = (
    "window_bytes",
    "window_batches",
    "read_bytes_max",
    "standby_timeout_ms",
    "heartbeat_interval_ms",
)
_CODEC = {"max_event_bytes": 4096, "max_batch_bytes": 1 << 20, "compress_threshold_bytes": 1 << 30}


class InvariantViolation(AssertionError):
    """The cores did something the design forbids (never part of an expected output)."""


class StepError(Exception):
    """A malformed or impossible step in a scenario file."""


# --- logs ----------------------------------------------------------------------------------


@dataclass
class StoredFrame:
    base: int
    end: int
    epoch: int
    data: bytes


@dataclass
class MemLog:
    """A log as a list of verbatim frames, a durable prefix, and an epoch history."""

    frames: list[StoredFrame] = field(default_factory=list)
    log_start: int = 0
    durable_end: int = 0
    epochs: list[EpochEntry] = field(default_factory=list)

    @property
    def log_end(self) -> int:
        return self.frames[-1].end if self.frames else self.log_start

    @property
    def last_epoch(self) -> int:
        return self.epochs[-1].epoch if self.epochs else 0

    @property
    def last_epoch_start(self) -> int:
        return self.epochs[-1].start_offset if self.epochs else 0

    def history(self) -> EpochHistory:
        # Only the pure lookups are used: the path is never written.
        return EpochHistory(Path("/nonexistent/epochs"), list(self.epochs))

    def end_offset(self, epoch: int) -> tuple[int, int]:
        return self.history().end_offset(epoch, self.log_end)

    def append_events(self, count: int, epoch: int, stream: str) -> StoredFrame:
        base = self.log_end
        events = [Event(stream, {"i": base + k}) for k in range(count)]
        frame = build_frame(
            encode_batch(events, **_CODEC),
            base_offset=base,
            epoch=epoch,
            ingest_time_ms=INGEST_MS + base,
        )
        self.append_frames(frame)
        return self.frames[-1]

    def append_frames(self, data: bytes) -> None:
        """Check every frame first (like ``Wal.append_frames``), then append them all."""
        pos, expected, epoch = 0, self.log_end, self.last_epoch
        checked: list[StoredFrame] = []
        while pos < len(data):
            status, header = inspect_frame(data, pos, MAX_PAYLOAD_BYTES)
            if status is not FrameStatus.OK or header is None:
                raise ValueError(f"frame at byte {pos}: {status.value}")
            if header.base_offset != expected:
                raise ValueError(f"frame starts at {header.base_offset}, log end is {expected}")
            if header.epoch < epoch:
                raise ValueError(f"frame epoch {header.epoch} < last epoch {epoch}")
            size = header.frame_bytes
            checked.append(
                StoredFrame(header.base_offset, header.end_offset, header.epoch, data[pos:][:size])
            )
            pos, expected, epoch = pos + size, header.end_offset, header.epoch
        for frame in checked:
            if frame.epoch > self.last_epoch:
                self.epochs.append(EpochEntry(frame.epoch, frame.base))
            self.frames.append(frame)

    def read(self, from_offset: int, max_bytes: int) -> tuple[int, int, bytes]:
        """Whole frames from ``from_offset``: at least one, then up to ``max_bytes``."""
        assert self.log_start <= from_offset < self.log_end, (from_offset, self.log_end)
        parts: list[StoredFrame] = []
        size = 0
        for frame in self.frames:
            if frame.end <= from_offset:
                continue
            assert parts or frame.base == from_offset, "reads start at frame boundaries"
            if parts and size + len(frame.data) > max_bytes:
                break
            parts.append(frame)
            size += len(frame.data)
        return parts[0].base, parts[-1].end, b"".join(f.data for f in parts)

    def truncate(self, to_offset: int) -> None:
        """Drop every event at or after ``to_offset``; a cut frame is re-framed."""
        kept: list[StoredFrame] = []
        for frame in self.frames:
            if frame.end <= to_offset:
                kept.append(frame)
            elif frame.base < to_offset:
                header = parse_header(frame.data)
                events = decode_payload(header, frame.data[HEADER_SIZE:], 1 << 20)
                data = build_frame(
                    encode_batch(events[: to_offset - frame.base], **_CODEC),
                    base_offset=frame.base,
                    epoch=frame.epoch,
                    ingest_time_ms=header.ingest_time_ms,
                )
                kept.append(StoredFrame(frame.base, to_offset, frame.epoch, data))
        self.frames = kept
        self.epochs = [e for e in self.epochs if e.start_offset < to_offset]
        self.durable_end = min(self.durable_end, to_offset)

    def delete_before(self, offset: int) -> None:
        assert any(f.base == offset for f in self.frames) or offset == self.log_end
        self.frames = [f for f in self.frames if f.base >= offset]
        self.log_start = offset

    def events(self, lo: int, hi: int) -> list[tuple[int, list[Any]]]:
        """``(epoch, event)`` for every offset in ``[lo, hi)`` held here."""
        out: list[tuple[int, list[Any]]] = []
        for frame in self.frames:
            if frame.end <= lo or frame.base >= hi:
                continue
            header = parse_header(frame.data)
            decoded = decode_payload(header, frame.data[HEADER_SIZE:], 1 << 20)
            for k, event in enumerate(decoded):
                if lo <= frame.base + k < hi:
                    out.append((frame.epoch, list(event)))
        return out

    def describe(self) -> str:
        parts = [f"{f.base}..{f.end}@e{f.epoch}" for f in self.frames]
        return f"[{self.log_start},{self.log_end}) durable={self.durable_end} " + (
            " ".join(parts) if parts else "(empty)"
        )


# --- the wire ----------------------------------------------------------------------------------

EOF = None  # a wire item: the sender closed after everything queued before it


@dataclass
class Connection:
    number: int
    receiver: Receiver
    a2p: deque[bytes | None] = field(default_factory=deque)
    p2a: deque[bytes | None] = field(default_factory=deque)
    a_reader: MessageReader = field(default_factory=MessageReader)
    p_reader: MessageReader = field(default_factory=MessageReader)
    a_open: bool = True
    p_open: bool = True
    p_paused: bool = False  # the passive stopped reading (backpressure)


# --- formatting ---------------------------------------------------------------------------------


def fmt_message(m: Message) -> str:
    """Messages with their key fields; never nonces or proof bytes."""
    if isinstance(m, Challenge):
        return f"Challenge(node={m.node})"
    if isinstance(m, Hello):
        return f"Hello(group={m.group} node={m.node} epoch={m.epoch} log_end={m.log_end})"
    if isinstance(m, HelloOk):
        return (
            f"HelloOk(node={m.node} log_end={m.log_end} last_epoch={m.last_epoch}"
            f" committed={m.committed})"
        )
    if isinstance(m, Reject):
        return f"Reject({m.reason})"
    if isinstance(m, Truncate):
        return f"Truncate(to={m.to_offset})"
    if isinstance(m, Append):
        frames = _count_frames(m.frames)
        return (
            f"Append(epoch={m.epoch} {m.base_offset}..{m.base_offset + m.count}"
            f" commit={m.commit_offset} frames={frames})"
        )
    if isinstance(m, Ack):
        return f"Ack(durable={m.durable_offset} last_epoch={m.last_epoch})"
    if isinstance(m, Heartbeat):
        return f"Heartbeat(commit={m.commit_offset})"
    assert isinstance(m, Error)
    return f"Error({m.code}: {m.message})"


def _count_frames(data: bytes) -> int | str:
    pos, n = 0, 0
    while pos < len(data):
        status, header = inspect_frame(data, pos, MAX_PAYLOAD_BYTES)
        if status is not FrameStatus.OK or header is None:
            return "invalid"
        pos, n = pos + header.frame_bytes, n + 1
    return n


def _bool(text: str) -> bool:
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise StepError(f"not a boolean: {text!r}")


def _kv(args: Iterable[str]) -> dict[str, str]:
    out = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise StepError(f"expected key=value, got {arg!r}")
        out[key] = value
    return out


# --- the harness ---------------------------------------------------------------------------------


class Harness:
    def __init__(self) -> None:
        self.now_ms = 0
        self.epoch = 1
        self.standby_in_sync = True
        self.shipper_config = ShipperConfig()
        self.active_secret = SECRET
        self.passive_secret = SECRET
        self.passive_group = GROUP
        self.passive_node = PASSIVE
        self.buffer_bytes_max = 1 << 20
        self.buffer_events_max = 2**62
        self.max_message_bytes = 1 << 20
        self.active_log = MemLog()
        self.passive_log = MemLog()
        self.passive_committed = 0  # what the passive node learnt is committed
        self.passive_highest_epoch = 0  # highest epoch the passive node has seen
        self.shipper: Shipper | None = None
        self.conn: Connection | None = None
        self.connections = 0
        self.in_sync_record = True  # the coordinator's row for the standby
        self.pending_records: deque[RecordInSync] = deque()
        self.last_committed = 0
        # Off only for a setup that already lost committed events (a forced failover).
        self.check_passive_prefix = True
        self.out: list[str] = []

    # --- entry point -----------------------------------------------------------------------

    def run(self, line: str) -> list[str]:
        """Execute one step; return the lines it produced."""
        words = shlex.split(line, comments=True)
        if not words:
            raise StepError("empty step")
        handler = self._STEPS.get(words[0])
        if handler is None:
            raise StepError(f"unknown step {words[0]!r}")
        self.out = []
        handler(self, words[1:])
        self._check_invariants()
        return self.out

    def emit(self, line: str) -> None:
        self.out.append(line)

    # --- steps: setup -----------------------------------------------------------------------

    def step_init(self, args: list[str]) -> None:
        """init [epoch=E] [standby-in-sync=B] [shipper config] [passive config]"""
        if self.shipper is not None:
            raise StepError("init after the active started")
        self._configure(_kv(args), allow_epoch=True)

    def step_set(self, args: list[str]) -> None:
        """set a|p key=value...: change configuration (the shipper's takes effect at once)."""
        if not args or args[0] not in ("a", "p"):
            raise StepError("set a|p key=value...")
        values = _kv(args[1:])
        self._configure(values, allow_epoch=False)
        if args[0] == "a" and self.shipper is not None:
            self.shipper.config = self.shipper_config
        self.emit(f"{args[0]}: config " + " ".join(f"{k}={v}" for k, v in values.items()))

    def _configure(self, values: dict[str, str], *, allow_epoch: bool) -> None:
        c = self.shipper_config
        for key, value in values.items():
            if key == "epoch" and allow_epoch:
                self.epoch = int(value)
            elif key == "check-passive-prefix" and allow_epoch:
                self.check_passive_prefix = _bool(value)
            elif key == "standby-in-sync" and allow_epoch:
                self.standby_in_sync = self.in_sync_record = _bool(value)
            elif key == "ack":
                c = replace(c, ack_all={"all": True, "local": False}[value])
            elif key == "on-loss":
                c = replace(c, degrade={"degrade": True, "block": False}[value])
            elif key in _SHIPPER_INTS:
                c = replace(c, **{key: int(value)})
            elif key == "buffer_bytes_max":
                self.buffer_bytes_max = int(value)
            elif key == "buffer_events_max":
                self.buffer_events_max = int(value)
            elif key == "max_message_bytes":
                self.max_message_bytes = int(value)
            elif key == "group":
                self.passive_group = value
            elif key == "node":
                self.passive_node = value
            else:
                raise StepError(f"unknown setting {key!r}")
        self.shipper_config = c

    def step_secret_mismatch(self, args: list[str]) -> None:
        """secret-mismatch [off]: the passive's next connections use another secret."""
        if args == ["off"]:
            self.passive_secret = SECRET
            self.emit("p: secret is the active's again")
            return
        self.passive_secret = WRONG_SECRET
        self.emit("p: secret differs from the active's")

    def step_active_append(self, args: list[str]) -> None:
        """active-append N [epoch=E]: one frame of N events, not durable yet."""
        count = int(args[0])
        epoch = int(_kv(args[1:]).get("epoch", self.epoch))
        frame = self.active_log.append_events(count, epoch, "api")
        self.emit(f"a: log {frame.base}..{frame.end} epoch={epoch}")
        if self.shipper is not None:
            self._active_actions(self.shipper.log_grew(self.active_log.log_end))

    def step_active_retention(self, args: list[str]) -> None:
        """active-retention K: segments below K deleted (before the active starts)."""
        if self.shipper is not None:
            raise StepError("the shipper has no input for retention while it runs")
        self.active_log.delete_before(int(args[0]))
        self.emit(f"a: log starts at {self.active_log.log_start}")

    def step_passive_preload(self, args: list[str]) -> None:
        """passive-preload [copy=K] [n=N epoch=E] [committed=C] [highest-epoch=H]

        ``copy`` takes the active's frames below K verbatim; ``n`` appends N events of
        another stream ("old") under epoch E: a tail the active never had. All durable.
        """
        values = _kv(args)
        log = self.passive_log
        if "copy" in values:
            upto = int(values["copy"])
            for frame in self.active_log.frames:
                if frame.end <= upto:
                    log.append_frames(frame.data)
            assert log.log_end == upto, "copy ends at a frame boundary of the active"
        if "n" in values:
            log.append_events(int(values["n"]), int(values["epoch"]), "old")
        log.durable_end = log.log_end
        if "committed" in values:
            self.passive_committed = int(values["committed"])
        self.passive_highest_epoch = max(
            self.passive_highest_epoch, int(values.get("highest-epoch", 0)), log.last_epoch
        )
        self.emit(f"p: log {log.describe()} committed={self.passive_committed}")

    # --- steps: connection --------------------------------------------------------------------

    def _ensure_shipper(self) -> Shipper:
        if self.shipper is None:
            log = self.active_log
            self.shipper = Shipper(
                GROUP,
                ACTIVE,
                self.active_secret,
                epoch=self.epoch,
                epoch_end=log.end_offset,
                log_start=log.log_start,
                log_end=log.log_end,
                durable_end=log.durable_end,
                standby=PASSIVE,
                standby_in_sync=self.standby_in_sync,
                config=self.shipper_config,
            )
            self.emit(
                f"a: start epoch={self.epoch} log=[{log.log_start},{log.log_end})"
                f" durable={log.durable_end} standby={self.shipper.standby_state.value}"
            )
        return self.shipper

    def step_start(self, args: list[str]) -> None:
        """start a: the active's term begins (``connect`` does this too, if needed)."""
        if args != ["a"] or self.shipper is not None:
            raise StepError("start a, once")
        self._ensure_shipper()

    def step_connect(self, args: list[str]) -> None:
        """connect: the active opens a connection; the passive answers with a Challenge."""
        if self.conn is not None and self.conn.a_open:
            raise StepError("already connected")
        if self.conn is not None:  # the active closed it; the passive has yet to notice
            self.emit(f"connection {self.conn.number} abandoned")
            self._drop_connection()
        shipper = self._ensure_shipper()
        self.connections += 1
        n = self.connections
        receiver = Receiver(
            self.passive_group,
            self.passive_node,
            self.passive_secret,
            bytes([0xB0 + n]) * 16,
            buffer_bytes_max=self.buffer_bytes_max,
            buffer_events_max=self.buffer_events_max,
        )
        self.conn = Connection(
            n,
            receiver,
            a_reader=MessageReader(self.max_message_bytes),
            p_reader=MessageReader(self.max_message_bytes),
        )
        self.emit(f"connection {n} open")
        self._sent_appends = []
        self._active_actions(shipper.connected(self.now_ms, bytes([0xA0 + n]) * 16))
        self._passive_actions(receiver.connected())

    def step_disconnect(self, args: list[str]) -> None:
        """disconnect: the network drops the connection; both sides notice."""
        conn = self._conn()
        active_knew = not conn.a_open  # it closed the connection itself
        self._drop_connection()
        self.emit(f"connection {conn.number} lost")
        assert self.shipper is not None
        if not active_knew:
            self._active_actions(self.shipper.disconnected("connection lost"))

    def step_deliver(self, args: list[str]) -> None:
        """deliver a->p|p->a [n]: deliver what is queued (or the next n items)."""
        if not args or args[0] not in ("a->p", "p->a"):
            raise StepError("deliver a->p|p->a [n]")
        if self.conn is None:
            self.emit("no connection")
            return
        wire = self.conn.a2p if args[0] == "a->p" else self.conn.p2a
        limit = int(args[1]) if len(args) > 1 else len(wire)
        for _ in range(limit):
            conn = self.conn
            if conn is None or not wire:
                break
            if args[0] == "a->p":
                if not conn.receiver.wants_data():
                    self.emit("p: not reading (buffer full)")
                    conn.p_paused = True
                    break
                self._deliver_to_passive(conn, wire.popleft())
            else:
                self._deliver_to_active(conn, wire.popleft())

    def _deliver_to_passive(self, conn: Connection, item: bytes | None) -> None:
        if item is EOF:
            self.emit("p: connection closed by the active")
            conn.p_open = False
            self._drop_connection()
            return
        try:
            messages = conn.p_reader.feed(item)
        except PeerProtocolError as e:
            self.emit(f"p: malformed message: {e}; closing")
            self._close(conn, "p")
            return
        for message in messages:
            self.emit(f"a->p {fmt_message(message)}")
            self._passive_actions(conn.receiver.received(message))
            if not conn.p_open:
                return

    def _deliver_to_active(self, conn: Connection, item: bytes | None) -> None:
        assert self.shipper is not None
        if item is EOF:
            self.emit("a: connection closed by the passive")
            conn.a_open = False
            self._drop_connection()
            self._active_actions(self.shipper.disconnected("connection closed by the passive"))
            return
        try:
            messages = conn.a_reader.feed(item)
        except PeerProtocolError as e:
            self.emit(f"a: malformed message: {e}; closing")
            self._close(conn, "a")
            self._active_actions(self.shipper.disconnected(str(e)))
            return
        for message in messages:
            self.emit(f"p->a {fmt_message(message)}")
            self._active_actions(self.shipper.received(message, self.now_ms))
            if not conn.a_open:
                return

    def _conn(self) -> Connection:
        if self.conn is None:
            raise StepError("no connection")
        return self.conn

    def _close(self, conn: Connection, side: str) -> None:
        """``side`` closes its socket: its queued sends still arrive, then EOF."""
        if side == "a" and conn.a_open:
            conn.a_open = False
            conn.a2p.append(EOF)
            conn.p2a.clear()
        elif side == "p" and conn.p_open:
            conn.p_open = False
            conn.p2a.append(EOF)
            conn.a2p.clear()
        if not conn.a_open and not conn.p_open:
            self._drop_connection()

    def _drop_connection(self) -> None:
        if self.conn is not None:
            self.conn.a_open = self.conn.p_open = False
            self.conn.a2p.clear()
            self.conn.p2a.clear()
        self.conn = None
        self._flush_passive()  # the passive's shell waits for the connection's appends

    # --- steps: storage, time, coordinator ---------------------------------------------------

    def step_durable(self, args: list[str]) -> None:
        """durable p: the passive's pending appends are fsynced (group commit)."""
        if args != ["p"]:
            raise StepError("durable p")
        log = self.passive_log
        if log.durable_end == log.log_end:
            self.emit("p: nothing pending")
            return
        log.durable_end = log.log_end
        self.emit(f"p: durable {log.durable_end}")
        if self.conn is not None:
            receiver = self.conn.receiver
            was = receiver.wants_data()
            self._passive_actions(
                receiver.durable(log.durable_end, log.last_epoch, log.last_epoch_start)
            )
            self.passive_committed = max(self.passive_committed, receiver.committed)
            if not was and receiver.wants_data():
                self.emit("p: reading again")
                self.conn.p_paused = False

    def _flush_passive(self) -> None:
        # What the passive's shell does before a new connection takes over (and what its
        # group commit does anyway): the appends of a closed connection become durable.
        self.passive_log.durable_end = self.passive_log.log_end

    def step_local_durable(self, args: list[str]) -> None:
        """local-durable a: the active's log is fsynced to its end."""
        if args != ["a"]:
            raise StepError("local-durable a")
        log = self.active_log
        log.durable_end = log.log_end
        self.emit(f"a: durable {log.durable_end}")
        if self.shipper is not None:
            self._active_actions(self.shipper.local_durable_to(log.durable_end))

    def step_tick(self, args: list[str]) -> None:
        """tick a MS: the active's clock moves on by MS milliseconds."""
        if len(args) != 2 or args[0] != "a":
            raise StepError("tick a MS")
        self.now_ms += int(args[1])
        self.emit(f"a: now {self.now_ms} ms")
        if self.shipper is not None:
            self._active_actions(self.shipper.tick(self.now_ms))

    def step_record(self, args: list[str]) -> None:
        """record ok|fail: the coordinator answers the oldest pending RecordInSync."""
        if args not in (["ok"], ["fail"]):
            raise StepError("record ok|fail")
        if not self.pending_records:
            self.emit("coordinator: nothing pending")
            return
        request = self.pending_records.popleft()
        ok = args[0] == "ok"
        if ok:
            self.in_sync_record = request.in_sync
            self.emit(f"coordinator: {request.standby} in_sync={str(request.in_sync).lower()}")
        else:
            self.emit("coordinator: refused (the lease is gone)")
        assert self.shipper is not None
        self._active_actions(self.shipper.in_sync_recorded(request.in_sync, ok))

    # --- steps: faults and inspection ---------------------------------------------------------

    def step_inject(self, args: list[str]) -> None:
        """inject a->p|p->a garbage|flip|duplicate|drop|bad-proof|reflect|append k=v..."""
        if len(args) < 2 or args[0] not in ("a->p", "p->a"):
            raise StepError("inject a->p|p->a WHAT")
        conn = self._conn()
        wire = conn.a2p if args[0] == "a->p" else conn.p2a
        what = args[1]
        if what == "garbage":
            wire.append(b"\x07garbage, not a message")
        elif what == "flip":
            data = bytearray(self._first(wire))
            data[-1] ^= 0x01
            wire[0] = bytes(data)
        elif what == "duplicate":
            wire.insert(1, self._first(wire))
        elif what == "drop":
            self._first(wire)
            wire.popleft()
        elif what in ("bad-proof", "reflect"):
            self._tamper_proof(conn, wire, what)
        elif what == "append" and args[0] == "a->p":
            wire.append(encode(self._crafted_append(_kv(args[2:]))))
        else:
            raise StepError(f"unknown injection {what!r}")
        self.emit(f"{args[0]} injected {what}")

    def _first(self, wire: deque[bytes | None]) -> bytes:
        if not wire or wire[0] is EOF:
            raise StepError("nothing queued to tamper with")
        item = wire[0]
        assert item is not None
        return item

    def _tamper_proof(self, conn: Connection, wire: deque[bytes | None], what: str) -> None:
        """Rewrite the queued HelloOk's proof: flipped, or the active's own Hello proof."""
        for i, item in enumerate(wire):
            if item is EOF:
                break
            (message,) = MessageReader().feed(item)
            if isinstance(message, HelloOk):
                if what == "bad-proof":
                    proof = bytes([message.proof[0] ^ 1]) + message.proof[1:]
                else:
                    proof = self._last_hello_proof
                wire[i] = encode(replace(message, proof=proof))
                return
        raise StepError("no HelloOk queued")

    def _crafted_append(self, values: dict[str, str]) -> Append:
        """An Append the active never sent: real frames, chosen header fields."""
        assert self.shipper is not None
        base = int(values.get("base", self.passive_log.log_end))
        count = int(values.get("count", 1))
        epoch = int(values.get("epoch", self.epoch))
        scratch = MemLog(log_start=base)
        scratch.append_events(count, epoch, "forged")
        frames = scratch.frames[0].data
        if values.get("frames") == "corrupt":
            frames = frames[:-1] + bytes([frames[-1] ^ 1])
        return Append(epoch, base, count, int(values.get("commit", 0)), frames)

    def step_status(self, args: list[str]) -> None:
        """status: both sides' state, one line each."""
        s = self.shipper
        if s is not None:
            self.emit(
                f"a: conn={s.conn.value} standby={s.standby_state.value} log_end={s.log_end}"
                f" durable={s.local_durable} acked={s.acked} committed={s.committed}"
                f" unprotected={s.unprotected_offsets}"
            )
        self.emit(
            f"p: log_end={self.passive_log.log_end} durable={self.passive_log.durable_end}"
            f" last_epoch={self.passive_log.last_epoch} committed={self.passive_committed}"
            + (f" wants_data={self.conn.receiver.wants_data()}".lower() if self.conn else "")
        )
        self.emit(f"coordinator: {PASSIVE} in_sync={str(self.in_sync_record).lower()}")

    def step_log(self, args: list[str]) -> None:
        """log a|p: the frames of that node's log."""
        if args not in (["a"], ["p"]):
            raise StepError("log a|p")
        log = self.active_log if args[0] == "a" else self.passive_log
        self.emit(f"{args[0]}: log {log.describe()}")

    _STEPS: ClassVar[dict[str, Callable[[Harness, list[str]], None]]] = {
        "init": step_init,
        "set": step_set,
        "secret-mismatch": step_secret_mismatch,
        "active-append": step_active_append,
        "active-retention": step_active_retention,
        "passive-preload": step_passive_preload,
        "start": step_start,
        "connect": step_connect,
        "disconnect": step_disconnect,
        "deliver": step_deliver,
        "durable": step_durable,
        "local-durable": step_local_durable,
        "tick": step_tick,
        "record": step_record,
        "inject": step_inject,
        "status": step_status,
        "log": step_log,
    }

    # --- carrying out actions -----------------------------------------------------------------

    _last_hello_proof = b""
    _sent_appends: list[tuple[int, int]]  # (end, bytes) of this connection's Appends

    def _send(self, side: str, message: Message) -> None:
        conn = self.conn
        who = f"{side}: send {fmt_message(message)}"
        open_ = conn is not None and (conn.a_open if side == "a" else conn.p_open)
        if conn is None or not open_:
            self.emit(who + " (connection closed: not sent)")
            return
        self.emit(who)
        if isinstance(message, Hello):
            self._last_hello_proof = message.proof
        if isinstance(message, Append) and side == "a":
            self._sent_appends.append((message.base_offset + message.count, len(message.frames)))
        (conn.a2p if side == "a" else conn.p2a).append(encode(message))

    def _active_actions(self, actions: list[ShipperAction]) -> None:
        for action in actions:
            if isinstance(action, Send):
                self._send("a", action.message)
            elif isinstance(action, ReadFrames):
                self._serve_read(action)
            elif isinstance(action, RecordInSync):
                self.emit(
                    f"a: record-in-sync {action.standby} in_sync={str(action.in_sync).lower()}"
                )
                self.pending_records.append(action)
            elif isinstance(action, Committed):
                self.emit(f"a: committed {action.offset}")
                self._check_commit(action.offset)
            elif isinstance(action, Count):
                self.emit(f"a: count {action.metric}")
            elif isinstance(action, Close):
                self.emit(f"a: close ({'by peer' if action.by_peer else 'by us'}): {action.reason}")
                if self.conn is not None:
                    self._close(self.conn, "a")
            else:
                raise AssertionError(f"unknown shipper action {action!r}")

    def _serve_read(self, action: ReadFrames) -> None:
        assert self.shipper is not None
        base, end, data = self.active_log.read(action.from_offset, action.max_bytes)
        self.emit(
            f"a: read-frames from={action.from_offset} max={action.max_bytes}"
            f" -> {base}..{end} ({len(data)} bytes)"
        )
        self._active_actions(self.shipper.frames_read(base, end, data, self.now_ms))

    def _passive_actions(self, actions: list[ReceiverAction]) -> None:
        assert self.conn is not None
        receiver = self.conn.receiver
        log = self.passive_log
        for action in actions:
            if isinstance(action, Send):
                self._send("p", action.message)
            elif isinstance(action, AppendFrames):
                self.emit(f"p: append-frames {action.base_offset}..{action.end_offset}")
                try:
                    log.append_frames(action.frames)
                except ValueError as e:
                    self.emit(f"p: log refused the frames: {e}")
                    self._passive_actions(receiver.append_failed(str(e)))
                self.passive_highest_epoch = max(self.passive_highest_epoch, receiver.highest_epoch)
            elif isinstance(action, TruncateLog):
                self.emit(f"p: truncate-log {action.to_offset}")
                log.truncate(action.to_offset)
                self._passive_actions(
                    receiver.truncated(log.log_end, log.last_epoch, log.last_epoch_start)
                )
            elif isinstance(action, Authenticated):
                self.emit(f"p: authenticated {action.peer} epoch={action.epoch}")
                self._flush_passive()
                committed = min(self.passive_committed, log.durable_end)
                self.emit(
                    f"p: accept log_end={log.durable_end} last_epoch={log.last_epoch}"
                    f" committed={committed} highest_epoch={self.passive_highest_epoch}"
                )
                accepted = receiver.accept(
                    log_end=log.durable_end,
                    last_epoch=log.last_epoch,
                    last_epoch_start=log.last_epoch_start,
                    committed=committed,
                    highest_epoch=self.passive_highest_epoch,
                )
                self.passive_highest_epoch = max(self.passive_highest_epoch, receiver.highest_epoch)
                self._passive_actions(accepted)
            elif isinstance(action, Count):
                self.emit(f"p: count {action.metric}")
            elif isinstance(action, Close):
                self.emit(f"p: close ({'by peer' if action.by_peer else 'by us'}): {action.reason}")
                if self.conn is not None:
                    self._close(self.conn, "p")
            else:
                raise AssertionError(f"unknown receiver action {action!r}")

    # --- invariants ------------------------------------------------------------------------------

    def _check_commit(self, offset: int) -> None:
        if offset <= self.last_committed:
            raise InvariantViolation(f"committed {offset} after {self.last_committed}")
        if offset > self.active_log.durable_end:
            raise InvariantViolation(
                f"committed {offset} beyond the active's durable end {self.active_log.durable_end}"
            )
        self.last_committed = offset
        if self.shipper_config.ack_all and self.in_sync_record:
            self._check_prefix(offset, self.passive_log.durable_end, "committed while in sync")

    def _check_prefix(self, offset: int, passive_durable: int, what: str) -> None:
        if passive_durable < offset:
            raise InvariantViolation(f"{what}: {offset} > passive durable {passive_durable}")
        lo = self.active_log.log_start
        if self.active_log.events(lo, offset) != self.passive_log.events(lo, offset):
            raise InvariantViolation(f"{what}: logs differ below {offset}")

    def _check_invariants(self) -> None:
        s = self.shipper
        if s is not None and self.conn is not None and self.conn.a_open:
            waiting = [size for end, size in self._sent_appends if end > s.acked]
            c = s.config
            if len(waiting) > c.window_batches or (
                len(waiting) > 1 and sum(waiting) > c.window_bytes
            ):
                raise InvariantViolation(f"{len(waiting)} Appends, {sum(waiting)} bytes unacked")
        if self.conn is not None:
            self.passive_committed = max(self.passive_committed, self.conn.receiver.committed)
        if self.passive_committed and self.check_passive_prefix:
            self._check_prefix(
                self.passive_committed, self.passive_log.durable_end, "passive committed prefix"
            )
