"""``walrep replay diff``: two versions of an app over the same log, compared.

Both versions replay the log from offset 0 (each builds its own state before the
range: a change to an app changes everything after the first event it treats
differently), in lockstep batches. In the range ``[from, to)`` every batch's outputs
(id, stream, attributes) and changed rows (aggregation rows and table rows, absolute
values) are compared; a row one side changed and the other did not is compared with
the other side's current value. Differences are counted and the first ``EXAMPLES_MAX``
of each kind kept. The first offset where the versions diverge is then pinpointed: both
replay again to the start of the first differing batch and go on one record at a time
(so a run with no difference costs one pass, and one with a difference at most two).

Exit status of the CLI: 0 identical, 1 different (Temporal's replayer in CI is the model:
run it against a recorded log before deploying a new version).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from walrep.engine.app import App
from walrep.engine.core import DigestPoint, Engine, EngineOutput
from walrep.engine.timeunits import Duration
from walrep.engine.types import Value
from walrep.replay.runner import NO_DIGEST_POINTS, Progress, fresh_engine
from walrep.replay.source import LogSource
from walrep.replay.trace import RowId, row_id, table_row_id

EXAMPLES_MAX: Final = 20


def _rows(engine: Engine) -> dict[RowId, tuple[Value, ...]]:
    out: dict[RowId, tuple[Value, ...]] = {}
    for r in engine.changed_rows():
        out[row_id(r)] = r.values
    for t in engine.changed_table_rows():
        out[table_row_id(t)] = t.values
    return out


def lookup(engine: Engine, row: RowId) -> tuple[Value, ...] | None:
    """The values ``engine`` holds now for ``row`` (None: no such row)."""
    state, duration, bucket, key = row
    try:
        if not duration:
            return next((v for k, v in engine.table(state).rows() if k == key), None)
        agg = engine.aggregation(state)
    except KeyError:
        return None
    d = Duration(duration)
    if d not in agg.durations:
        return None
    return next((r.values for r in agg.rows(d, bucket, bucket + 1) if r.key == key), None)


def _outputs(outputs: list[EngineOutput | DigestPoint]) -> dict[tuple[int, int], Any]:
    return {
        (o.offset, o.index): (o.stream, o.attributes)
        for o in outputs
        if isinstance(o, EngineOutput)
    }


@dataclass
class DiffReport:
    from_offset: int
    to_offset: int
    first_divergence: int | None = None
    rows_differing: int = 0
    outputs_differing: int = 0
    row_examples: list[dict[str, Any]] = field(default_factory=list)
    output_examples: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False

    @property
    def identical(self) -> bool:
        return self.first_divergence is None

    def to_json(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "from": self.from_offset,
            "to": self.to_offset,
            "first_divergence": self.first_divergence,
            "rows_differing": self.rows_differing,
            "outputs_differing": self.outputs_differing,
            "row_examples": self.row_examples,
            "output_examples": self.output_examples,
            "versions": self.versions,
            "interrupted": self.interrupted,
        }


class Differ:
    def __init__(
        self,
        source: LogSource,
        apps_a: Sequence[App],
        apps_b: Sequence[App],
        *,
        stop: threading.Event | None = None,
    ) -> None:
        self.source = source
        self.apps_a, self.apps_b = list(apps_a), list(apps_b)
        self.stop = stop if stop is not None else threading.Event()

    def _engines(self) -> tuple[Engine, Engine]:
        a = fresh_engine(self.apps_a, self.source)
        b = Engine(self.apps_b, digest_interval=NO_DIGEST_POINTS)
        return a, b

    def _compare(
        self, a: Engine, b: Engine, out_a: list[Any], out_b: list[Any], report: DiffReport | None
    ) -> bool:
        """Whether the last batch differs; counted and exemplified in ``report``."""
        rows_a, rows_b = _rows(a), _rows(b)
        differ = False
        for row in sorted(set(rows_a) | set(rows_b), key=repr):
            va = rows_a[row] if row in rows_a else lookup(a, row)
            vb = rows_b[row] if row in rows_b else lookup(b, row)
            if va == vb:
                continue
            differ = True
            if report is not None:
                report.rows_differing += 1
                if len(report.row_examples) < EXAMPLES_MAX:
                    state, duration, bucket, key = row
                    report.row_examples.append(
                        {
                            "state": state,
                            "per": duration or None,
                            "bucket_ms": bucket if duration else None,
                            "key": list(key),
                            "a": va,
                            "b": vb,
                        }
                    )
        oa, ob = _outputs(out_a), _outputs(out_b)
        for oid in sorted(set(oa) | set(ob)):
            if oa.get(oid) == ob.get(oid):
                continue
            differ = True
            if report is not None:
                report.outputs_differing += 1
                if len(report.output_examples) < EXAMPLES_MAX:
                    report.output_examples.append(
                        {"id": list(oid), "a": oa.get(oid), "b": ob.get(oid)}
                    )
        return differ

    def run(
        self,
        from_offset: int = 0,
        to_offset: int | None = None,
        *,
        progress: Progress | None = None,
    ) -> DiffReport:
        end = self.source.log_end if to_offset is None else min(to_offset, self.source.log_end)
        report = DiffReport(from_offset, end)
        report.versions = {
            "a": ", ".join(f"{x.name} {x.version}" for x in self.apps_a),
            "b": ", ".join(f"{x.name} {x.version}" for x in self.apps_b),
        }
        a, b = self._engines()
        self._prefix(a, b, from_offset)
        first_batch: int | None = None
        for batch in self.source.batches(from_offset, end):
            base = batch[0].offset
            if self._compare(a, b, a.apply(batch), b.apply(batch), report) and first_batch is None:
                first_batch = base
            if progress is not None:
                progress(a.applied)
            if self.stop.is_set():
                report.interrupted = True
                break
        if first_batch is not None:
            report.first_divergence = self._pinpoint(first_batch, end)
        return report

    def _prefix(self, a: Engine, b: Engine, to_offset: int) -> None:
        """Both engines to ``to_offset``, their change sets emptied."""
        for batch in self.source.batches(0, to_offset):
            a.apply(batch)
            b.apply(batch)
        a.set_tracking(True)
        b.set_tracking(True)

    def _pinpoint(self, start: int, end: int) -> int:
        """The first offset at or after ``start`` whose record the versions treat apart."""
        a, b = self._engines()
        self._prefix(a, b, start)
        for batch in self.source.batches(start, end):
            for record in batch:
                if self._compare(a, b, a.apply([record]), b.apply([record]), None):
                    return record.offset
        return start  # the batch differed as a whole (cannot happen: apply is per record)
