"""A passive node in its own process, for tests that SIGKILL or SIGSTOP it.

    python -m tests.e2e.passive_main <log directory> <port> [buffer_bytes_max [rcvbuf]]

The secret comes from ``WALREP_TEST_SECRET``. Prints ``READY <host> <port>`` once
listening (``rcvbuf``: a small kernel receive buffer, so that a stopped passive makes
the active's buffers fill quickly); on SIGTERM it stops the server, closes the log and exits 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

from walrep.log.wal import Wal
from walrep.replica.passive_server import PassiveServer, ReplicaSettings


async def main(directory: Path, port: int, buffer_bytes_max: int, rcvbuf: int) -> None:
    wal = Wal.open(directory)
    extra = {"buffer_bytes_max": buffer_bytes_max} if buffer_bytes_max else {}
    settings = ReplicaSettings("g", "p", os.environ["WALREP_TEST_SECRET"].encode(), **extra)
    server = PassiveServer(wal, settings)
    host, bound = await server.start("127.0.0.1", port)
    if rcvbuf:  # accepted connections inherit it from the listening socket
        assert server._server is not None
        server._server.sockets[0].setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    done = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, done.set)
    print(f"READY {host} {bound}", flush=True)
    await done.wait()
    await server.stop()
    await wal.aclose()


if __name__ == "__main__":
    args = [*sys.argv[1:], "0", "0"]
    asyncio.run(main(Path(args[0]), int(args[1]), int(args[2]), int(args[3])))
