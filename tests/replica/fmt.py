"""How the transcript harness prints what happens: messages, effects, store answers.

One line per effect carried out or message delivered, with the fields a reader needs
to follow the protocol; never nonces, proofs or raw bytes (a frame is shown by its
offsets and a count). Pure functions: nothing here reads or changes harness state.
"""

from __future__ import annotations

from walrep.log.frame import FrameStatus, inspect_frame
from walrep.log.memory import MemoryLog
from walrep.log.replica_state import ReplicaState
from walrep.node import effects as fx
from walrep.replica.lease import Observed
from walrep.replica.messages import (
    Ack,
    Append,
    Challenge,
    Error,
    Heartbeat,
    Hello,
    HelloOk,
    Message,
    Reject,
    Truncate,
)
from walrep.replica.store import NodeRow

_SCAN_LIMIT = 1 << 30  # frames are only counted here, never trusted


def message(m: Message) -> str:
    """A message with its key fields."""
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
        return (
            f"Append(epoch={m.epoch} {m.base_offset}..{m.base_offset + m.count}"
            f" commit={m.commit_offset} frames={count_frames(m.frames)})"
        )
    if isinstance(m, Ack):
        return f"Ack(durable={m.durable_offset} last_epoch={m.last_epoch})"
    if isinstance(m, Heartbeat):
        return f"Heartbeat(commit={m.commit_offset})"
    assert isinstance(m, Error), m
    return f"Error({m.code}: {m.message})"


def count_frames(data: bytes) -> int | str:
    """How many well-formed frames ``data`` holds, or "invalid"."""
    pos, n = 0, 0
    while pos < len(data):
        status, header = inspect_frame(data, pos, _SCAN_LIMIT)
        if status is not FrameStatus.OK or header is None:
            return "invalid"
        pos, n = pos + header.frame_bytes, n + 1
    return n


def flag(value: bool) -> str:
    return "true" if value else "false"


def state(s: ReplicaState) -> str:
    return f"floor={s.committed_floor} highest_epoch={s.highest_epoch}"


def store_op(op: fx.StoreOp) -> str:
    """A store request as the node asked for it."""
    if isinstance(op, fx.Acquire):
        return f"Acquire(expected_epoch={op.expected_epoch}{' force' if op.force else ''})"
    if isinstance(op, fx.Renew):
        return f"Renew(epoch={op.epoch})"
    if isinstance(op, fx.Release):
        return f"Release(epoch={op.epoch})"
    if isinstance(op, fx.SetInSync):
        return f"SetInSync({op.standby} in_sync={flag(op.in_sync)} epoch={op.epoch})"
    if isinstance(op, fx.PublishNode):
        i = op.info
        return f"PublishNode({i.node_id} {i.role} log_end={i.log_end} acked={i.acked})"
    assert isinstance(op, fx.ReadNodes), op
    return "ReadNodes"


def lease(seen: Observed) -> str:
    if seen.holder is None:
        return "no holder"
    return f"{seen.holder} holds epoch {seen.epoch} until {seen.expires_at_ms}"


def store_result(op: fx.StoreOp, result: object) -> str:
    """The store's answer (None: the call failed or timed out)."""
    if result is None:
        return "failed (no answer)"
    if isinstance(op, fx.Acquire):
        assert isinstance(result, tuple)
        won, seen = result
        assert isinstance(seen, Observed)
        return f"won: {lease(seen)}" if won else f"refused: {lease(seen)}"
    if isinstance(op, fx.ReadNodes):
        assert isinstance(result, list)
        rows = [r for r in result if isinstance(r, NodeRow)]
        return " ".join(_row(r) for r in rows) if rows else "no rows"
    if isinstance(op, fx.PublishNode):
        return "ok"
    return "ok" if result is True else "refused"


def _row(row: NodeRow) -> str:
    i = row.info
    return f"{i.node_id}({i.role} {i.event_sync_host}:{i.event_sync_port})"


def log_frames(log: MemoryLog) -> str:
    """``[start,end) durable=D`` and each frame as ``base..end@eEPOCH``."""
    parts = [
        f"{f.header.base_offset}..{f.header.end_offset}@e{f.header.epoch}"
        for f in (log.frames(log.log_start) if log.log_end > log.log_start else ())
    ]
    return f"[{log.log_start},{log.log_end}) durable={log.durable_end} " + (
        " ".join(parts) if parts else "(empty)"
    )
