"""``walrep cluster switchover --admin URL,URL [--to NODE]``: a planned handover.

Finds the active among the nodes' admin APIs (``GET /active``), asks it to hand over
(``POST /switchover``, with ``Authorization: Bearer $WALREP_ADMIN_TOKEN``), then waits
for another node's ``/active`` to answer 200 and prints the timeline: ingest closed,
lease released, new active. Exit status: 0 done, 1 refused or not completed (the
message says why), 2 bad arguments.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

import aiohttp
import click

from walrep.client import get_json

WAIT_S = 30.0


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    status, body = await get_json(http, url)
    return status, body if isinstance(body, dict) else {}


async def switchover(admin: list[str], to: str | None, token: str | None) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=WAIT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        actives = [u for u in admin if (await _get(http, u + "/active"))[0] == 200]
        if len(actives) != 1:
            return {"ok": False, "message": f"{len(actives)} of {len(admin)} nodes are active"}
        old = actives[0]
        old_status = (await _get(http, old + "/status"))[1]
        started = time.monotonic()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        params = {"to": to} if to else {}
        async with http.post(old + "/switchover", headers=headers, params=params) as r:
            answer = await r.json(content_type=None)
            if r.status != 200:
                return {"ok": False, "message": f"{old}: {r.status}: {answer.get('message')}"}
        deadline = started + WAIT_S
        while time.monotonic() < deadline:
            for url in admin:
                if url != old and (await _get(http, url + "/active"))[0] == 200:
                    new_status = (await _get(http, url + "/status"))[1]
                    return {
                        "ok": True,
                        "from": old_status.get("node_id"),
                        "to": new_status.get("node_id"),
                        "old_epoch": answer.get("released_epoch"),
                        "new_epoch": new_status.get("epoch"),
                        "ingest_closed_ms": answer.get("ingest_closed_ms"),
                        "released_ms": answer.get("released_ms"),
                        "new_active_ms": round((time.monotonic() - started) * 1000, 1),
                    }
            await asyncio.sleep(0.02)
        return {"ok": False, "message": f"no other node became active in {WAIT_S} s"}


@click.command("switchover")
@click.option("--admin", required=True, help="Admin URLs of the nodes, comma-separated.")
@click.option("--to", "to", help="The node to hand over to (default: the in-sync standby).")
@click.option("--token-env", default="WALREP_ADMIN_TOKEN", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def switchover_cmd(admin: str, to: str | None, token_env: str, as_json: bool) -> None:
    """Hand the active role to the standby: nothing lost, no lease-expiry wait."""
    urls = [u.strip().rstrip("/") for u in admin.split(",") if u.strip()]
    if len(urls) < 2:
        raise click.UsageError("give the admin URLs of both nodes")
    result = asyncio.run(switchover(urls, to, os.environ.get(token_env) or None))
    if as_json:
        click.echo(json.dumps(result))
    elif result["ok"]:
        click.echo(
            f"switched {result['from']} (epoch {result['old_epoch']}) -> {result['to']} "
            f"(epoch {result['new_epoch']}): ingest closed after {result['ingest_closed_ms']} ms, "
            f"lease released after {result['released_ms']} ms, "
            f"new active after {result['new_active_ms']} ms"
        )
    if not result["ok"]:
        click.echo(f"walrep cluster switchover: {result['message']}", err=True)
        sys.exit(1)


async def failover(admin: list[str], to: str, force: bool, token: str | None) -> dict[str, Any]:
    """Ask node ``to`` (found by its /status) to take over: ``POST /takeover``."""
    timeout = aiohttp.ClientTimeout(total=WAIT_S)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        target = None
        for url in admin:
            status, body = await _get(http, url + "/status")
            if status == 200 and body.get("node_id") == to:
                target = url
        if target is None:
            return {"ok": False, "message": f"no node {to!r} answers at {', '.join(admin)}"}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        params = {"force": "true"} if force else {}
        async with http.post(target + "/takeover", headers=headers, params=params) as r:
            answer = await r.json(content_type=None)
            if r.status != 200:
                return {"ok": False, "message": f"{to}: {r.status}: {answer.get('message')}"}
        return {"ok": True, **answer}


@click.command("failover")
@click.option("--admin", required=True, help="Admin URLs of the nodes, comma-separated.")
@click.option("--to", "to", required=True, help="The node that should become the active.")
@click.option("--force", is_flag=True, help="Take over even if not in sync (may lose events).")
@click.option("--token-env", default="WALREP_ADMIN_TOKEN", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def failover_cmd(admin: str, to: str, force: bool, token_env: str, as_json: bool) -> None:
    """Make a standby the active when the active is gone; refused without --force (a
    forced takeover is recorded in the lease history with its possible loss)."""
    urls = [u.strip().rstrip("/") for u in admin.split(",") if u.strip()]
    result = asyncio.run(failover(urls, to, force, os.environ.get(token_env) or None))
    if as_json:
        click.echo(json.dumps(result))
    elif result["ok"]:
        click.echo(f"{result['node']} is the active under epoch {result['epoch']} (forced)")
    if not result["ok"]:
        click.echo(f"walrep cluster failover: {result['message']}", err=True)
        sys.exit(1)
