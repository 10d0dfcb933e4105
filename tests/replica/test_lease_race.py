"""Two nodes racing for the lease 1,000 times on each backend, on separate connections.

Each round both nodes ask, at the same moment, to move the lease from the epoch they
both observed; the winner then records the loser in-sync (so both are eligible next
round) and releases. Never may two nodes win one epoch, and epochs strictly increase.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path

import pytest

from tests.services import sql_store
from walrep.replica.store import CoordinationStore, MemoryStore

ROUNDS = 1000
TTL_MS = 60_000


async def race(stores: dict[str, CoordinationStore], group: str) -> list[tuple[int, str]]:
    winners: list[tuple[int, str]] = []
    epoch = 0
    rng = random.Random(7)
    for _ in range(ROUNDS):
        order = rng.sample(sorted(stores), k=len(stores))  # who starts first varies by round
        results = await asyncio.gather(
            *(stores[node].try_acquire(group, node, epoch, TTL_MS) for node in order)
        )
        won = [(seen.epoch, node) for node, (ok, seen) in zip(order, results, strict=True) if ok]
        assert len(won) == 1, f"round from epoch {epoch}: winners {won}"
        new_epoch, winner = won[0]
        assert new_epoch == epoch + 1
        loser = next(node for node in stores if node != winner)
        assert await stores[winner].set_in_sync(group, winner, new_epoch, loser, True, TTL_MS)
        assert await stores[winner].release(group, winner, new_epoch)
        winners.append(won[0])
        epoch = new_epoch
    return winners


@pytest.mark.parametrize("backend", ["memory", "sqlite", "mariadb", "postgresql"])
async def test_two_nodes_racing_never_share_an_epoch(backend: str, tmp_path: Path) -> None:
    group = f"race-{uuid.uuid4().hex[:12]}"
    if backend == "memory":
        shared = MemoryStore(lambda: 0)
        stores: dict[str, CoordinationStore] = {"a": shared, "b": shared}
    else:
        stores = {"a": sql_store(backend, tmp_path), "b": sql_store(backend, tmp_path)}
    for store in stores.values():
        await store.setup()
    try:
        winners = await race(stores, group)
        epochs = [epoch for epoch, _ in winners]
        assert epochs == list(range(1, ROUNDS + 1))
        assert {node for _, node in winners} == {"a", "b"}, "both nodes should win some rounds"
        history = await stores["a"].history(group, limit=ROUNDS + 1)
        assert sorted(row.epoch for row in history) == epochs, "one history row per epoch"
    finally:
        for store in {id(s): s for s in stores.values()}.values():
            await store.close()
