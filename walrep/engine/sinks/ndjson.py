"""The NDJSON sink: one JSON line per output, to a file or stdout — at least once.

Line formats (UTF-8, ``\\n``-terminated, at most ``line_bytes_max`` bytes each)::

    {"id": [offset, index], "app": ..., "stream": ..., "attributes": {...}}
    {"row": {"aggregation": ..., "duration": "SECONDS", "AGG_TIMESTAMP": ms,
             "key": {...}, "values": {...}}, "batch": [from_offset, to_offset]}

Row lines only with ``include_rows``; they hold absolute values, so a consumer keeps the
last line of each bucket. Per batch the outputs come first (ascending id), then the rows.

File: appended, then flushed and fsynced once per batch (and the directory once when the
file is created); ``write`` returns after the fsync. On ``setup`` a torn last line (a
crash in the middle of a batch) is cut off, and the last complete line says where to
resume:

* an output line ``[k, i]``: ``applied_offset()`` is ``k``, and outputs up to ``(k, i)``
  are skipped when the engine sends them again;
* a row line of batch ``[F, N]``: the batch's outputs are all in, some of its rows may
  not be: ``applied_offset()`` is ``F``; outputs below offset ``N`` are skipped and the
  rows written again.

So a file gets each output line once even across crashes; a consumer that also reads
stdout, or a file a crash cut, must still dedupe on ``id`` (the contract is at least
once). Batches without outputs or rows leave no line: after a restart the engine may
resend them, which writes nothing. Stdout has no recovery: ``applied_offset()`` is
where this process got to (0 at start).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import orjson

from walrep.engine.sinks.base import OutputId, SinkBatch
from walrep.engine.types import AggregationSchema, AggRow
from walrep.errors import SinkError

log = logging.getLogger(__name__)

LINE_BYTES_MAX = 1 << 20


class NdjsonSink:
    """Outputs (and optionally rows) as NDJSON; see the module for recovery and ordering."""

    def __init__(
        self,
        path: Path | str | None,
        *,
        include_rows: bool = False,
        line_bytes_max: int = LINE_BYTES_MAX,
        stdout: BinaryIO | None = None,
    ) -> None:
        """``path`` None writes to ``stdout`` (default ``sys.stdout.buffer``)."""
        assert line_bytes_max >= 64
        self.path = Path(path) if path is not None else None
        self.include_rows = include_rows
        self.line_bytes_max = line_bytes_max
        self._stdout = stdout
        self._file: BinaryIO | None = None
        self._schemas: dict[str, AggregationSchema] = {}
        self._applied = 0  # batches with to_offset <= this are in
        self._next_id: OutputId = (0, 0)  # outputs below this id are in
        self._failed: str | None = None  # an fsync failed: the file's state is unknown
        self._set_up = False

    @property
    def target(self) -> str:
        return str(self.path) if self.path is not None else "stdout"

    async def setup(self, schemas: Sequence[AggregationSchema]) -> None:
        """Open the file (created if missing), cut a torn tail, recover the resume point."""
        self._schemas = {s.name: s for s in schemas}
        self._set_up = True
        if self.path is not None and self._file is None:
            await self._open()

    async def _open(self) -> None:
        """Open and recover from disk: at setup, and after a failed write."""
        assert self.path is not None
        try:
            self._file, self._applied, self._next_id = await asyncio.to_thread(
                _open_and_recover, self.path, self.line_bytes_max
            )
        except OSError as e:
            raise SinkError(f"ndjson sink {self.target}: open and recover: {e!r}") from e

    async def applied_offset(self) -> int:
        return self._applied

    async def write(self, batch: SinkBatch) -> None:
        """Append the batch's lines and fsync them; returns once they are durable."""
        assert self._set_up, "setup() first"
        if self._failed is not None:
            raise SinkError(f"ndjson sink {self.target}: {self._failed}", retriable=False)
        if self.path is not None and self._file is None:
            await self._open()  # the last write failed: recover first
        if batch.to_offset <= self._applied:
            return  # already in (a replay after a restart)
        outputs = [o for o in batch.outputs if o.output_id >= self._next_id]
        lines = [self._encode(o.to_json_obj(), f"output {o.output_id}") for o in outputs]
        if self.include_rows:
            lines += [self._row_line(row, batch.to_offset) for row in batch.rows]
        if lines:
            await self._append(b"".join(lines))
        self._applied = batch.to_offset
        if outputs:
            last = outputs[-1].output_id
            self._next_id = (last[0], last[1] + 1)

    def _row_line(self, row: AggRow, to_offset: int) -> bytes:
        schema = self._schemas.get(row.aggregation)
        if schema is None:
            raise SinkError(
                f"ndjson sink {self.target}: no schema for aggregation {row.aggregation!r}",
                retriable=False,
            )
        obj = {
            "row": {
                "aggregation": row.aggregation,
                "duration": row.duration.table_suffix,
                "AGG_TIMESTAMP": row.agg_timestamp_ms,
                "key": dict(zip((c.name for c in schema.group_by), row.key, strict=True)),
                "values": dict(zip((c.name for c in schema.columns), row.values, strict=True)),
            },
            "batch": [self._applied, to_offset],
        }
        return self._encode(obj, f"row of {row.aggregation}")

    def _encode(self, obj: object, what: str) -> bytes:
        try:
            line = orjson.dumps(obj) + b"\n"
        except TypeError as e:  # orjson.JSONEncodeError: an int over 64 bits, ...
            raise SinkError(f"ndjson sink {self.target}: {what}: {e}", retriable=False) from e
        if len(line) > self.line_bytes_max:
            raise SinkError(
                f"ndjson sink {self.target}: {what} is {len(line)} bytes as JSON, over the "
                f"limit of {self.line_bytes_max}",
                retriable=False,
            )
        return line

    async def _append(self, data: bytes) -> None:
        if self.path is None:
            out = self._stdout if self._stdout is not None else sys.stdout.buffer
            try:
                await asyncio.to_thread(_write_flush, out, data)
            except OSError as e:
                raise SinkError(f"ndjson sink stdout: write: {e!r}") from e
            return
        f = self._file
        assert f is not None
        try:
            await asyncio.to_thread(_write_flush, f, data)
        except OSError as e:
            # Part of the batch may be in the file: the next write recovers from disk first
            # (cuts a torn line, resumes after the last complete one).
            self._file = None
            f.close()
            raise SinkError(f"ndjson sink {self.target}: write: {e!r}") from e
        try:
            await asyncio.to_thread(os.fsync, f.fileno())
        except OSError as e:
            # After a failed fsync the kernel may have dropped the dirty pages while the
            # file still reads back fine; nothing here can be trusted to be durable.
            self._failed = f"fsync failed ({e!r}); restart the sink to recover from disk"
            raise SinkError(f"ndjson sink {self.target}: {self._failed}", retriable=False) from e

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _write_flush(out: BinaryIO, data: bytes) -> None:
    out.write(data)
    out.flush()


