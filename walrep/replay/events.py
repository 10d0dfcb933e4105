"""``walrep replay events``: the log's events as NDJSON, filtered.

One JSON object per line, in offset order: ``offset``, ``epoch``, ``ingest_time_ms``,
``ingest_time`` (ISO 8601, UTC), ``stream``, ``attributes`` and, for an idempotent
producer's event, ``producer_id`` and ``seq``. Filters: offsets ``[from, to)``, ingest
times ``since <= t <= until`` (ms), a stream name, a ``--where`` condition
(``walrep.replay.where``). Blank records (offsets skipped as damaged) are never printed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from walrep.log.types import Record
from walrep.replay.source import BLANK


def iso_ms(time_ms: int) -> str:
    """``2026-01-01T00:00:00.000Z``."""
    text = datetime.fromtimestamp(time_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def event_json(record: Record) -> bytes:
    event = record.event
    doc: dict[str, Any] = {
        "offset": record.offset,
        "epoch": record.epoch,
        "ingest_time_ms": record.ingest_time_ms,
        "ingest_time": iso_ms(record.ingest_time_ms),
        "stream": event[0],
        "attributes": event[1],
    }
    if len(event) == 4:
        doc |= {"producer_id": event[2], "seq": event[3]}
    return orjson.dumps(doc)


@dataclass(frozen=True)
class EventFilter:
    since_ms: int | None = None
    until_ms: int | None = None
    stream: str | None = None
    where: Callable[[Mapping[str, Any]], bool] | None = None

    def keep(self, record: Record) -> bool:
        event = record.event
        if event is BLANK:
            return False
        t = record.ingest_time_ms
        if self.since_ms is not None and t < self.since_ms:
            return False
        if self.until_ms is not None and t > self.until_ms:
            return False
        if self.stream is not None and event[0] != self.stream:
            return False
        return self.where is None or self.where(event[1])


def selected(batches: Iterator[list[Record]], keep: EventFilter) -> Iterator[list[Record]]:
    """Each batch's records that ``keep`` keeps (batches stay, for progress)."""
    for batch in batches:
        yield [r for r in batch if keep.keep(r)]
