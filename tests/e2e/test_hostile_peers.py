"""Peers that are not what they should be: garbage, oversized messages, idle floods,
wrong secret or group, impostor passives, and TLS mismatches. Each time the honest side
counts it, closes, appends nothing, and still replicates with its honest peer.

Hostile actives live in a coordination universe of their own (``Cluster.elsewhere``: a
lease of their own, and a node row pointing at the real passive); impostor passives are
found by the real active through a fake node row (``store.publish_node``).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import ssl
import struct
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import google_crc32c
import pytest

from tests.e2e.cluster import (
    HOST,
    PASSIVE,
    SECRET,
    Cluster,
    caught_up,
    events,
    frames_of,
    in_sync,
    link_is_tls,
    problems,
    shipper,
    until,
    within,
)
from walrep.node.runtime import Node
from walrep.node.settings import PREAUTH_MESSAGE_BYTES_MAX
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

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def replicates(active: Node, passive: Node, batches: int = 5) -> None:
    """The honest pair works: appends commit, the standby catches up, logs are equal."""
    await until(active, in_sync, "the passive is recorded in sync")
    for _ in range(batches):
        await active.append(events(100))
    await caught_up(active, passive)
    assert frames_of(passive.log) == frames_of(active.log)


async def pair(cluster: Cluster, **passive_kwargs: object) -> tuple[Node, Node]:
    """An honest active and its passive, in sync."""
    active = await cluster.active()
    passive = await cluster.passive(**passive_kwargs)  # type: ignore[arg-type]
    await until(active, in_sync, "the passive is recorded in sync")
    return active, passive


async def read_message(reader: asyncio.StreamReader, messages: MessageReader) -> Message | None:
    """The next message, or None if the peer closed first."""
    while True:
        try:
            data = await reader.read(65536)
        except ConnectionResetError:
            return None
        if not data:
            return None
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


async def challenged(passive: Node) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw connection to the passive's event-sync port that got its Challenge."""
    assert passive.address is not None
    reader, writer = await asyncio.open_connection(*passive.address)
    assert isinstance(await read_message(reader, MessageReader()), Challenge)
    return reader, writer


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
    cluster: Cluster, payload: bytes, metric: str
) -> None:
    active, passive = await pair(cluster)
    reader, writer = await challenged(passive)
    writer.write(payload)
    await within(closed_by_peer(reader), "the passive closes a garbage connection")
    writer.close()
    await until(passive, lambda n: n.core_.metrics[metric] == 1, metric)
    assert passive.log.log_end == 0
    await replicates(active, passive)
    assert active.core_.metrics["replication_standby_lost"] == 0  # the honest link stayed


@pytest.mark.parametrize(
    "length",
    [PREAUTH_MESSAGE_BYTES_MAX + 1, DEFAULT_MAX_MESSAGE_BYTES + 1],
    ids=["over-the-pre-auth-limit", "over-the-message-limit"],
)
async def test_oversized_length_prefix_is_closed_at_once(cluster: Cluster, length: int) -> None:
    """Before authentication a message may be at most 4 KiB (a Hello is a few hundred
    bytes): an unauthenticated peer cannot make the passive buffer a 16 MiB message."""
    active, passive = await pair(cluster)
    reader, writer = await challenged(passive)
    # Only the 8-byte prefix: the passive must decide on it alone, without any body.
    writer.write(struct.pack("<II", length, 0))
    await within(closed_by_peer(reader), "closed on the prefix alone")
    writer.close()
    await until(passive, lambda n: n.core_.metrics["replication_errors_malformed"] == 1, "counted")
    await replicates(active, passive)


async def test_connection_cap_and_handshake_deadline(cluster: Cluster) -> None:
    """Ten idle raw connections at a passive that serves four: six are refused at once,
    the four silent ones are closed after the handshake timeout, and then the real active
    (whose peer lookup waited until the flood was in) connects and replicates."""
    cap, handshake_ms = 4, 1000
    store = cluster.journaled()
    store.hold("nodes")  # the active looks for its peer only once the flood is in
    active = await cluster.active(store=store)
    passive = await cluster.passive(
        edges={"max_connections": cap, "handshake_timeout_ms": handshake_ms}
    )
    assert passive.address is not None
    address = passive.address

    async def idle() -> tuple[bool, float]:
        """(got a Challenge, seconds from connecting until the passive closed)."""
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(*address)
        challenge = await read_message(reader, MessageReader())
        await closed_by_peer(reader)
        writer.close()
        return challenge is not None, time.monotonic() - started

    flood = [asyncio.create_task(idle()) for _ in range(10)]
    await until(
        passive,
        lambda n: n.core_.metrics["replication_refused_connection_cap"] == 10 - cap,
        "the connections over the cap are refused",
    )
    outcomes = await within(asyncio.gather(*flood), "every idle connection is closed")
    served = [seconds for challenged_, seconds in outcomes if challenged_]
    assert len(served) == cap
    assert min(served) >= handshake_ms / 1000, served  # closed at the deadline, not before
    assert passive.core_.metrics["replication_deadline_closes"] == cap

    store.unhold("nodes")
    await replicates(active, passive)
    assert passive.core_.receiving.open_count() == 1  # the active's, and only it


