"""The sink protocol and the batches the engine hands to sinks (pure data, no IO).

Ordering contract between the engine and a sink:

* The engine applies committed events in offset order. After applying ``[0, to_offset)``
  it calls ``write(SinkBatch(epoch, to_offset, rows, outputs))`` where ``rows`` are the
  aggregation buckets that changed since the previous batch (absolute values, never
  deltas) and ``outputs`` the app outputs of those offsets, in ascending output id.
* Batches reach one sink one at a time (the engine awaits each ``write``), with strictly
  increasing ``to_offset`` within a process.
* ``applied_offset()`` is where the sink resumes: everything the batches up to that
  offset carried is in the sink (durably, for the sinks that keep progress). On
  promotion the engine starts each sink with batches whose ``to_offset`` is above it;
  a batch at or below it is skipped by the sink (a replay writes nothing twice).
* ``epoch`` is the writer's lease generation; a sink with fenced storage refuses a lower
  epoch than it has stored (``SinkFencedError``), so a deposed active cannot write.

Errors: every failure is a ``SinkError``; ``retriable`` says whether writing the same
batch again (after ``applied_offset()``) may succeed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from walrep.engine.types import AggregationSchema, AggRow, Value

OutputId = tuple[int, int]
"""``(input offset, index)``: stable across replays, ascending in emission order."""


@dataclass(frozen=True, slots=True)
class Output:
    """One event an app emitted on one of its output streams while applying an input."""

    output_id: OutputId
    app: str
    stream: str
    attributes: dict[str, Value]

    @property
    def idempotency_key(self) -> str:
        """``<offset>-<index>``: what at-least-once sinks send so receivers can dedupe."""
        return f"{self.output_id[0]}-{self.output_id[1]}"

    def to_json_obj(self) -> dict[str, object]:
        """The JSON shape the NDJSON and webhook sinks emit."""
        return {
            "id": [self.output_id[0], self.output_id[1]],
            "app": self.app,
            "stream": self.stream,
            "attributes": self.attributes,
        }


@dataclass(frozen=True, slots=True)
class SinkBatch:
    """What changed after applying the events ``[0, to_offset)`` under ``epoch``."""

    epoch: int
    to_offset: int
    rows: Sequence[AggRow] = ()
    outputs: Sequence[Output] = ()

    def __post_init__(self) -> None:
        # Engine bugs, not bad input: the sinks' skip and resume logic relies on these.
        assert self.epoch >= 0 and self.to_offset >= 0, (self.epoch, self.to_offset)
        ids = [o.output_id for o in self.outputs]
        assert ids == sorted(ids) and len(set(ids)) == len(ids), "output ids must ascend"
        assert not ids or ids[-1][0] < self.to_offset, "an output beyond to_offset"


class Sink(Protocol):
    """A destination of aggregation rows and outputs; runs only on the active node."""

    async def setup(self, schemas: Sequence[AggregationSchema]) -> None:
        """Prepare the destination (create tables, open files, connect). Idempotent."""
        ...

    async def applied_offset(self) -> int:
        """Where to resume: batches with ``to_offset`` at or below it are in; 0 if none."""
        ...

    async def write(self, batch: SinkBatch) -> None:
        """Deliver one batch (see the module's ordering contract)."""
        ...

    async def close(self) -> None:
        """Finish (flush what is queued) and release connections and files."""
        ...
