"""Peers that are not what they should be: garbage, oversized messages, wrong secret or
group, impostor passives, and TLS mismatches. Each time the honest side counts it,
closes, appends nothing, and still replicates with an honest peer afterwards."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import google_crc32c
import pytest

from tests.e2e.cluster import (
    GROUP,
    HOST,
    PASSIVE,
    SECRET,
    ActiveNode,
    Nodes,
    PassiveNode,
    events,
    frames_of,
    wait_until,
    within,
)
from walrep.replica import auth
from walrep.replica.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Ack,
    Challenge,
    Hello,
    HelloOk,
    Message,
    MessageReader,
    MessageType,
    encode,
)
from walrep.replica.passive_server import ReplicaSettings
from walrep.replica.shipper import ShipperConfig

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def replicates(active: ActiveNode, passive: PassiveNode, batches: int = 5) -> None:
    """The honest pair works: appends commit, the standby catches up, logs are equal."""
    await active.recorder.wait_recorded(True)
    for _ in range(batches):
        await active.append(events(100))
    assert passive.wal is not None
    await active.wait_caught_up(lambda: passive.wal.durable_end if passive.wal else -1)
    assert frames_of(passive.wal) == frames_of(active.wal)


async def read_message(reader: asyncio.StreamReader, messages: MessageReader) -> Message:
    while True:
        data = await reader.read(65536)
        assert data, "peer closed before sending a message"
        got = messages.feed(data)
        if got:
            return got[0]


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True once the peer closed (EOF or reset); ignores anything it sent before."""
    try:
        while await reader.read(65536):
            pass
    except ConnectionResetError:
        pass
    return True


