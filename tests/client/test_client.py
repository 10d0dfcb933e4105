"""``walrep.client.Client`` against a real node's HTTP ingest (in this process): offsets in
order, batching, typed errors, and the idempotent producer's stamps given back after a
refusal (so the next publish has no gap) or kept for a retry after a timeout."""

from __future__ import annotations

import socket

import pytest

from tests.node.test_ingest_http import TOKEN, Pair, order, pair
from walrep.client import Client, PublishError

__all__ = ["pair"]  # the fixture: an active and a passive, the active's ingest served


def base(pair: Pair) -> str:
    return pair.ingest.url.removesuffix("/events")


async def test_publish_answers_offsets_in_order_in_batches(pair: Pair) -> None:
    async with Client([base(pair)], token=TOKEN, max_batch_events=2) as client:
        assert await client.publish([order(i) for i in range(5)]) == [0, 1, 2, 3, 4]
        attrs = order(5)["attributes"]
        assert await client.publish([("Order", attrs)]) == [5]
    assert pair.a.committed == 6


async def test_a_refused_request_is_not_retriable_and_its_seqs_are_given_back(
    pair: Pair,
) -> None:
    async with Client([base(pair)], token=TOKEN, producer_id="gw") as client:
        assert await client.publish([order(0), order(1)]) == [0, 1]
        bad = {"stream": "Order", "attributes": {"shop": "s", "ts": 1}}  # amount missing
        with pytest.raises(PublishError) as info:
            await client.publish([order(2), bad])
        assert not info.value.retriable
        assert (info.value.status, info.value.code) == (400, "invalid_event")
        assert client.next_seq == 2  # nothing was appended: no gap for the next one
        assert await client.publish([order(2)]) == [2]
    assert pair.a.log.log_end == 3


async def test_a_wrong_token_is_not_retriable(pair: Pair) -> None:
    async with Client([base(pair)], token="wrong") as client:
        with pytest.raises(PublishError) as info:
            await client.publish([order(0)])
    assert not info.value.retriable and info.value.status == 403


async def test_no_node_answering_is_retriable_and_keeps_the_stamps() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens there once the socket is closed
    client = Client(
        [f"http://127.0.0.1:{port}"],
        producer_id="gw",
        retry_deadline_s=0.3,
        backoff_initial_ms=20,
        backoff_max_ms=50,
    )
    async with client:
        with pytest.raises(PublishError) as info:
            await client.publish([order(0), order(1)])
    error = info.value
    assert error.retriable and error.status is None
    assert [e["seq"] for e in error.events] == [0, 1]  # resend exactly these
    assert client.next_seq == 2 and client.failovers > 0
    assert client.stamp(error.events) == error.events  # stamps are kept on a resend
