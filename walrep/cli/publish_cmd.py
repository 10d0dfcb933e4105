"""``walrep publish``: send events to the pair through ``walrep.client``.

Events come from NDJSON (a file, or ``-`` for stdin; one ``{"stream", "attributes"}``
object a line) or from the seeded API-M generator (``--generate apim``), paced at
``--rate`` events per second of wall time. The token is read from the variable
``--token-env`` (default ``WALREP_INGEST_TOKEN``). Exit status: 0 all acknowledged,
1 a publish failed (the message says whether retrying may help), 2 bad arguments.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import click
import orjson

from walrep.client import Client, PublishError


def _urls(value: str | None) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()] if value else []


def _ndjson(stream: IO[bytes]) -> Iterator[dict[str, Any]]:
    for n, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise click.UsageError(f"line {n} is not JSON: {e}") from None
        if not isinstance(event, dict):
            raise click.UsageError(f"line {n} is not a JSON object")
        yield event


@click.command("publish")
@click.argument("source", required=False, type=click.File("rb"))
@click.option("--to", "to", help="Ingest URLs of the nodes, comma-separated.")
@click.option("--admin", help="Or: admin URLs of the nodes (the active's ingest is found).")
@click.option("--token-env", default="WALREP_INGEST_TOKEN", show_default=True)
@click.option("--producer-id", help="Idempotent producer id (retries never duplicate).")
@click.option("--batch", default=500, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--generate", type=click.Choice(["apim"]), help="Events from a generator.")
@click.option("--count", default=10_000, show_default=True, type=click.IntRange(1))
@click.option("--rate", default=0.0, type=click.FloatRange(0), help="Events/s (0: no pacing).")
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="A JSON summary on stdout.")
def publish(
    source: IO[bytes] | None,
    to: str | None,
    admin: str | None,
    token_env: str,
    producer_id: str | None,
    batch: int,
    generate: str | None,
    count: int,
    rate: float,
    seed: int,
    as_json: bool,
) -> None:
    """Publish NDJSON events (SOURCE, or - for stdin) or generated API-M traffic."""
    if not (to or admin):
        raise click.UsageError("give --to (ingest URLs) or --admin (admin URLs)")
    if (source is None) == (generate is None):
        raise click.UsageError("give exactly one of SOURCE or --generate")
    token = os.environ.get(token_env) or None
    if generate is not None:
        from walrep.apim.generator import ApimGenerator

        gen = ApimGenerator(seed)
        events: Iterator[Any] = ({"stream": s, "attributes": a} for s, a in gen.events(count))
    else:
        assert source is not None
        events = _ndjson(source)
    client = Client(
        _urls(to), admin=_urls(admin), token=token, producer_id=producer_id,
        max_batch_events=batch,
    )  # fmt: skip
    summary = asyncio.run(_run(client, events, batch, rate))
    if as_json:
        click.echo(json.dumps(summary))
    else:
        span = f"offsets {summary['first']}..{summary['last']}" if summary["events"] else ""
        click.echo(
            f"published {summary['events']} events {span} in {summary['seconds']:.2f} s "
            f"({summary['events_per_s']:,.0f}/s), {summary['failovers']} endpoint changes"
        )
    if summary["error"]:
        click.echo(f"walrep publish: {summary['error']}", err=True)
        sys.exit(1)


async def _run(client: Client, events: Iterator[Any], batch: int, rate: float) -> dict[str, Any]:
    started = time.monotonic()
    sent, first, last, error = 0, None, None, None
    try:
        chunk: list[Any] = []
        for event in events:
            chunk.append(event)
            if len(chunk) == batch:
                offsets = await client.publish(chunk)
                first = offsets[0] if first is None else first
                last, sent, chunk = offsets[-1], sent + len(offsets), []
                if rate:
                    await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
        if chunk:
            offsets = await client.publish(chunk)
            first = offsets[0] if first is None else first
            last, sent = offsets[-1], sent + len(offsets)
    except PublishError as e:
        retry = "retriable: publishing again may succeed" if e.retriable else "not retriable"
        error = f"{e} ({retry}; {sent} events were acknowledged before)"
    finally:
        await client.close()
    seconds = time.monotonic() - started
    return {
        "events": sent,
        "first": first,
        "last": last,
        "seconds": seconds,
        "events_per_s": sent / seconds if seconds else 0.0,
        "failovers": client.failovers,
        "error": error,
    }
