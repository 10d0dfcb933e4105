"""What an append accepts: batch limits, verbatim frames, the epoch fence (pure).

Shared by ``Wal`` and ``MemoryLog``, so both refuse exactly the same input, with the same
typed errors, before writing anything:

* ``check_batch``: an encoded batch within ``frame.limit_violation`` of the log's config
  (``LimitExceededError`` if over a size limit, ``MalformedFrameError`` otherwise);
* ``check_frames``: verbatim frames (replication) that are intact, in sequence from the
  log end, within the limits, with epochs that never go down (``RejectedFrameError``
  naming the byte position, ``LimitExceededError``, ``FencedError``);
* ``fence``: an epoch lower than the log's last one is a stale writer (``FencedError``).
"""

from __future__ import annotations

from walrep.errors import FencedError, LimitExceededError, RejectedFrameError
from walrep.log.frame import (
    HEADER_SIZE,
    EncodedBatch,
    FrameHeader,
    FrameStatus,
    inspect_frame,
    limit_violation,
    payload_violation,
)


def check_batch(batch: EncodedBatch, max_batch_bytes: int) -> None:
    """Refuse a batch a reader with ``max_batch_bytes`` would refuse (nothing written)."""
    payload = batch.payload
    violation = payload_violation(
        batch.count, batch.flags, payload, 0, len(payload), max_batch_bytes
    )
    if violation is not None:
        raise violation.error(f"batch of {batch.count} events")


def fence(epoch: int, last_epoch: int) -> bool:
    """Whether ``epoch`` begins a new epoch; ``FencedError`` if it is a stale one."""
    if epoch < last_epoch:
        raise FencedError(epoch, last_epoch)
    return epoch > last_epoch


def check_frames(
    data: bytes, *, first_offset: int, last_epoch: int, max_batch_bytes: int
) -> list[tuple[int, FrameHeader]]:
    """``(byte position, header)`` of every frame of ``data``, all checked, in order.

    Raises at the first frame that is not intact, not at the next offset, over the
    limits or from a lower epoch than the one before it (or than ``last_epoch``).
    """
    checked: list[tuple[int, FrameHeader]] = []
    pos, expected, epoch = 0, first_offset, last_epoch
    while pos < len(data):
        status, header = inspect_frame(data, pos, max_batch_bytes)
        if status is not FrameStatus.OK or header is None:
            raise _refusal(data, pos, status, header, max_batch_bytes)
        if header.base_offset != expected:
            got = header.base_offset
            raise RejectedFrameError(pos, f"starts at offset {got}, log end is {expected}")
        fence(header.epoch, epoch)
        checked.append((pos, header))
        pos += header.frame_bytes
        expected, epoch = header.end_offset, header.epoch
    return checked


def _refusal(
    data: bytes, pos: int, status: FrameStatus, header: FrameHeader | None, max_batch_bytes: int
) -> LimitExceededError | RejectedFrameError:
    """A size limit is ``LimitExceededError`` (a peer with larger limits), else refused."""
    violation = None
    if header is not None and status is FrameStatus.BAD_HEADER:
        violation = limit_violation(
            header.count, header.flags, header.payload_bytes, max_batch_bytes
        )
    elif header is not None and status is FrameStatus.OVER_LIMIT:
        size = header.payload_bytes
        violation = payload_violation(
            header.count, header.flags, data, pos + HEADER_SIZE, size, max_batch_bytes
        )
    if violation is not None and violation.size is not None:
        what = f"frame at byte {pos} of the appended data: {violation.reason}"
        return LimitExceededError(what, violation.size, violation.limit)
    reason = status.value if violation is None else f"{status.value}: {violation.reason}"
    return RejectedFrameError(pos, reason)