# --- garbage and impostors at the active ------------------------------------------------------


async def test_garbage_passive_is_counted_and_the_active_reconnects(cluster: Cluster) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(crc_garbage(fake.connections))
        await writer.drain()
        await closed_by_peer(reader)

    active = await cluster.active()
    async with FakeServer(garbage) as fake:
        await cluster.publish_fake(PASSIVE, fake.port)
        await active.append(events(10))  # nobody in sync: committed locally
        await until(active, lambda _: fake.connections >= 3, "three garbage sessions")
        passive = await cluster.passive()  # its node row replaces the fake one
        await replicates(active, passive)
    assert active.core_.metrics["replication_errors_malformed"] == fake.connections


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
        (SECRET, "q", "replication_wrong_peer"),  # right secret, not the standby of the row
    ],
    ids=["wrong-proof", "wrong-node"],
)
async def test_impostor_passive_is_refused(
    cluster: Cluster, secret: bytes, node: str, metric: str
) -> None:
    handle, after = impostor(secret, node)
    active = await cluster.active()
    async with FakeServer(handle) as fake:
        await cluster.publish_fake(PASSIVE, fake.port)
        for _ in range(3):
            await active.append(events(10))  # nobody in sync: committed locally
        await until(active, lambda n: n.core_.metrics[metric] >= 2, f"{metric} twice")
        await active.stop()
    assert after == []  # no Append, Truncate or Heartbeat ever went to the impostor
    assert await cluster.in_sync_nodes() == {}


# --- wrong secret, wrong group at the passive -------------------------------------------------


@pytest.mark.parametrize(
    ("group", "secret", "metric"),
    [
        (None, "wrong secret", "replication_rejected_auth"),
        ("another-group", SECRET.decode(), "replication_rejected_wrong_group"),
    ],
    ids=["wrong-secret", "wrong-group"],
)
async def test_passive_rejects_wrong_secret_or_group(
    cluster: Cluster, group: str | None, secret: str, metric: str
) -> None:
    active, passive = await pair(cluster)
    elsewhere = cluster.elsewhere("hostile", group=group)
    hostile = await elsewhere.active("h", secret=secret)
    assert passive.address is not None
    await elsewhere.publish_fake(PASSIVE, passive.address[1])
    for _ in range(3):
        await hostile.append(events(10, "hostile"))  # never in sync: committed locally
    await until(passive, lambda n: n.core_.metrics[metric] >= 2, f"{metric} at the passive")
    await until(
        hostile, lambda n: n.core_.metrics["replication_peer_refused"] >= 2, "refusals counted"
    )
    assert shipper(hostile).acked == 0
    await hostile.stop()
    assert await elsewhere.in_sync_nodes() == {}
    assert passive.log.log_end == 0
    await replicates(active, passive)
    assert active.core_.metrics["replication_standby_lost"] == 0  # undisturbed


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


async def test_tls_replication(
    cluster: Cluster, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server, client = tls
    active = await cluster.active(server_ssl=server, client_ssl=client)
    passive = await cluster.passive(server_ssl=server, client_ssl=client)
    await replicates(active, passive)
    assert link_is_tls(active)
    assert problems(active) == {} and problems(passive) == {}


async def test_plain_active_against_tls_passive_does_not_replicate(
    cluster: Cluster, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server, client = tls
    plain = await cluster.active(shipper={"standby_timeout_ms": 300})
    passive = await cluster.passive(server_ssl=server, client_ssl=client)
    await plain.append(events(10))
    await until(
        plain,
        lambda n: n.core_.metrics["replication_standby_timeout"] >= 2,
        "no Challenge ever comes over plain TCP: the active gives up twice",
    )
    await plain.stop()
    assert passive.log.log_end == 0
    assert await cluster.in_sync_nodes() == {}

    # The same node, restarted with TLS, takes the lease back (its last holder).
    active = await cluster.active(server_ssl=server, client_ssl=client)
    await replicates(active, passive)


async def test_tls_active_against_plain_passive_does_not_replicate(
    cluster: Cluster, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server, client = tls
    tls_active = await cluster.active(server_ssl=server, client_ssl=client)
    passive = await cluster.passive()
    await tls_active.append(events(10))
    await until(
        passive,
        lambda n: n.core_.metrics["replication_errors_malformed"] >= 2,
        "a ClientHello is garbage to the plain passive",
    )
    await until(
        tls_active,
        lambda n: n.core_.metrics["replication_connect_failures"] >= 2,
        "the TLS handshake fails",
    )
    await tls_active.stop()
    assert passive.log.log_end == 0

    active = await cluster.active()
    await replicates(active, passive)


async def test_untrusted_certificate_is_refused_by_the_active(
    cluster: Cluster, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server, client = tls
    untrusting = ssl.create_default_context()  # system CAs only: the self-signed cert fails
    active = await cluster.active(server_ssl=server, client_ssl=untrusting)
    passive = await cluster.passive(server_ssl=server, client_ssl=client)
    await active.append(events(10))
    await until(active, lambda n: n.core_.metrics["replication_connect_failures"] >= 2, "refused")
    assert passive.log.log_end == 0
    assert await cluster.in_sync_nodes() == {}
