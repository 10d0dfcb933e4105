"""The handshake proofs: what they bind, and that the cores refuse the ones that fail."""

from __future__ import annotations

import itertools

import pytest

from walrep.replica import auth
from walrep.replica.messages import Challenge, Hello, HelloOk, Reject
from walrep.replica.receiver import Authenticated, Close, Receiver, Send
from walrep.replica.shipper import Conn, Shipper, ShipperConfig

SECRET = b"cluster-secret"
NONCE_P = bytes([0xB1]) * auth.NONCE_BYTES
NONCE_A = bytes([0xA1]) * auth.NONCE_BYTES
BASE = {
    "secret": SECRET,
    "role": "active",
    "group": "g1",
    "active": "a1",
    "passive": "p1",
    "nonce_p": NONCE_P,
    "nonce_a": NONCE_A,
}
VARIANTS = {
    "secret": b"another-secret",
    "role": "passive",
    "group": "g2",
    "active": "a2",
    "passive": "p2",
    "nonce_p": bytes([0xB2]) * auth.NONCE_BYTES,
    "nonce_a": bytes([0xA2]) * auth.NONCE_BYTES,
}


def proof(**changes: object) -> bytes:
    return auth.proof(**{**BASE, **changes})  # type: ignore[arg-type]


def test_a_proof_is_a_deterministic_sha256_hmac() -> None:
    assert proof() == proof()
    assert len(proof()) == 32


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_input_changes_the_proof(name: str) -> None:
    assert proof(**{name: VARIANTS[name]}) != proof()


def test_all_variants_differ_from_each_other() -> None:
    proofs = {
        frozenset(combo): proof(**{n: VARIANTS[n] for n in combo})
        for size in range(len(VARIANTS) + 1)
        for combo in itertools.combinations(sorted(VARIANTS), size)
    }
    assert len(set(proofs.values())) == len(proofs) == 2 ** len(VARIANTS)


def test_swapping_the_nonces_or_the_node_ids_changes_the_proof() -> None:
    assert proof(nonce_p=NONCE_A, nonce_a=NONCE_P) != proof()
    assert proof(active="p1", passive="a1") != proof()


def test_an_unknown_role_is_a_bug() -> None:
    with pytest.raises(AssertionError):
        proof(role="observer")


def test_verify() -> None:
    good = proof()
    assert auth.verify(good, bytes(good))
    assert not auth.verify(good, bytes([good[0] ^ 1]) + good[1:])
    assert not auth.verify(good, good[:-1])
    assert not auth.verify(good, good + b"\x00")
    assert not auth.verify(good, b"")
    assert not auth.verify(good, proof(role="passive"))


def test_a_passive_proof_is_not_an_active_proof() -> None:
    """Reflection: what the passive proves cannot be passed off as the active's proof."""
    passive_proof = proof(role="passive")
    assert not auth.verify(proof(role="active"), passive_proof)


# --- the cores refuse failed proofs ----------------------------------------------------------


def receiver(nonce: bytes = NONCE_P) -> Receiver:
    r = Receiver("g1", "p1", SECRET, nonce, buffer_bytes_max=1 << 20)
    assert r.connected() == [Send(Challenge("p1", nonce))]
    return r


def hello(proof_bytes: bytes, nonce_a: bytes = NONCE_A) -> Hello:
    return Hello("g1", "a1", 1, 0, nonce_a, proof_bytes)


def refused(actions: list[object]) -> bool:
    return any(isinstance(a, Send) and isinstance(a.message, Reject) for a in actions) and any(
        isinstance(a, Close) for a in actions
    )


def test_the_receiver_accepts_a_good_active_proof() -> None:
    assert receiver().received(hello(proof())) == [Authenticated("a1", 1)]


def test_the_receiver_refuses_a_reflected_passive_proof() -> None:
    assert refused(receiver().received(hello(proof(role="passive"))))


def test_the_receiver_refuses_a_proof_made_with_another_secret() -> None:
    assert refused(receiver().received(hello(proof(secret=b"guess"))))


def test_a_hello_recorded_on_one_connection_fails_on_the_next() -> None:
    recorded = hello(proof())
    assert receiver().received(recorded) == [Authenticated("a1", 1)]
    again = receiver(nonce=bytes([0xB2]) * auth.NONCE_BYTES)  # a fresh passive nonce
    assert refused(again.received(recorded))


def shipper_awaiting_hello_ok() -> Shipper:
    s = Shipper(
        "g1",
        "a1",
        SECRET,
        epoch=1,
        epoch_end=lambda epoch: (0, 0),
        log_start=0,
        log_end=0,
        durable_end=0,
        standby="p1",
        standby_in_sync=False,
        config=ShipperConfig(),
    )
    assert s.connected(0, NONCE_A) == []
    (send,) = s.received(Challenge("p1", NONCE_P), 0)
    assert isinstance(send, Send) and isinstance(send.message, Hello)
    assert send.message.proof == proof()
    return s


def test_the_shipper_accepts_a_good_passive_proof() -> None:
    s = shipper_awaiting_hello_ok()
    s.received(HelloOk("p1", 0, 0, 0, 0, proof(role="passive")), 0)
    assert s.conn is Conn.STREAMING


@pytest.mark.parametrize(
    "bad",
    [
        proof(),  # its own proof reflected back
        proof(role="passive", secret=b"guess"),
        proof(role="passive", nonce_a=bytes([0xA2]) * auth.NONCE_BYTES),  # another connection
        b"",
    ],
    ids=["reflected", "wrong-secret", "replayed", "empty"],
)
def test_the_shipper_refuses_a_bad_passive_proof(bad: bytes) -> None:
    s = shipper_awaiting_hello_ok()
    actions = s.received(HelloOk("p1", 0, 0, 0, 0, bad), 0)
    assert any(isinstance(a, Close) for a in actions)
    assert not any(isinstance(a, Send) for a in actions)  # nothing shipped to an impostor
    assert s.conn is Conn.DOWN
