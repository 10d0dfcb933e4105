"""On SQLite, a store transaction never holds the database lock while its event loop is
busy: the other node's lease renewal does not wait for a loop it does not share.

A second real process publishes its node row in a loop while its event loop is kept
busy (callbacks of ``HOG_MS`` back to back, as a saturated node's are). Before the
transactions ran in a thread, each of its statements waited for that loop while the
file's write lock was held, and the renewals here waited hundreds of milliseconds.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from tests.services import sql_store

REPO = Path(__file__).resolve().parents[2]
HOG_MS = 60
RENEWALS = 30
CHILD = """
import asyncio, sys, time
from pathlib import Path
from tests.services import sql_store
from walrep.replica.store import NodeInfo

def hog(loop):
    end = time.monotonic() + {hog_ms} / 1000
    while time.monotonic() < end:
        pass
    loop.call_soon(hog, loop)

async def main():
    store = sql_store("sqlite", Path(sys.argv[1]))
    info = NodeInfo("busy", "PASSIVE", "127.0.0.1", 1, "", 0, 0)
    await store.publish_node("g", info)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    loop.call_soon(hog, loop)
    while True:
        await store.publish_node("g", info)

asyncio.run(main())
"""


async def test_a_busy_loop_elsewhere_does_not_delay_renewals(tmp_path: Path) -> None:
    store = sql_store("sqlite", tmp_path)
    await store.setup()
    won, _ = await store.try_acquire("g", "here", 0, 60_000)
    assert won
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD.format(hog_ms=HOG_MS),
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None
        assert (await child.stdout.readline()).strip() == b"ready"
        await asyncio.sleep(0.2)  # its busy loop runs
        worst_ms = 0.0
        for _ in range(RENEWALS):
            started = time.perf_counter()
            assert await store.renew("g", "here", 1, 60_000)
            worst_ms = max(worst_ms, (time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.02)
        assert child.returncode is None, "the busy publisher stopped"
    finally:
        child.kill()
        await child.wait()
        await store.close()
    assert worst_ms < 5 * HOG_MS, f"a renewal waited {worst_ms:.0f} ms for the other process"
