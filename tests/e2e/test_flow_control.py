"""Flow control without a slow disk: a passive that never acknowledges (the window must
hold exactly) and a passive whose buffer holds one maximal frame (the stream must still
finish).

``test_in_flight_bytes_never_exceed_window_bytes`` found a core bug at commit 502737b:
``Shipper._read_more`` asked for a read whenever there was any room and a read returns at
least one whole frame, so the bytes in flight overshot ``window_bytes`` by up to a frame
(264715 > 262144 here). The shipper now holds a read back until it fits; this guards it.
"""

from __future__ import annotations

import asyncio
import os

from tests.e2e.cluster import (
    HOST,
    PASSIVE,
    SECRET,
    Cluster,
    caught_up,
    events,
    frames_of,
    shipper,
    until,
    within,
)
from walrep.log.frame import HEADER_SIZE
from walrep.replica.messages import MessageReader, encode
from walrep.replica.receiver import AppendFrames, Authenticated, Receiver, ReceiverAction, Send


class SilentPassive:
    """An honest passive (the real ``Receiver`` core) that takes Appends and never
    reports them durable: nothing is ever acknowledged, so the window fills."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.received_bytes = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        receiver = Receiver(self.group, PASSIVE, SECRET, os.urandom(16), buffer_bytes_max=1 << 40)
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


async def test_in_flight_bytes_never_exceed_window_bytes(cluster: Cluster) -> None:
    window = 256 * 1024
    silent = SilentPassive(cluster.group)
    server = await asyncio.start_server(silent.serve, HOST, 0)
    try:
        shipper_config = {"window_bytes": window, "standby_timeout_ms": 60_000}
        active = await cluster.active(shipper=shipper_config)
        await cluster.publish_fake(PASSIVE, server.sockets[0].getsockname()[1])
        batch = events(200, pad=128)  # frames of ~40 KiB: 256 KiB is not a multiple
        for _ in range(12):  # out of sync: committed locally, shipped within the window
            await active.append(batch)
        frame = len(active.log.encode(batch).payload)

        def window_used_up(_: object) -> bool:
            s = shipper(active)
            # A read that did not fit is held back (a positive sign nothing more goes out).
            held = s._unfit_bytes > window - s._in_flight_bytes
            return held and silent.received_bytes == s._in_flight_bytes > window - frame

        await until(active, window_used_up, "the window is used up, everything sent arrived")
        in_flight = shipper(active)._in_flight_bytes
        assert in_flight <= window, f"{in_flight} bytes in flight, window_bytes is {window}"
    finally:
        await cluster.close()
        server.close()
        await server.wait_closed()


async def test_one_frame_receiver_buffer_completes_a_large_stream(cluster: Cluster) -> None:
    """The passive's buffer holds one maximal frame (the least the settings allow) while
    each Append carries up to a MiB of frames: it reads one message at a time, and the
    whole stream arrives."""
    log = {"max_batch_bytes": 64 * 1024, "max_event_bytes": 4096}
    active = await cluster.active(log=log)
    buffer = HEADER_SIZE + 64 * 1024 + 4
    passive = await cluster.passive(log=log, receiver_buffer_bytes_max=buffer)
    await until(active, lambda n: shipper(n).standby is not None, "the passive is found")
    batch = events(300, pad=64)  # about 50 KiB: fits max_batch_bytes
    await within(asyncio.gather(*(active.append(batch) for _ in range(40))), "large stream")
    await caught_up(active, passive)
    assert active.log.log_end == 12_000
    assert frames_of(passive.log) == frames_of(active.log)
