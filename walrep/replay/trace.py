"""``walrep replay trace``: every event that changed one key's state, with before/after.

A key is ``ATTR=VALUE[,ATTR=VALUE]`` over the group-by attributes of an aggregation (or
the key attributes of a table): every state grouped by all of the named attributes is
traced, or the one ``--aggregation`` names. A value matches when it prints the same
(``true``/``false`` for booleans, ``null`` for a missing value, else ``str``).

How it is exact without applying every event alone: two engines hold the same state.
The *leader* applies a batch and reports the rows it changed (``changed_rows``, the
sinks' own bookkeeping); when none of them is the key's, the *follower* applies the
batch whole. When one is, the follower applies that batch one record at a time and
reads what each record changed, so every change is attributed to its event, in offset
order. An event counts when a row of the key has other values after it than before
(a write of the same values is not a change). Cost: about twice a replay, plus one
apply per record in the batches that touch the key.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from walrep.engine.app import App
from walrep.engine.core import Engine, TableRow
from walrep.engine.timeunits import Duration
from walrep.engine.types import AggregationSchema, AggRow, Value
from walrep.log.types import Record
from walrep.replay.errors import ReplayError
from walrep.replay.events import iso_ms

RowId = tuple[str, str, int, tuple[Any, ...]]  # state, duration ("" for tables), bucket, key


def parse_key(text: str) -> tuple[tuple[str, str], ...]:
    """``a=1,b=x`` as ``(("a", "1"), ("b", "x"))``; ``ReplayError`` if malformed."""
    pairs = []
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ReplayError(f"--key {text!r}: expected ATTR=VALUE[,ATTR=VALUE], got {part!r}")
        pairs.append((name.strip(), value))
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise ReplayError(f"--key {text!r}: an attribute is named twice")
    return tuple(pairs)


def shown(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Target:
    """One traced state: where the key's attributes sit in its key tuple."""

    schema: AggregationSchema
    table: bool
    positions: tuple[int, ...]
    values: tuple[str, ...]

    def matches(self, key: tuple[Value, ...]) -> bool:
        return all(shown(key[p]) == v for p, v in zip(self.positions, self.values, strict=True))


def targets(
    engine: Engine, key: tuple[tuple[str, str], ...], aggregation: str | None
) -> list[Target]:
    """The states the key selects (see the module docstring)."""
    found = []
    schemas = [(s, False) for s in engine.schemas()] + [(s, True) for s in engine.table_schemas()]
    for schema, is_table in schemas:
        if aggregation is not None and schema.name != aggregation:
            continue
        names = [c.name for c in schema.group_by]
        if all(n in names for n, _ in key):
            positions = tuple(names.index(n) for n, _ in key)
            found.append(Target(schema, is_table, positions, tuple(v for _, v in key)))
    if not found:
        where = [s for s, _ in schemas if aggregation is None or s.name == aggregation]
        if aggregation is not None and not where:
            raise ReplayError(f"no aggregation or table {aggregation!r} in the apps")
        groups = {s.name: [c.name for c in s.group_by] for s in where}
        raise ReplayError(
            f"no state is keyed by {[n for n, _ in key]}: the states and their keys are {groups}"
        )
    return found


@dataclass(frozen=True)
class Change:
    row: RowId
    columns: tuple[str, ...]
    key_names: tuple[str, ...]
    before: tuple[Value, ...] | None
    after: tuple[Value, ...]

    def to_json(self) -> dict[str, Any]:
        state, duration, bucket, key = self.row
        out: dict[str, Any] = {"state": state}
        if duration:
            out |= {"per": duration, "bucket_ms": bucket}
        out["key"] = dict(zip(self.key_names, key, strict=True))
        out["before"] = (
            None if self.before is None else dict(zip(self.columns, self.before, strict=True))
        )
        out["after"] = dict(zip(self.columns, self.after, strict=True))
        return out


@dataclass(frozen=True)
class TracedEvent:
    record: Record
    changes: tuple[Change, ...]

    def to_json(self) -> dict[str, Any]:
        r = self.record
        return {
            "offset": r.offset,
            "epoch": r.epoch,
            "ingest_time_ms": r.ingest_time_ms,
            "ingest_time": iso_ms(r.ingest_time_ms),
            "stream": r.event[0],
            "attributes": r.event[1],
            "changes": [c.to_json() for c in self.changes],
        }


class Tracer:
    """The two engines and the key's rows as last seen (see the module docstring)."""

    def __init__(
        self,
        apps: Sequence[App],
        leader: Engine,
        key: tuple[tuple[str, str], ...],
        *,
        aggregation: str | None = None,
        per: str | None = None,
    ) -> None:
        self.leader = leader
        self.targets = {t.schema.name: t for t in targets(leader, key, aggregation)}
        try:
            self.per = None if per is None else Duration.parse(per).value
        except ValueError:
            names = ", ".join(d.value for d in Duration)
            raise ReplayError(f"--per {per!r}: not a duration ({names})") from None
        self.follower = Engine.restore(
            apps, leader.state_bytes(), digest_interval=leader.digest_interval
        )
        leader.set_tracking(True)
        self.follower.set_tracking(True)
        self.rows: dict[RowId, tuple[Value, ...]] = {}
        for row in self._agg_rows(leader.all_rows()):
            self.rows[row_id(row)] = row.values
        for trow in self._table_rows(leader.all_table_rows()):
            self.rows[table_row_id(trow)] = trow.values

    def _agg_rows(self, rows: list[AggRow]) -> Iterator[AggRow]:
        for row in rows:
            t = self.targets.get(row.aggregation)
            wanted = self.per is None or row.duration.value == self.per
            if t is not None and not t.table and wanted and t.matches(row.key):
                yield row

    def _table_rows(self, rows: list[TableRow]) -> Iterator[TableRow]:
        for row in rows:
            t = self.targets.get(row.table)
            if t is not None and t.table and t.matches(row.key):
                yield row

    def _touched(self, engine: Engine) -> bool:
        rows = engine.changed_rows()
        table_rows = engine.changed_table_rows()
        return any(True for _ in self._agg_rows(rows)) or any(
            True for _ in self._table_rows(table_rows)
        )

    def feed(self, records: list[Record]) -> list[TracedEvent]:
        """The leader has applied ``records``: bring the follower there, and return the
        events among them that changed the key's rows."""
        if not self._touched(self.leader):
            self.follower.apply(records)
            self.follower.set_tracking(True)
            return []
        out = []
        for record in records:
            self.follower.apply([record])
            changes = []
            for row in self._agg_rows(self.follower.changed_rows()):
                changes.append(self._change(row_id(row), row.values, row.aggregation, False))
            for trow in self._table_rows(self.follower.changed_table_rows()):
                changes.append(self._change(table_row_id(trow), trow.values, trow.table, True))
            changes = [c for c in changes if c.before != c.after]
            if changes:
                out.append(TracedEvent(record, tuple(changes)))
        return out

    def _change(self, row: RowId, values: tuple[Value, ...], state: str, table: bool) -> Change:
        schema = self.targets[state].schema
        before = self.rows.get(row)
        self.rows[row] = values
        return Change(
            row,
            tuple(c.name for c in schema.columns),
            tuple(c.name for c in schema.group_by),
            before,
            values,
        )


def row_id(row: AggRow) -> RowId:
    return (row.aggregation, row.duration.value, row.agg_timestamp_ms, row.key)


def table_row_id(row: TableRow) -> RowId:
    return (row.table, "", 0, row.key)
