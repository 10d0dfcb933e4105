"""Mutual TLS contexts from configuration, checked with a real handshake on loopback."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from walrep.config import TlsSection
from walrep.errors import ConfigError
from walrep.replica.tls import client_context, server_context


def make_ca_and_cert(directory: Path, name: str) -> TlsSection:
    """A throwaway CA and a certificate it signed, with the openssl command line."""
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    if not ca_crt.exists():
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/CN=walrep-test-ca", "-keyout", ca_key, "-out", ca_crt],
            check=True, capture_output=True,
        )  # fmt: skip
    key, csr, crt = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    subprocess.run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
         "-keyout", key, "-out", csr],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
         "-days", "1", "-out", crt],
        check=True, capture_output=True,
    )  # fmt: skip
    return TlsSection(cert_file=crt, key_file=key, ca_file=ca_crt)


async def test_mutual_tls_between_two_nodes(tmp_path: Path) -> None:
    node1, node2 = make_ca_and_cert(tmp_path, "node1"), make_ca_and_cert(tmp_path, "node2")

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_context(node1))
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(node2))
    writer.write(b"hello")
    assert await reader.readexactly(5) == b"hello"
    writer.close()

    # A client without a certificate from the CA is refused by the server.
    other = tmp_path / "other"
    other.mkdir()
    stranger = make_ca_and_cert(other, "stranger")
    with pytest.raises((OSError, asyncio.IncompleteReadError)):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context(stranger)
        )
        writer.write(b"hello")
        await reader.readexactly(5)
    server.close()
    await server.wait_closed()


def test_missing_files_are_a_config_error(tmp_path: Path) -> None:
    tls = TlsSection(
        cert_file=tmp_path / "no.crt", key_file=tmp_path / "no.key", ca_file=tmp_path / "no.ca"
    )
    with pytest.raises(ConfigError, match="tls"):
        server_context(tls)
