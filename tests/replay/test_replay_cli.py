"""``walrep replay`` on real WAL directories: each answer checked against an engine that
applied the same records in one straight run (the oracle), or a brute-force scan."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from tests.replay.logs import APPS_DIR, BASE_MS, DataDir, save_snapshot, write_chain, write_log
from walrep.cli.main import cli
from walrep.engine.canonical import digest_of
from walrep.engine.core import Engine
from walrep.engine.loader import load_apps
from walrep.engine.snapshots import FileSnapshotStore
from walrep.engine.timeunits import Duration
from walrep.log.frame import HEADER_SIZE
from walrep.log.wal import Wal
from walrep.log.walk import CheckedFrame, walk_log
from walrep.query.evaluate import run_query
from walrep.replay.where import compile_where

N = 3000


def replay(*args: object) -> Result:
    return CliRunner().invoke(cli, ["replay", *map(str, args)], catch_exceptions=False)


def as_json(result: Result) -> Any:
    return orjson.loads(result.stdout)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> DataDir:
    return write_log(tmp_path_factory.mktemp("replay") / "data", N)


@pytest.fixture
def data(log_dir: DataDir, tmp_path: Path) -> DataDir:
    """A fresh copy of the module's log (a test may damage it)."""
    copy = tmp_path / "data"
    shutil.copytree(log_dir.path, copy)
    return DataDir(copy, log_dir.records, log_dir.apps)


def flip_payload_byte(data: DataDir, offset: int) -> int:
    """Flip one byte inside the payload of the frame holding ``offset``; its base."""
    for item in walk_log(data.path):
        if (
            isinstance(item, CheckedFrame)
            and item.header.base_offset <= offset < item.header.end_offset
        ):
            raw = bytearray(item.segment.read_bytes())
            raw[item.position + HEADER_SIZE + 40] ^= 0x01
            item.segment.write_bytes(bytes(raw))
            return item.header.base_offset
    raise AssertionError(f"no frame holds offset {offset}")


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


# --- state ---------------------------------------------------------------------------------


def test_state_at_an_offset_is_a_straight_runs_from_a_snapshot_or_from_scratch(
    data: DataDir,
) -> None:
    meta = save_snapshot(data, 1000)
    before = tree_digest(data.path)
    expected = data.engine_at(2345).digest()

    done = replay("state", "--data", data.path, "--apps", APPS_DIR, "--to-offset", 2345, "--json")
    assert done.exit_code == 0, done.output
    doc = as_json(done)
    assert (doc["offset"], doc["epoch"], doc["digest"]) == (2345, 2, expected)
    assert doc["start"]["from"] == "snapshot" and doc["start"]["offset"] == meta.offset
    assert doc["replayed"] == 1345
    counters = doc["apps"]["apim_analytics"]["streams"]
    assert sum(c["accepted"] + c["rejected"] for c in counters.values()) == 2345

    scratch = as_json(replay("state", "--data", data.path, "--apps", APPS_DIR,
                             "--to-offset", 2345, "--from-scratch", "--json"))  # fmt: skip
    assert scratch["digest"] == expected and scratch["start"] == {"from": "scratch", "offset": 0}
    # Below the snapshot: it is not used (a replay never goes backwards).
    early = as_json(
        replay("state", "--data", data.path, "--apps", APPS_DIR, "--to-offset", 999, "--json")
    )
    assert early["digest"] == data.engine_at(999).digest() and early["start"]["from"] == "scratch"
    assert tree_digest(data.path) == before  # read-only: log, snapshots, everything


def test_state_until_a_time_stops_before_the_first_record_ingested_after_it(data: DataDir) -> None:
    # Frames of 250 records are ingested at BASE_MS + their first offset.
    until = "2026-01-01T00:00:01.499Z"
    doc = as_json(
        replay("state", "--data", data.path, "--apps", APPS_DIR, "--until", until, "--json")
    )
    assert doc["offset"] == 1500 and doc["digest"] == data.engine_at(1500).digest()
    assert doc["until"] == until


