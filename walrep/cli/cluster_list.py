"""``walrep cluster list``: one line per node, from the database and each node's ``/status``.

The coordination database says who holds the lease under which epoch, which standby is
recorded in sync, and what every node last published (role, log end, heartbeat). Each
node's admin API (its published URL, ``GET /status``) says what it is doing now; a node
that does not answer is listed from its row alone and marked unreachable. Columns:

* ROLE: the node's own (``/status``), else the role it last published;
* EPOCH: the epoch the node is in (``/status``); for an unreachable holder, the lease's;
* LOG END: its durable log end;
* LAG: for a standby, events the active holds durably that it does not (active's durable
  end minus its own); for the active, events appended but not committed yet;
* IN SYNC: a standby recorded in sync under the current epoch (it may take over);
* HEARTBEAT: the age of its row in the database (stale: older than the lease TTL).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from walrep.client import get_json
from walrep.replica.lease import Observed
from walrep.replica.store import NodeRow


@dataclass(frozen=True, slots=True)
class NodeLine:
    node_id: str
    role: str
    epoch: int | None
    log_end: int
    lag_events: int | None
    in_sync: bool | None  # None: not a standby
    heartbeat_age_ms: int
    stale: bool
    reachable: bool
    admin_url: str

    def cells(self) -> list[str]:
        age = f"{self.heartbeat_age_ms} ms" + (" (stale)" if self.stale else "")
        sync = "-" if self.in_sync is None else ("yes" if self.in_sync else "no")
        return [
            self.node_id,
            self.role if self.reachable else f"{self.role} (unreachable)",
            "-" if self.epoch is None else str(self.epoch),
            str(self.log_end),
            "-" if self.lag_events is None else str(self.lag_events),
            sync,
            age,
        ]


HEADER = ["NODE", "ROLE", "EPOCH", "LOG END", "LAG", "IN SYNC", "HEARTBEAT"]


async def node_lines(
    lease: Observed,
    rows: list[NodeRow],
    in_sync: dict[str, int],
    lease_ttl_ms: int,
    timeout_ms: int,
) -> list[NodeLine]:
    """The rows of ``walrep cluster list``, each node's ``/status`` asked concurrently."""
    timeout = aiohttp.ClientTimeout(total=timeout_ms / 1000)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        answers = await asyncio.gather(*(_status(http, r.info.admin_url) for r in rows))
    live = {r.info.node_id: doc for r, doc in zip(rows, answers, strict=True) if doc}
    holder = lease.holder
    holder_doc = live.get(holder) if holder is not None else None
    holder_row = next((r for r in rows if r.info.node_id == holder), None)
    active_end: int | None = None
    if holder_doc is not None:
        active_end = int(holder_doc["durable_end"])
    elif holder_row is not None:
        active_end = holder_row.info.log_end
    lines = []
    for row in rows:
        info, doc = row.info, live.get(row.info.node_id)
        is_holder = info.node_id == holder
        log_end = int(doc["durable_end"]) if doc else info.log_end
        if is_holder:
            lag = int(doc["lag_events"]) if doc and doc.get("lag_events") is not None else None
        else:
            lag = None if active_end is None else max(0, active_end - log_end)
        epoch = int(doc["epoch"]) if doc else (lease.epoch if is_holder else None)
        lines.append(
            NodeLine(
                node_id=info.node_id,
                role=str(doc["role"]) if doc else info.role,
                epoch=epoch,
                log_end=log_end,
                lag_events=lag,
                in_sync=None if is_holder else in_sync.get(info.node_id) == lease.epoch,
                heartbeat_age_ms=row.heartbeat_age_ms,
                stale=row.heartbeat_age_ms > lease_ttl_ms,
                reachable=doc is not None,
                admin_url=info.admin_url,
            )
        )
    return lines


async def _status(http: aiohttp.ClientSession, admin_url: str) -> dict[str, Any] | None:
    if not admin_url:
        return None
    status, doc = await get_json(http, admin_url.rstrip("/") + "/status")
    return doc if status == 200 and isinstance(doc, dict) else None


def line_json(line: NodeLine) -> dict[str, Any]:
    return asdict(line)