def _open_and_recover(path: Path, line_bytes_max: int) -> tuple[BinaryIO, int, OutputId]:
    """Open ``path`` for append; cut a torn tail; (file, applied offset, next output id)."""
    created = not path.exists()
    f = path.open("ab")
    try:
        if created:
            os.fsync(f.fileno())
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return f, 0, (0, 0)
        last = _last_complete_line(path, line_bytes_max)
        return f, *_resume_point(path, last)
    except BaseException:
        f.close()
        raise


def _last_complete_line(path: Path, line_bytes_max: int) -> bytes | None:
    """The last ``\\n``-terminated line; a torn line after it is truncated (and fsynced)."""
    with path.open("r+b") as f:
        size = f.seek(0, os.SEEK_END)
        start = max(0, size - 2 * (line_bytes_max + 1))  # the last line and a torn one
        f.seek(start)
        tail = f.read()
        end = tail.rfind(b"\n") + 1  # 0: no complete line in the tail
        if end < len(tail):
            if end == 0 and start > 0:
                raise SinkError(
                    f"ndjson sink {path}: no line end in the last {len(tail)} bytes "
                    "(not an NDJSON file of this sink, or lines over the limit)",
                    retriable=False,
                )
            log.warning(
                "ndjson sink %s: cutting a torn last line (%d bytes at byte %d)",
                path,
                len(tail) - end,
                start + end,
            )
            f.truncate(start + end)
            os.fsync(f.fileno())
            tail = tail[:end]
        if not tail:
            return None
        begin = tail.rfind(b"\n", 0, len(tail) - 1) + 1
        if begin == 0 and start > 0:
            raise SinkError(f"ndjson sink {path}: last line over the limit", retriable=False)
        return tail[begin:]


def _resume_point(path: Path, line: bytes | None) -> tuple[int, OutputId]:
    if line is None:
        return 0, (0, 0)
    try:
        obj = orjson.loads(line)
        if "id" in obj:
            offset, index = (int(v) for v in obj["id"])
            return offset, (offset, index + 1)
        if "row" in obj:
            from_offset, to_offset = (int(v) for v in obj["batch"])
            return from_offset, (to_offset, 0)
    except (orjson.JSONDecodeError, TypeError, ValueError, KeyError) as e:
        raise SinkError(
            f"ndjson sink {path}: last line is not one of this sink's: {e}", retriable=False
        ) from e
    raise SinkError(f"ndjson sink {path}: last line has no id or row", retriable=False)