def test_aggregation_rows_are_printed_as_the_store_query_api_answers(
    data: DataDir, tmp_path: Path
) -> None:
    out = tmp_path / "rows.db"
    done = replay("state", "--data", data.path, "--apps", APPS_DIR, "--to-offset", 2000, "--json",
                  "--aggregation", "APIM_ReqCountAgg", "--per", "hours", "--out", out)  # fmt: skip
    assert done.exit_code == 0, done.output
    doc = as_json(done)
    engine = data.engine_at(2000)
    query = doc["query"]["query"]
    assert query.startswith("from APIM_ReqCountAgg within") and "per 'hours'" in query
    expected = run_query(engine, data.apps, "apim_analytics", query)
    assert doc["query"]["records"] == orjson.loads(orjson.dumps(expected)) and expected
    # --out *.db: every row, in the RDBMS sink's tables.
    assert doc["written"]["rows"] == len(engine.all_rows())
    with sqlite3.connect(out) as db:
        hours = db.execute('SELECT COUNT(*) FROM "APIM_ReqCountAgg_HOURS"').fetchone()[0]
    assert hours == len(engine.aggregation("APIM_ReqCountAgg").rows(Duration.HOURS, 0, 2**62))


def test_a_snapshot_of_another_app_version_is_refused_with_a_way_out(
    data: DataDir, tmp_path: Path
) -> None:
    meta = save_snapshot(data, 1000)
    apps = tmp_path / "apps"
    apps.mkdir()
    source = (APPS_DIR / "apim_analytics.py").read_text()
    (apps / "apim_analytics.py").write_text(source + "\n# edited: a new version\n")
    listed = as_json(replay("snapshots", "--data", data.path, "--apps", apps, "--json"))
    (row,) = listed["snapshots"]
    assert row["offset"] == meta.offset and "app versions" in row["usable"]
    sid = row["id"]
    done = replay(
        "state", "--data", data.path, "--apps", apps, "--to-offset", 2000, "--snapshot", sid
    )
    assert done.exit_code == 2
    assert "app versions" in done.output and "--from-scratch" in done.output
    # Without --snapshot the other version's snapshot is passed over, and said so.
    doc = as_json(
        replay("state", "--data", data.path, "--apps", apps, "--to-offset", 2000, "--json")
    )
    assert doc["start"]["from"] == "scratch"
    assert any("app versions" in note for note in doc["notes"])


def test_a_damaged_frame_is_named_and_skip_damaged_goes_on(data: DataDir) -> None:
    base = flip_payload_byte(data, 1600)
    done = replay("state", "--data", data.path, "--apps", APPS_DIR, "--to-offset", 2500)
    assert done.exit_code == 2
    assert f"damaged at offset {base}" in done.output and "--skip-damaged" in done.output

    doc = as_json(replay("state", "--data", data.path, "--apps", APPS_DIR, "--to-offset", 2500,
                         "--skip-damaged", "--json"))  # fmt: skip
    assert doc["offset"] == 2500
    assert [(s["from"], s["to"]) for s in doc["skipped"]] == [(base, base + 250)]
    # The state is that of the log without those records (blanks count for nothing).
    kept = data.records[:base] + data.records[base + 250 : 2500]
    counters = doc["apps"]["apim_analytics"]["streams"]
    assert sum(c["accepted"] for c in counters.values()) == len(kept)


def test_a_range_beyond_the_log_and_a_missing_directory_are_clear_errors(
    data: DataDir, tmp_path: Path
) -> None:
    done = replay("state", "--data", data.path, "--apps", APPS_DIR, "--to-offset", N + 1)
    assert done.exit_code == 2 and f"ends at {N}" in done.output
    empty = tmp_path / "empty"
    empty.mkdir()
    done = replay("state", "--data", empty, "--apps", APPS_DIR, "--to-offset", 1)
    assert done.exit_code == 2 and "not a log directory" in done.output


# --- verify --------------------------------------------------------------------------------


def test_verify_recomputes_the_chain_and_every_snapshot(data: DataDir) -> None:
    write_chain(data, [1000, 2000, 3000])
    save_snapshot(data, 1500)
    done = replay("verify", "--data", data.path, "--apps", APPS_DIR, "--json")
    assert done.exit_code == 0, done.output
    doc = as_json(done)
    assert doc["ok"] and doc["checked"] == 4 and doc["applied"] == N


