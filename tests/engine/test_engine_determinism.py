"""Determinism of the engine: chunking, capture/restore, processes, copy-on-write."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from walrep.engine.app import App, count, sum_
from walrep.engine.canonical import digest_of
from walrep.engine.core import DigestPoint, Engine, EngineOutput
from walrep.errors import EngineError, SnapshotError
from walrep.log.frame import Event
from walrep.log.types import Record

from .test_aggregation_oracle import PURGING, event_lists

REPO = Path(__file__).resolve().parents[2]


def with_outputs() -> App:
    app = App("outputs", version="o1")
    app.stream(
        "S", {"k": "string", "j": "int", "v": "long", "d": "double", "c": "string", "ts": "long"}
    )
    app.filter("S", lambda e: e["v"] % 7 != 0)
    app.aggregation(
        "ByK", from_="S", group_by=["k"], aggregates=[count("n"), sum_("v")], carried=["c"]
    )
    app.output("Big", from_="S", where=lambda e: e["v"] > 0)
    app.output("Echo", from_="S", select=lambda e: {"k": e["k"], "twice": e["v"] * 2})
    return app


OUTPUTS = with_outputs()
APPS = [PURGING, OUTPUTS]


def records(events: list[tuple[str, dict[str, Any]]], producers: bool = False) -> list[Record]:
    out = []
    for n, (stream, attrs) in enumerate(events):
        event = Event(stream, attrs, f"p{n % 3}", n // 3) if producers else Event(stream, attrs)
        out.append(Record(n, 1, 1_700_000_000_000 + 37 * n, event))
    return out


def straight(recs: list[Record], apps: list[App] = APPS) -> Engine:
    engine = Engine(apps, digest_interval=10**9)
    engine.apply(recs)
    return engine


def noisy(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """The events plus some the apps refuse: an unknown stream, a wrong type."""
    out = list(events)
    out.insert(len(out) // 2, ("Nope", {"x": 1}))
    if out[0][0] == "S":
        out.insert(1, ("S", {**out[0][1], "v": "not a long"}))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    event_lists(max_events=50),
    st.lists(st.integers(min_value=1, max_value=55), max_size=6),
    st.lists(st.integers(min_value=0, max_value=55), max_size=3),
    st.booleans(),
)
def test_chunking_and_restores_do_not_change_the_digest(
    events: list[tuple[str, dict[str, Any]]], cuts: list[int], restores: list[int], producers: bool
) -> None:
    recs = records(noisy(events), producers)
    want = straight(recs)
    engine = Engine(APPS, digest_interval=7)
    pos = 0
    points: list[DigestPoint] = []
    outputs: list[EngineOutput] = []
    for cut in [*sorted(set(cuts + restores)), len(recs)]:
        if cut > pos:
            for out in engine.apply(recs[pos:cut]):
                (points if isinstance(out, DigestPoint) else outputs).append(out)
            pos = min(cut, len(recs))
        if cut in restores:
            capture = engine.begin_capture()
            engine = Engine.restore(APPS, capture.encode(), digest_interval=7)
            assert engine.applied == pos
    assert engine.applied == len(recs)
    assert engine.digest() == want.digest()
    assert engine.state_bytes() == want.state_bytes()
    assert [p.offset for p in points] == list(range(7, len(recs) + 1, 7))
    ids = [o.id for o in outputs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert [o.id for o in Engine(APPS, digest_interval=10**9).apply(recs)] == ids


def test_digest_points_are_the_digest_at_their_offset() -> None:
    recs = records(
        noisy(
            [
                ("S", {"k": "a", "j": 0, "v": n, "d": 0.5, "c": "x", "ts": 1000 * n})
                for n in range(23)
            ]
        )
    )
    engine = Engine(APPS, digest_interval=5)
    points = [o for o in engine.apply(recs) if isinstance(o, DigestPoint)]
    assert [p.offset for p in points] == [5, 10, 15, 20, 25]  # 23 events + 2 refused
    for point in points:
        assert point.digest() == straight(recs[: point.offset]).digest()


def test_state_bytes_are_canonical_json() -> None:
    events = [
        ("S", {"k": "a", "j": 0, "v": 2**62, "d": 0.1, "c": "x", "ts": 1000 * n}) for n in range(5)
    ]
    engine = straight(records(events))
    data = engine.state_bytes()
    assert orjson.dumps(orjson.loads(data), option=orjson.OPT_SORT_KEYS) == data
    doc = orjson.loads(data)
    assert doc["format"] == "walrep.engine.state" and doc["format_version"] == 1
    assert doc["applied"] == 5
    assert engine.digest() == digest_of(data)
    assert Engine.restore(APPS, data).state_bytes() == data  # big sums survive as strings


_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from tests.engine.test_engine_determinism import APPS, records, straight
from tests.engine.test_aggregation_oracle import ANCHORS
events = [
    ("S" if n % 5 else "T", {{"k": "kabcd"[n % 5], "j": n % 2, "v": n * 3, "w": n, "d": n / 7,
     "c": "xyz"[n % 3], "ts": ANCHORS[n % 6] + n * 7919}})
    for n in range(400)
]
for stream, attrs in events:
    if stream == "S":
        attrs.pop("w")
    else:
        attrs.pop("v"); attrs.pop("d")
print(straight(records(events, producers=True)).digest())
"""


