"""Text output of ``walrep replay`` (what ``--json`` prints as JSON), with rich.

Each printer takes the command's JSON document, so text and JSON say the same thing.
"""

from __future__ import annotations

from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from walrep.replay.events import iso_ms

DURATIONS = ("seconds", "minutes", "hours", "days", "months", "years")


def print_state(console: Console, doc: dict[str, Any]) -> None:
    when = "interrupted at" if doc["interrupted"] else "state at"
    console.print(f"{when} offset {doc['offset']:,} (epoch {doc['epoch']}): digest {doc['digest']}")
    start = doc["start"]
    origin = f"snapshot {start['snapshot']}" if start["from"] == "snapshot" else "offset 0"
    console.print(
        f"replayed {doc['replayed']:,} records from {origin} (offset {start['offset']:,})"
    )
    for name, app in doc["apps"].items():
        console.print(f"\n[bold]{name}[/bold] version {app['version']}")
        table = Table("stream", "accepted", "rejected", "filtered", "errors")
        for stream, c in app["streams"].items():
            table.add_row(
                stream, *(f"{c[k]:,}" for k in ("accepted", "rejected", "filtered", "errors"))
            )
        console.print(table)
        rows = Table("state", *DURATIONS)
        for agg, per in app["aggregation_rows"].items():
            rows.add_row(
                agg,
                *(f"{per[d]:,}" if d in per else "-" for d in DURATIONS),
            )
        for t, n in app["table_rows"].items():
            rows.add_row(f"{t} (table)", f"{n:,}", "", "", "", "", "")
        console.print(rows)
    if "query" in doc:
        q = doc["query"]
        console.print(f"\n{q['query']}  ({len(q['records']):,} records)")
        for record in q["records"]:
            console.print(orjson.dumps(record).decode(), markup=False, highlight=False)
    for s in doc["skipped"]:
        console.print(f"[yellow]skipped[/yellow] offsets {s['from']}..{s['to'] - 1}: {s['reason']}")
    for note in doc["notes"]:
        console.print(f"note: {note}", markup=False)
    if "written" in doc:
        console.print(f"{doc['written']['rows']:,} rows written to {doc['written']['file']}")


def print_verify(console: Console, doc: dict[str, Any]) -> None:
    m = doc["mismatch"]
    if m is not None:
        console.print(
            f"[red]MISMATCH[/red] at offset {m['offset']} (epoch {m['epoch']}): "
            f"{m['recorded_by']}: {m['reason']}",
            highlight=False,
        )
    else:
        state = "interrupted" if doc["interrupted"] else "ok"
        console.print(
            f"{state}: {doc['checked']} recorded digests match the replay "
            f"of offsets {doc['start']['offset']:,}..{doc['applied']:,}"
        )
    against = doc.get("against")
    if against is not None:
        d = against["difference"]
        if d is not None:
            console.print(
                f"[red]DIFFERENT[/red] from {against['data']} at offset {d['offset']}: "
                f"{d['what']}: {d['left']!r} here, {d['right']!r} there",
                markup=False,
            )
        else:
            console.print(
                f"same as {against['data']} over offsets {against['from']:,}.."
                f"{against['to']:,} ({against['chain_entries_compared']} chain entries)"
            )
        for note in against["notes"]:
            console.print(f"note: {note}", markup=False)
    for note in doc["notes"]:
        console.print(f"note: {note}", markup=False)


def print_traced(doc: dict[str, Any]) -> None:
    out = Console(highlight=False, soft_wrap=True)
    out.print(
        f"offset {doc['offset']}  {doc['ingest_time']}  epoch {doc['epoch']}  "
        f"{doc['stream']} {orjson.dumps(doc['attributes']).decode()}",
        markup=False,
    )
    for c in doc["changes"]:
        where = c["state"] + (
            f" per {c['per']} bucket {iso_ms(c['bucket_ms'])}" if "per" in c else ""
        )
        before = "-" if c["before"] is None else orjson.dumps(c["before"]).decode()
        out.print(f"    {where}: {before} -> {orjson.dumps(c['after']).decode()}", markup=False)


def print_diff(console: Console, doc: dict[str, Any]) -> None:
    span = f"offsets {doc['from']:,}..{doc['to']:,}"
    if doc["identical"]:
        console.print(f"identical over {span}: {doc['versions']['a']} and {doc['versions']['b']}")
        return
    console.print(
        f"[red]DIFFERENT[/red] over {span}: first divergence at offset "
        f"{doc['first_divergence']}; {doc['rows_differing']:,} row writes and "
        f"{doc['outputs_differing']:,} outputs differ"
    )
    for ex in doc["row_examples"]:
        console.print(f"  row {orjson.dumps(ex).decode()}", markup=False, highlight=False)
    for ex in doc["output_examples"]:
        console.print(f"  output {orjson.dumps(ex).decode()}", markup=False, highlight=False)


def print_snapshots(console: Console, doc: dict[str, Any]) -> None:
    table = Table("id", "epoch", "offset", "created", "usable here", title=doc["store"])
    for row in doc["snapshots"]:
        created = iso_ms(row["created_ms"]) if "created_ms" in row else "-"
        table.add_row(row["id"], str(row["epoch"]), f"{row['offset']:,}", created, row["usable"])
    console.print(table)