def test_verify_fails_at_an_edited_chain_entry_naming_offset_and_epoch(data: DataDir) -> None:
    chain = write_chain(data, [1000, 2000])
    lines = [orjson.dumps({"offset": 1000, "digest": chain[0][1]}),
             orjson.dumps({"offset": 2000, "digest": "0" * 32})]  # fmt: skip
    (data.path / "digests.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    done = replay("verify", "--data", data.path, "--apps", APPS_DIR)
    assert done.exit_code == 1
    assert "MISMATCH at offset 2000 (epoch 2): digest chain" in done.output


def test_verify_catches_a_flipped_byte_in_an_event_payload(data: DataDir) -> None:
    write_chain(data, [1000, 2000])
    base = flip_payload_byte(data, 700)
    doc = as_json(replay("verify", "--data", data.path, "--apps", APPS_DIR, "--json"))
    assert not doc["ok"]
    assert doc["mismatch"]["offset"] == base and doc["mismatch"]["recorded_by"] == "the log"
    assert "damaged frame" in doc["mismatch"]["reason"]


def test_verify_catches_a_snapshot_whose_digest_was_edited(data: DataDir) -> None:
    meta = save_snapshot(data, 1500)
    (path,) = (p for p in (data.path / "snapshots").iterdir() if p.suffix == ".wsnap")
    raw = path.read_bytes()
    forged = raw.replace(meta.digest.encode(), b"f" * 32)
    assert forged != raw
    path.write_bytes(forged)
    doc = as_json(replay("verify", "--data", data.path, "--apps", APPS_DIR, "--json"))
    assert not doc["ok"] and doc["mismatch"]["offset"] == 1500
    assert doc["mismatch"]["recorded_by"].startswith("snapshot ")
    assert "the store refuses it" in doc["mismatch"]["reason"]


def test_verify_catches_a_snapshot_that_verifies_but_holds_another_state(data: DataDir) -> None:
    """A consistent forgery: the state of offset 1400 saved as the state at 1500."""
    wrong = data.engine_at(1400).state_bytes()
    meta = save_snapshot(data, 1500)
    for p in (data.path / "snapshots").iterdir():
        if p.suffix == ".wsnap":
            p.unlink()
    store = FileSnapshotStore(data.path / "snapshots")
    forged = dataclasses.replace(meta, digest=digest_of(wrong))
    asyncio.run(store.save(forged, wrong))
    doc = as_json(replay("verify", "--data", data.path, "--apps", APPS_DIR, "--json"))
    assert not doc["ok"] and doc["mismatch"]["offset"] == 1500
    assert doc["mismatch"]["expected"] == forged.digest
    assert doc["mismatch"]["got"] == data.engine_at(1500).digest()


def test_verify_against_another_node_names_the_first_offset_where_the_logs_differ(
    data: DataDir, tmp_path: Path
) -> None:
    same = tmp_path / "same"
    shutil.copytree(data.path, same)
    done = replay("verify", "--data", data.path, "--apps", APPS_DIR, "--against", same, "--json")
    assert done.exit_code == 0, done.output
    assert as_json(done)["against"]["to"] == N

    # Another log: the same first 1000 events (4 frames), then others.
    other = write_log(tmp_path / "other", N, seed=8)
    assert other.records[0].event != data.records[0].event
    diverged = tmp_path / "diverged"
    wal = Wal.open(diverged)
    for i in range(0, N, 250):
        source = data.records if i < 1000 else other.records
        wal.append_sync([r.event for r in source[i : i + 250]], epoch=1 if i < N // 2 else 2,
                        ingest_time_ms=BASE_MS + i)  # fmt: skip
    wal.close()
    doc = as_json(
        replay("verify", "--data", data.path, "--apps", APPS_DIR, "--against", diverged, "--json")
    )
    assert not doc["ok"]
    assert doc["against"]["difference"]["offset"] == 1000
    assert doc["against"]["difference"]["what"] == "event"


# --- trace ---------------------------------------------------------------------------------


def brute_force_trace(
    data: DataDir, aggregation: str, key: dict[str, str], to: int
) -> list[tuple[int, list[Any]]]:
    """Apply one record at a time and compare the key's rows before and after."""
    engine = Engine(load_apps(APPS_DIR))
    schema = next(s for s in engine.schemas() if s.name == aggregation)
    names = [c.name for c in schema.group_by]
    pos = [(names.index(k), v) for k, v in key.items()]

    def rows() -> dict[Any, Any]:
        agg = engine.aggregation(aggregation)
        out = {}
        for d in schema.durations:
            for r in agg.rows(d, -(2**62), 2**62):
                if all(str(r.key[i]) == v for i, v in pos):
                    out[(d.value, r.agg_timestamp_ms, r.key)] = r.values
        return out

    found = []
    before = rows()
    for record in data.records[:to]:
        engine.apply([record])
        after = rows()
        changed = sorted(k for k in after if before.get(k) != after[k])
        if changed:
            found.append((record.offset, [(k, before.get(k), after[k]) for k in changed]))
        before = after
    return found


def test_trace_finds_exactly_the_events_that_changed_a_key(data: DataDir) -> None:
    api = data.records[0].event[1]["apiName"]
    key = {"apiName": api, "applicationName": data.records[0].event[1]["applicationName"]}
    expected = brute_force_trace(data, "APIM_ReqCountAgg", key, 1200)
    assert len(expected) > 3
    done = replay("trace", "--data", data.path, "--apps", APPS_DIR, "--to", 1200, "--json",
                  "--key", ",".join(f"{k}={v}" for k, v in key.items()),
                  "--aggregation", "APIM_ReqCountAgg")  # fmt: skip
    assert done.exit_code == 0, done.output
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    events, summary = lines[:-1], lines[-1]["summary"]
    assert summary["events"] == len(expected) == len(events)
    assert [e["offset"] for e in events] == [o for o, _ in expected]
    for event, (_, changes) in zip(events, expected, strict=True):
        got = sorted((c["per"], c["bucket_ms"], tuple(c["key"].values()),
                      None if c["before"] is None else tuple(c["before"].values()),
                      tuple(c["after"].values())) for c in event["changes"])  # fmt: skip
        want = sorted((d, b, k, None if v0 is None else tuple(v0), tuple(v1))
                      for (d, b, k), v0, v1 in changes)  # fmt: skip
        assert got == want
        assert event["ingest_time_ms"] == data.records[event["offset"]].ingest_time_ms


def test_trace_of_a_key_no_state_has_is_a_clear_error(data: DataDir) -> None:
    done = replay("trace", "--data", data.path, "--apps", APPS_DIR, "--key", "nosuch=1")
    assert done.exit_code == 2 and "no state is keyed by ['nosuch']" in done.output
    done = replay("trace", "--data", data.path, "--apps", APPS_DIR, "--key", "apiName=x",
                  "--per", "fortnights")  # fmt: skip
    assert done.exit_code == 2 and "--per 'fortnights': not a duration" in done.output


# --- diff ----------------------------------------------------------------------------------


def test_diff_reports_a_changed_aggregation_and_nothing_for_an_identical_copy(
    data: DataDir, tmp_path: Path
) -> None:
    original = APPS_DIR / "apim_analytics.py"
    copy = tmp_path / "copy.py"
    copy.write_text(original.read_text())
    done = replay("diff", "--data", data.path, "--app-a", original, "--app-b", copy, "--json")
    assert done.exit_code == 0, done.output
    assert as_json(done)["identical"]

    changed = tmp_path / "changed.py"
    text = original.read_text()
    edit = 'sum_("throttleCount", of={"Request": 0, "ThrottledOut": 1})'
    assert edit in text
    changed.write_text(text.replace(edit, edit.replace('ThrottledOut": 1', 'ThrottledOut": 2')))
    done = replay("diff", "--data", data.path, "--app-a", original, "--app-b", changed, "--json")
    assert done.exit_code == 1
    doc = as_json(done)
    first_throttled = next(r.offset for r in data.records if r.event[0] == "ThrottledOut")
    assert doc["first_divergence"] == first_throttled
    assert doc["rows_differing"] > 0
    assert {ex["state"] for ex in doc["row_examples"]} == {"APIM_ReqCountAgg"}
    # A range before the first throttled event: identical there.
    done = replay("diff", "--data", data.path, "--app-a", original, "--app-b", changed,
                  "--to", first_throttled)  # fmt: skip
    assert done.exit_code == 0, done.output


# --- events --------------------------------------------------------------------------------


def test_events_are_exported_as_ndjson_with_filters(data: DataDir) -> None:
    where = "responseCode >= 400 and apiMethod != 'GET'"
    done = replay("events", "--data", data.path, "--from", 100, "--to", 2600, "--stream", "Request",
                  "--where", where, "--until", "2026-01-01T00:00:02Z")  # fmt: skip
    assert done.exit_code == 0, done.output
    got = [orjson.loads(line) for line in done.stdout.splitlines()]
    test = compile_where(where)
    expected = [
        r for r in data.records[100:2600]
        if r.event[0] == "Request" and test(r.event[1]) and r.ingest_time_ms <= BASE_MS + 2000
    ]  # fmt: skip
    assert expected and [e["offset"] for e in got] == [r.offset for r in expected]
    assert got[0]["attributes"] == expected[0].event[1] and got[0]["ingest_time"].endswith("Z")


def test_a_where_expression_is_parsed_not_evaluated(data: DataDir) -> None:
    done = replay("events", "--data", data.path, "--where", "__import__('os').system('true')")
    assert done.exit_code == 2 and "--where" in done.output
    pick = compile_where("a == 1 or (b != 'x' and not c < 2.5)")
    assert pick({"a": 1}) and pick({"a": 2, "b": "y", "c": 3}) and not pick({"a": 2, "b": "x"})
    assert not compile_where("a < 'z'")({"a": 3})  # a number and a string: false, no error
    assert compile_where("missing == missing2")({})  # two nulls are equal (Store Query rule)


def test_a_log_whose_start_retention_deleted_replays_from_a_snapshot(tmp_path: Path) -> None:
    """Segments below the snapshots are gone: from scratch is refused (saying why); state
    and verify start from a snapshot (verify: the oldest, so it checks the newer one)."""
    from walrep.log.config import LogConfig

    path = tmp_path / "data"
    limits = {
        "max_event_bytes": 16 * 1024,
        "max_batch_bytes": 320 * 1024,
        "compress_threshold_bytes": 10**9,
    }  # frames of 250 events, one per segment
    wal = Wal.open(path, LogConfig(segment_bytes_max=400 * 1024, **limits))
    data = write_log(tmp_path / "straight", N)
    for i in range(0, N, 250):
        wal.append_sync([r.event for r in data.records[i : i + 250]],
                        epoch=1 if i < N // 2 else 2, ingest_time_ms=BASE_MS + i)  # fmt: skip
    start = wal.delete_before(1200)
    wal.close()
    assert 0 < start <= 1200
    cut = DataDir(path, data.records, data.apps)
    save_snapshot(cut, 1200)
    save_snapshot(cut, 2000)
    write_chain(cut, [2500])

    done = replay(
        "state", "--data", path, "--apps", APPS_DIR, "--to-offset", 2500, "--from-scratch"
    )
    assert done.exit_code == 2 and f"starts at offset {start}" in done.output
    doc = as_json(
        replay("state", "--data", path, "--apps", APPS_DIR, "--to-offset", 2500, "--json")
    )
    assert doc["start"]["offset"] == 2000 and doc["digest"] == data.engine_at(2500).digest()
    doc = as_json(replay("verify", "--data", path, "--apps", APPS_DIR, "--json"))
    assert doc["ok"] and doc["start"]["offset"] == 1200 and doc["checked"] == 2
    assert any("not recomputed" in note for note in doc["notes"])


def multi_segment_log(tmp_path: Path, data: DataDir) -> Path:
    """``data``'s records in a log of one 250-event frame per segment."""
    from walrep.log.config import LogConfig

    path = tmp_path / "segments"
    limits = {"max_event_bytes": 16 * 1024, "max_batch_bytes": 320 * 1024,
              "compress_threshold_bytes": 10**9}  # fmt: skip
    wal = Wal.open(path, LogConfig(segment_bytes_max=400 * 1024, **limits))
    for i in range(0, N, 250):
        wal.append_sync([r.event for r in data.records[i : i + 250]],
                        epoch=1 if i < N // 2 else 2, ingest_time_ms=BASE_MS + i)  # fmt: skip
    wal.close()
    return path


def test_segments_missing_in_the_range_are_named_and_can_be_skipped(
    data: DataDir, tmp_path: Path
) -> None:
    path = multi_segment_log(tmp_path, data)
    (path / f"{1000:020d}.wal").unlink()  # offsets 1000..1249 are gone
    (path / f"{1000:020d}.idx").unlink(missing_ok=True)
    done = replay("state", "--data", path, "--apps", APPS_DIR, "--to-offset", 2000)
    assert done.exit_code == 2
    assert "damaged at offset 1000" in done.output and "1000..1249 missing" in done.output
    # Before the hole a replay is fine; with --skip-damaged it goes through it.
    ok = as_json(replay("state", "--data", path, "--apps", APPS_DIR, "--to-offset", 1000, "--json"))
    assert ok["digest"] == data.engine_at(1000).digest()
    doc = as_json(replay("state", "--data", path, "--apps", APPS_DIR, "--to-offset", 2000,
                         "--skip-damaged", "--json"))  # fmt: skip
    assert [(s["from"], s["to"]) for s in doc["skipped"]] == [(1000, 1250)]


@pytest.mark.parametrize("backend", ["sqlite", "mariadb", "postgresql"])
def test_snapshots_in_the_database_are_read_never_written(
    data: DataDir, tmp_path: Path, backend: str
) -> None:
    """The config's database store: a replay starts from its snapshot and verify checks
    it; the store's rows (fence, headers, chunks) are the same afterwards."""
    import uuid

    import sqlalchemy as sa

    from tests.services import require_service
    from walrep.db import create_engine, normalize_url
    from walrep.engine.snapshots import DbSnapshotStore

    url = f"sqlite+aiosqlite:///{tmp_path / 'cluster.db'}" if backend == "sqlite" else (
        require_service(backend))  # fmt: skip
    group = f"replay-{uuid.uuid4().hex[:10]}"
    state = data.engine_at(1500).state_bytes()
    meta = save_snapshot(data, 1500)

    async def save_and_count() -> list[int]:
        engine = create_engine(normalize_url(url))
        store = DbSnapshotStore(engine, group_id=group)
        await store.setup()
        await store.save(meta, state)
        return await count_rows(engine)

    async def count_rows(engine: Any) -> list[int]:
        counts = []
        async with engine.connect() as conn:
            for table in ("walrep_snapshots", "walrep_snapshots_chunks", "walrep_snapshots_fence"):
                q = sa.text(f"SELECT COUNT(*) FROM {table} WHERE group_id = :g")
                counts.append((await conn.execute(q, {"g": group})).scalar_one())
        await engine.dispose()
        return counts

    before = asyncio.run(save_and_count())
    shutil.rmtree(data.path / "snapshots")  # only the database holds the snapshot now
    conf = tmp_path / "node.yaml"
    conf.write_text(
        f'node: {{id: n1, data_dir: "{data.path}"}}\n'
        f"cluster: {{group_id: {group}}}\n"
        f'engine: {{apps_dir: "{APPS_DIR}"}}\n'
        f'datasources: [{{name: WALREP_DB, url: "{url}"}}]\n'
    )
    doc = as_json(replay("state", "--data", data.path, "-c", conf, "--to-offset", 2000, "--json"))
    assert doc["start"]["from"] == "snapshot" and doc["start"]["offset"] == 1500
    assert doc["digest"] == data.engine_at(2000).digest()
    done = replay("verify", "--data", data.path, "-c", conf, "--json")
    assert done.exit_code == 0, done.output
    assert as_json(done)["checked"] == 1
    after = asyncio.run(count_rows(create_engine(normalize_url(url))))
    assert after == before and before[0] == 1