def test_same_digest_in_processes_with_different_hash_seeds() -> None:
    script = _SCRIPT.format(tests=str(REPO))
    digests = []
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        digests.append(done.stdout.strip())
    assert digests[0] == digests[1]
    assert len(digests[0]) == 32


def test_capture_keeps_the_state_of_its_point() -> None:
    first = [
        ("S", {"k": "a", "j": 0, "v": n, "d": 0.25, "c": "x", "ts": 1000 * n}) for n in range(30)
    ]
    later = [
        ("S", {"k": k, "j": 1, "v": 5, "d": 1.5, "c": "y", "ts": 1000 * n})
        for n, k in enumerate("ab" * 20)
    ]
    recs = records(first + later, producers=True)
    engine = Engine(APPS, digest_interval=10**9)
    engine.apply(recs[:30])
    before = engine.state_bytes()
    capture = engine.begin_capture()
    assert capture.applied == 30 and capture.app_versions == engine.app_versions()
    engine.apply(recs[30:50])  # touches the captured buckets, tables and producers
    encoded: list[bytes] = []
    worker = threading.Thread(target=lambda: encoded.append(capture.encode()))
    worker.start()
    engine.apply(recs[50:])  # while the capture encodes in another thread
    worker.join()
    assert encoded[0] == before == straight(recs[:30]).state_bytes()
    assert engine.state_bytes() == straight(recs).state_bytes()


