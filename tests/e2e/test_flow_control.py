"""Flow control without a slow disk: a passive that never acknowledges (the window must
hold exactly) and a passive with a tiny receive buffer (the stream must still finish).

``test_in_flight_bytes_never_exceed_window_bytes`` found a core bug at commit 502737b:
``Shipper._read_more`` asked for a read whenever there was any room and a read returns at
least one whole frame, so the bytes in flight overshot ``window_bytes`` by up to a frame
(264715 > 262144 here). ``shipper.py`` in the working tree (changed by its owner while
these tests were written) holds a read back until it fits; this test guards that.
"""

from __future__ import annotations

import asyncio
import os

from tests.e2e.cluster import (
    GROUP,
    HOST,
    PASSIVE,
    SECRET,
    Nodes,
    events,
    frames_of,
    wait_until,
    within,
)
from walrep.replica.messages import MessageReader, encode
from walrep.replica.passive_server import ReplicaSettings
from walrep.replica.receiver import AppendFrames, Authenticated, Receiver, ReceiverAction, Send
from walrep.replica.shipper import ShipperConfig


class SilentPassive:
    """An honest passive (the real ``Receiver`` core) that takes Appends and never
    reports them durable: nothing is ever acknowledged, so the window fills."""

    def __init__(self) -> None:
        self.received_bytes = 0
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        receiver = Receiver(GROUP, PASSIVE, SECRET, os.urandom(16), buffer_bytes_max=1 << 40)
        messages = MessageReader()

        def run(actions: list[ReceiverAction]) -> None:
            for action in actions:
                if isinstance(action, Send):
                    writer.write(encode(action.message))
                elif isinstance(action, Authenticated):
                    run(
                        receiver.accept(
                            log_end=0,
                            last_epoch=0,
                            last_epoch_start=0,
                            committed=0,
                            highest_epoch=0,
                        )
                    )
                elif isinstance(action, AppendFrames):
                    self.received_bytes += len(action.frames)

        run(receiver.connected())
        try:
            while data := await reader.read(65536):
                for message in messages.feed(data):
                    run(receiver.received(message))
        finally:
            writer.close()

    async def address(self) -> tuple[str, int]:
        return HOST, self.port


async def test_in_flight_bytes_never_exceed_window_bytes(nodes: Nodes) -> None:
    window = 256 * 1024
    silent = SilentPassive()
    server = await asyncio.start_server(silent.serve, HOST, 0)
    silent.port = server.sockets[0].getsockname()[1]
    try:
        config = ShipperConfig(window_bytes=window, standby_timeout_ms=60_000)
        active = nodes.active(silent.address, config=config)
        batch = events(200, pad=128)  # frames of ~40 KiB: 256 KiB is not a multiple
        for _ in range(12):  # out of sync: committed locally, shipped within the window
            await active.append(batch)
        frame = len(active.wal.encode(batch).payload)
        await wait_until(
            lambda: silent.received_bytes == active.shipper._in_flight_bytes > window - frame,
            "the window is used up and everything sent has arrived",
        )
        await asyncio.sleep(0.2)  # proving an absence: nothing more is sent
        in_flight = active.shipper._in_flight_bytes
        assert in_flight == silent.received_bytes
        assert in_flight <= window, f"{in_flight} bytes in flight, window_bytes is {window}"
    finally:
        await nodes.close()
        server.close()
        await server.wait_closed()


async def test_tiny_receiver_buffer_completes_a_large_stream(nodes: Nodes) -> None:
    settings = ReplicaSettings(GROUP, PASSIVE, SECRET, buffer_bytes_max=4096)
    passive = await nodes.passive(settings=settings)
    active = nodes.active(passive.address)
    await active.recorder.wait_recorded(True)
    batch = events(1000, pad=16)  # each frame alone is far over the passive's buffer
    await within(asyncio.gather(*(active.append(batch) for _ in range(40))), "large stream")
    assert passive.wal is not None
    await active.wait_caught_up(lambda: passive.wal.durable_end if passive.wal else -1)
    assert active.wal.log_end == 40_000
    assert frames_of(passive.wal) == frames_of(active.wal)
