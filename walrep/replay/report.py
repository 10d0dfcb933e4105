"""What ``walrep replay state`` reports about an engine: digest, apps, query answers.

The digest is ``Engine.digest()``: the same bytes a snapshot stores and the node's
digest chain hashes, so a replay's digest at N equals the node's at N. Rows are printed
as the Store Query API answers them (``walrep.query.evaluate.run_query``, the code the
node's ``POST /stores/query`` runs), so a replayed answer is comparable with a live one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from walrep.engine.app import App
from walrep.engine.core import Engine
from walrep.query.evaluate import run_query
from walrep.replay.errors import ReplayError

ALL_TIME: Final = "within 0L, 9223372036854775807L"


def app_summary(engine: Engine, app: App) -> dict[str, Any]:
    """One app's state in numbers: stream counters, rows per aggregation and duration."""
    aggregations = {}
    for spec in app.aggregations:
        state = engine.aggregation(spec.name)
        aggregations[spec.name] = {d.value: state.row_count(d) for d in state.durations}
    tables = {spec.name: engine.table(spec.name).row_count() for spec in app.tables}
    return {
        "version": app.version,
        "streams": engine.stream_counters(app.name),
        "aggregation_rows": aggregations,
        "table_rows": tables,
    }


def pick_app(apps: Sequence[App], name: str | None) -> list[App]:
    if name is None:
        return list(apps)
    found = [a for a in apps if a.name == name]
    if not found:
        raise ReplayError(f"no app {name!r} here (the apps: {sorted(a.name for a in apps)})")
    return found


def owner_of(apps: Sequence[App], aggregation: str) -> App:
    """The app that declares ``aggregation`` (or a table of that name)."""
    for app in apps:
        names = [s.name for s in app.aggregations] + [t.name for t in app.tables]
        if aggregation in names:
            return app
    known = sorted(s.name for a in apps for s in a.aggregations)
    raise ReplayError(f"no aggregation {aggregation!r} in the apps (they have: {known})")


def aggregation_query(engine: Engine, aggregation: str, per: str) -> str:
    """The Store Query that selects every stored column of every row of ``per``."""
    schema = next((s for s in engine.schemas() if s.name == aggregation), None)
    if schema is None:
        raise ReplayError(f"{aggregation!r} is not an aggregation")
    columns = [
        "AGG_TIMESTAMP",
        *(c.name for c in schema.group_by),
        *(c.name for c in schema.columns),
    ]
    return f"from {aggregation} {ALL_TIME} per '{per}' select {', '.join(columns)}"


def query_answer(
    engine: Engine, apps: Sequence[App], aggregation: str, query: str
) -> dict[str, Any]:
    """``{"records": [...]}`` as ``POST /stores/query`` answers ``query``."""
    app = owner_of(apps, aggregation)
    return {
        "appName": app.name,
        "query": query,
        "records": run_query(engine, apps, app.name, query),
    }