class FakeServer:
    """A tiny asyncio server in the test, standing in for a passive."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> FakeServer:
        self.server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await within(self.server.wait_closed(), "fake server closes")


def crc_garbage(seed: int) -> bytes:
    """Random bytes behind a plausible length prefix: the CRC check must catch them."""
    body = random.Random(seed).randbytes(200)
    crc = google_crc32c.value(body) ^ 0x5A5A5A5A
    return struct.pack("<II", len(body), crc) + body


def framed(message_type: int, body: bytes) -> bytes:
    data = bytes([message_type]) + body
    return struct.pack("<II", len(data), google_crc32c.value(data)) + data


# --- garbage at the passive -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "metric"),
    [
        (crc_garbage(1), "replication_errors_malformed"),
        (random.Random(2).randbytes(4096), "replication_errors_malformed"),
        (framed(MessageType.HELLO, b"{not json"), "replication_errors_malformed"),
        (encode(Ack(10, 1, 0)), "replication_errors_protocol"),  # well formed, before Hello
    ],
    ids=["bad-crc", "random", "bad-json", "ack-before-hello"],
)
async def test_garbage_to_passive_is_closed_and_counted(
    nodes: Nodes, payload: bytes, metric: str
) -> None:
    settings = ReplicaSettings(GROUP, PASSIVE, SECRET, idle_timeout_ms=60_000)
    passive = await nodes.passive(settings=settings)
    assert passive.server is not None
    reader, writer = await asyncio.open_connection(HOST, passive.port)
    assert isinstance(await read_message(reader, MessageReader()), Challenge)
    writer.write(payload)
    await within(closed_by_peer(reader), "the passive closes a garbage connection", 2.0)
    writer.close()
    await wait_until(
        lambda: passive.server is not None and passive.server.metrics[metric] == 1, metric
    )
    assert passive.wal is not None and passive.wal.log_end == 0

    await replicates(nodes.active(passive.address), passive)


async def test_oversized_length_prefix_is_closed_at_once(nodes: Nodes) -> None:
    settings = ReplicaSettings(GROUP, PASSIVE, SECRET, idle_timeout_ms=60_000)
    passive = await nodes.passive(settings=settings)
    assert passive.server is not None
    reader, writer = await asyncio.open_connection(HOST, passive.port)
    assert isinstance(await read_message(reader, MessageReader()), Challenge)
    # Only the 8-byte prefix: the server must decide on it alone, without any body.
    writer.write(struct.pack("<II", DEFAULT_MAX_MESSAGE_BYTES + 1, 0))
    await within(closed_by_peer(reader), "closed on the prefix alone", 2.0)
    writer.close()
    assert passive.server.metrics["replication_errors_malformed"] == 1

    await replicates(nodes.active(passive.address), passive)


# --- garbage and impostors at the active ------------------------------------------------------


async def test_garbage_passive_is_counted_and_the_link_reconnects(nodes: Nodes) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(crc_garbage(fake.connections))
        await writer.drain()
        await closed_by_peer(reader)

    passive = await nodes.passive()
    async with FakeServer(garbage) as fake:

        async def address() -> tuple[str, int]:
            return (HOST, fake.port) if fake.connections < 3 else (HOST, passive.port)

        active = nodes.active(address)
        await active.append(events(10))  # not in sync yet: committed locally
        await replicates(active, passive)
    assert fake.connections == 3
    assert active.link.metrics["replication_errors_malformed"] == 3


def impostor(secret: bytes, node: str) -> tuple[Handler, list[str]]:
    """A fake passive: a real challenge, then a HelloOk with a proof made with ``secret``.
    Returns the handler and the list of message types it received after its HelloOk."""
    after: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        messages = MessageReader()
        nonce = os.urandom(auth.NONCE_BYTES)
        writer.write(encode(Challenge(node, nonce)))
        hello = await read_message(reader, messages)
        if not isinstance(hello, Hello):
            return
        proof = auth.proof(secret, "passive", hello.group, hello.node, node, nonce, hello.nonce)
        writer.write(encode(HelloOk(node, 0, 0, 0, 0, proof)))
        while data := await reader.read(65536):
            after.extend(type(m).__name__ for m in messages.feed(data))

    return handle, after


@pytest.mark.parametrize(
    ("secret", "node", "metric"),
    [
        (b"not the secret", PASSIVE, "replication_rejected_auth"),
        (SECRET, "q", "replication_wrong_peer"),  # right secret, not the expected standby
    ],
    ids=["wrong-proof", "wrong-node"],
)
async def test_impostor_passive_is_refused(
    nodes: Nodes, secret: bytes, node: str, metric: str
) -> None:
    handle, after = impostor(secret, node)
    async with FakeServer(handle) as fake:

        async def address() -> tuple[str, int]:
            return HOST, fake.port

        active = nodes.active(address)
        for _ in range(3):
            await active.append(events(10))
        await wait_until(lambda: active.link.metrics[metric] >= 2, f"{metric} twice")
        await active.close()
    assert after == []  # no Append, Truncate or Heartbeat ever went to the impostor
    assert active.recorder.records() == []


# --- wrong secret, wrong group at the passive -------------------------------------------------


@pytest.mark.parametrize(
    ("group", "secret", "metric"),
    [
        (GROUP, b"wrong secret", "replication_rejected_auth"),
        ("another-group", SECRET, "replication_rejected_wrong_group"),
    ],
    ids=["wrong-secret", "wrong-group"],
)
async def test_passive_rejects_wrong_secret_or_group(
    nodes: Nodes, group: str, secret: bytes, metric: str
) -> None:
    passive = await nodes.passive()
    assert passive.server is not None and passive.wal is not None
    server = passive.server
    active = nodes.active(passive.address, settings=ReplicaSettings(group, "a", secret))
    for _ in range(3):
        await active.append(events(10))  # never in sync: committed locally
    await wait_until(
        lambda: (
            server.metrics[metric] >= 2 and active.link.metrics["replication_peer_refused"] >= 2
        ),
        f"{metric} at the passive, refusal counted at the active",
    )
    await active.close()
    assert passive.wal.log_end == 0 and frames_of(passive.wal) == []
    assert active.recorder.records() == []
    assert active.shipper.acked == 0


# --- TLS ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command line is required for the TLS tests"
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2"),
            *("-subj", "/CN=walrep-test", "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
def tls(certificate: tuple[Path, Path]) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = certificate
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))  # verifies chain and IP
    return server, client


@pytest.fixture
async def tls_passive(
    nodes: Nodes, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> AsyncIterator[PassiveNode]:
    yield await nodes.passive(ssl_context=tls[0])


async def test_tls_replication(
    nodes: Nodes, tls_passive: PassiveNode, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    active = nodes.active(tls_passive.address, ssl_context=tls[1])
    await replicates(active, tls_passive)
    assert active.link._writer is not None
    assert active.link._writer.get_extra_info("ssl_object") is not None


async def test_plain_link_against_tls_server_does_not_replicate(
    nodes: Nodes, tls_passive: PassiveNode, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    config = ShipperConfig(standby_timeout_ms=200)
    plain = nodes.active(tls_passive.address, name="plain", config=config)
    await plain.append(events(10))
    await wait_until(
        lambda: plain.link.metrics["replication_standby_timeout"] >= 2, "plain link gives up twice"
    )
    await plain.close()
    assert tls_passive.wal is not None and tls_passive.wal.log_end == 0
    assert plain.recorder.records() == []

    await replicates(nodes.active(tls_passive.address, ssl_context=tls[1]), tls_passive)


async def test_tls_link_against_plain_server_does_not_replicate(
    nodes: Nodes, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    passive = await nodes.passive()
    assert passive.server is not None and passive.wal is not None
    server = passive.server
    tls_link = nodes.active(passive.address, name="tls", ssl_context=tls[1])
    await tls_link.append(events(10))
    await wait_until(
        lambda: (
            server.metrics["replication_errors_malformed"] >= 2
            and tls_link.link.metrics["replication_connect_failures"] >= 2
        ),
        "ClientHello is garbage to the plain server; the TLS handshake fails",
    )
    await tls_link.close()
    assert passive.wal.log_end == 0

    await replicates(nodes.active(passive.address), passive)


async def test_untrusted_certificate_is_refused_by_the_link(
    nodes: Nodes, tls_passive: PassiveNode
) -> None:
    untrusting = ssl.create_default_context()  # system CAs only: the self-signed cert fails
    active = nodes.active(tls_passive.address, ssl_context=untrusting)
    await active.append(events(10))
    await wait_until(
        lambda: active.link.metrics["replication_connect_failures"] >= 2, "handshake refused"
    )
    await active.close()
    assert tls_passive.wal is not None and tls_passive.wal.log_end == 0
