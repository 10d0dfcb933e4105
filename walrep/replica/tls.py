"""TLS contexts for event sync from ``deployment.replication.tls`` (stdlib ``ssl``).

Takes any object with the three paths, so this package does not depend on ``walrep.config``.

Mutual TLS: each node presents its certificate and accepts only peers whose certificate
is signed by the configured CA. The HMAC handshake still runs inside TLS: TLS protects
the bytes, the shared secret proves group membership.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Protocol

from walrep.errors import ConfigError


class TlsFiles(Protocol):
    """Where a node's certificate, key and trusted CA are (``config.TlsSection`` is one)."""

    @property
    def cert_file(self) -> Path: ...
    @property
    def key_file(self) -> Path: ...
    @property
    def ca_file(self) -> Path: ...


def server_context(tls: TlsFiles) -> ssl.SSLContext:
    context = _context(ssl.Purpose.CLIENT_AUTH, tls)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(tls: TlsFiles) -> ssl.SSLContext:
    context = _context(ssl.Purpose.SERVER_AUTH, tls)
    context.check_hostname = False  # peers are pinned by the CA, addresses may be IPs
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _context(purpose: ssl.Purpose, tls: TlsFiles) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(purpose, cafile=str(tls.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(f"deployment.replication.tls: {e}") from e
    return context
