"""A walrep node in its own process, for tests that SIGKILL, SIGSTOP or restart it.

    python -m tests.e2e.node_main '<json spec>'

The spec (built by ``cluster.NodeProcess``) names the group, node id, settings changes
(``cluster.node_settings``), data directory, store (``tests.services.sql_store``: the
test's SQLite file, or MariaDB / PostgreSQL), event-sync port (0: any) and ``rcvbuf`` (a
small kernel receive buffer on the event-sync port, so that a stopped node makes its
peer's buffers fill soon). It runs a ``walrep.node.runtime.Node`` and prints, flushed:

    READY <host> <port>            once the event-sync port is bound
    ROLE <role> <epoch>            whenever the role or epoch changes
    ACKED <id> <base> <end>        an append acknowledged (committed under the lease)
    FAILED <id> <error class>      an append refused
    STOPPED                        after SIGTERM stopped the node (exit status 0)

Commands on stdin, one a line: ``append <id> <count> <tag>`` (one batch) and
``publish <tasks>`` (that many publishers of single events without pause; their acks
are printed with ids ``w<task>-<n>``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from tests.e2e.cluster import events, node_settings
from tests.services import sql_store
from walrep.errors import WalrepError
from walrep.node.runtime import Node


def say(*words: object) -> None:
    print(*words, flush=True)


async def append(node: Node, rid: str, count: int, tag: str) -> bool:
    try:
        result = await node.append(events(count, tag))
    except WalrepError as e:
        say("FAILED", rid, type(e).__name__)
        return False
    say("ACKED", rid, result.base_offset, result.end_offset)
    return True


async def publisher(node: Node, task: int) -> None:
    n = 0
    while True:
        n += 1
        if not await append(node, f"w{task}-{n}", 1, f"w{task}"):
            await node.wait_until(lambda nd: nd.role.value == "ACTIVE", 3600)


async def watch_role(node: Node) -> None:
    while True:
        last = (node.role.value, node.epoch)
        say("ROLE", *last)

        def changed(n: Node, was: tuple[str, int] = last) -> bool:
            return (n.role.value, n.epoch) != was

        await node.wait_until(changed, 3600)


async def commands(node: Node, tasks: set[asyncio.Task[Any]]) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        words = line.decode().split()
        if not words:
            continue
        if words[0] == "append":
            tasks.add(asyncio.create_task(append(node, words[1], int(words[2]), words[3])))
        elif words[0] == "publish":
            for t in range(int(words[1])):
                tasks.add(asyncio.create_task(publisher(node, t)))


async def main(spec: dict[str, Any]) -> None:
    settings = node_settings(spec["group"], spec["node_id"], spec["settings"])
    store = sql_store(
        spec["backend"], Path(spec["store_dir"]), call_timeout_ms=settings.call_timeout_ms
    )
    node = Node(
        settings, spec["data_dir"], store, listen=("127.0.0.1", spec["port"]), own_store=True
    )
    done = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
    await node.start()
    if spec["rcvbuf"]:  # accepted connections inherit it from the listening socket
        server = node._server  # nothing public exposes the listening socket
        assert server is not None
        server.sockets[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, spec["rcvbuf"])
    assert node.address is not None
    say("READY", *node.address)
    tasks: set[asyncio.Task[Any]] = set()
    tasks.add(asyncio.create_task(watch_role(node)))
    tasks.add(asyncio.create_task(commands(node, tasks)))
    await done.wait()
    await node.stop()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    say("STOPPED")


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
