"""Mutual HMAC challenge-response of the event-sync handshake (pure; no IO, no clock).

Both nodes know the cluster secret; neither ever sends it. The passive opens with a
random nonce; the active answers with its own nonce and a proof over both; the passive
checks it and answers with its proof. Each proof binds the role, the group, both node
ids and both nonces, so a proof cannot be replayed on another connection, for another
group, or reflected back to its sender. Nonces come from the caller (``os.urandom`` in
the shells, a seeded generator in the simulator).
"""

from __future__ import annotations

import hashlib
import hmac

NONCE_BYTES = 16


def proof(
    secret: bytes, role: str, group: str, active: str, passive: str, nonce_p: bytes, nonce_a: bytes
) -> bytes:
    """HMAC-SHA256 over everything the other side must see agreed to."""
    assert role in ("active", "passive")
    parts = [
        b"walrep-event-sync-v1",
        role.encode(),
        group.encode(),
        active.encode(),
        passive.encode(),
    ]
    message = b"\x00".join(parts) + b"\x00" + nonce_p + nonce_a
    return hmac.new(secret, message, hashlib.sha256).digest()


def verify(expected: bytes, received: bytes) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(expected, received)