def test_restore_refuses_other_versions_and_garbage() -> None:
    state = straight(
        records([("S", {"k": "a", "j": 0, "v": 1, "d": 0.5, "c": "x", "ts": 5})])
    ).state_bytes()
    other = App("outputs", version="o2")
    other.stream("S", {"k": "string"})
    with pytest.raises(
        SnapshotError, match=r"outputs: snapshot has version o1, deployed is o2.*replay"
    ):
        Engine.restore([PURGING, other], state)
    with pytest.raises(SnapshotError, match="oracle t1 is in the snapshot but not deployed"):
        Engine.restore([OUTPUTS], state)
    for garbage in (
        b"",
        b"\x00\xff garbage",
        state[: len(state) // 2],
        b"[1, 2]",
        b'{"format": "x"}',
    ):
        with pytest.raises(SnapshotError, match="does not decode"):
            Engine.restore(APPS, garbage)
    doc = orjson.loads(state)
    with pytest.raises(SnapshotError, match="format version 99 is not known"):
        Engine.restore(APPS, orjson.dumps({**doc, "format_version": 99}))
    with pytest.raises(SnapshotError, match="malformed"):
        Engine.restore(APPS, orjson.dumps({**doc, "applied": "12"}))
    doc["apps"][0]["aggregations"][0]["durations"][0]["buckets"] = [[0, [[["a"], ["x"]]]]]
    with pytest.raises(SnapshotError, match="malformed"):
        Engine.restore(APPS, orjson.dumps(doc))


def test_apply_refuses_gaps_and_old_offsets_without_change() -> None:
    recs = records(
        [("S", {"k": "a", "j": 0, "v": n, "d": 0.5, "c": "x", "ts": n}) for n in range(6)]
    )
    engine = Engine(APPS)
    engine.apply(recs[:2])
    before = engine.state_bytes()
    with pytest.raises(EngineError, match="offset 3, expected 2"):
        engine.apply(recs[3:5])
    with pytest.raises(EngineError, match="offset 1, expected 2"):
        engine.apply(recs[1:3])
    with pytest.raises(EngineError, match="record 1 of the batch has offset 4, expected 3"):
        engine.apply([recs[2], recs[4]])
    assert engine.state_bytes() == before and engine.applied == 2
    assert engine.apply([]) == []
    engine.apply(recs[2:])
    assert engine.state_bytes() == straight(recs).state_bytes()


def test_rejected_unknown_filtered_and_app_errors_are_counted() -> None:
    app = App("errors", version="e1")
    app.stream("S", {"k": "string", "v": "long"})
    app.map("S", lambda e: {**e, "inv": 100 // e["v"]}, adds={"inv": "long"})
    app.aggregation(
        "Inv",
        from_="S",
        group_by=["k"],
        aggregates=[sum_("inv"), sum_("odd", of=lambda e: 1 / (e["v"] - 3), type="double")],
    )
    events = [("S", {"k": "a", "v": v}) for v in (1, 0, 3, 4)]  # 0: the map fails; 3: the sum
    events += [("S", {"k": "a", "v": True}), ("Other", {}), ("Other", {"x": 1})]
    engine = Engine([app])
    engine.apply(records(events))
    assert engine.stream_counters("errors") == {
        "S": {"accepted": 3, "errors": 1, "filtered": 0, "rejected": 1}
    }
    assert engine.unknown_streams == {"Other": 2}
    assert engine.aggregation("Inv").errors == 1
    (row,) = [r for r in engine.aggregation("Inv").changed_rows() if r.duration.value == "seconds"]
    assert row.values == (100 + 25, -0.5 + 1.0)  # v=1: 1/(1-3), v=4: 1/(4-3)


def test_outputs_have_stable_ids() -> None:
    recs = records(
        [("S", {"k": "a", "j": 0, "v": v, "d": 0.0, "c": "x", "ts": 0}) for v in (5, -1, 7, 3)]
    )
    outs = Engine([OUTPUTS]).apply(recs)
    assert [(o.id, o.stream) for o in outs] == [
        ((0, 0), "Big"),
        ((0, 1), "Echo"),
        ((1, 0), "Echo"),  # v=-1 is not Big; v=7 is filtered out of the stream
        ((3, 0), "Big"),
        ((3, 1), "Echo"),
    ]
    assert outs[1].attributes == {"k": "a", "twice": 10}


def test_app_and_aggregation_names_must_be_unique() -> None:
    with pytest.raises(EngineError, match="same name"):
        Engine([OUTPUTS, OUTPUTS])
    twin = App("twin", version="1")
    twin.stream("S", {"k": "string"})
    twin.aggregation("ByK", from_="S", group_by=["k"], aggregates=[count("n")])
    with pytest.raises(EngineError, match="'ByK' is declared by apps outputs and twin"):
        Engine([OUTPUTS, twin])


def test_captures_hand_over_pending_deltas() -> None:
    """Captures take the pending (not yet merged) deltas with them: the live engine may
    flush, capture again and go on before an older capture encodes."""
    events = [
        ("S", {"k": "ab"[n % 2], "j": n % 3, "v": n, "d": n / 4, "c": "xy"[n % 2], "ts": 500 * n})
        for n in range(90)
    ]
    events += [("T", {"k": "a", "j": 0, "w": n, "c": "z", "ts": 500 * n}) for n in range(10)]
    recs = records(events, producers=True)
    engine = Engine(APPS, digest_interval=10**9)
    engine.apply(recs[:30])
    first = engine.begin_capture()
    engine.apply(recs[30:60])
    second = engine.begin_capture()
    engine.changed_rows()  # flushes everything, the frozen deltas too
    engine.apply(recs[60:80])
    third = engine.begin_capture()
    engine.apply(recs[80:])
    assert third.encode() == straight(recs[:80]).state_bytes()
    assert first.encode() == straight(recs[:30]).state_bytes()
    assert second.encode() == second.encode() == straight(recs[:60]).state_bytes()
    assert engine.state_bytes() == straight(recs).state_bytes()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_lists(max_events=40), st.integers(min_value=1, max_value=40))
def test_tracking_off_changes_no_state_and_on_again_tracks_only_what_follows(
    events: list[tuple[str, dict[str, Any]]], cut: int
) -> None:
    recs = records(events)
    engine = Engine(APPS, digest_interval=10**9)
    engine.set_tracking(False)  # a passive
    engine.apply(recs[:cut])
    assert engine.changed_rows() == []
    engine.set_tracking(True)  # promoted: every row is written once, then what changes
    assert engine.changed_rows() == []
    engine.apply(recs[cut:])
    assert engine.state_bytes() == straight(recs).state_bytes()
    after = Engine(APPS, digest_interval=10**9)
    after.apply(recs[:cut])
    after.changed_rows()  # the same cut, tracked all along
    after.apply(recs[cut:])
    assert engine.changed_rows() == after.changed_rows()
