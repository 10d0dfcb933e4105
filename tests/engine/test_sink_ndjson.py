"""The NDJSON sink on real files: line format, fsync'd batches, resume after reopen, a torn
last line cut off, row lines, stdout."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from walrep.engine.sinks.base import Output, SinkBatch
from walrep.engine.sinks.ndjson import NdjsonSink
from walrep.engine.timeunits import Duration
from walrep.engine.types import AggregationSchema, AggRow, AttrType, Column
from walrep.errors import SinkError

AGG = AggregationSchema(
    "ApiPerDestinationAgg",
    (Duration.SECONDS,),
    (Column("apiContext", AttrType.STRING), Column("destination", AttrType.STRING)),
    (Column("totalRequestCount", AttrType.LONG),),
)


def out(offset: int, index: int, **attributes: str | int | float | bool | None) -> Output:
    return Output((offset, index), "apim", "Alerts", dict(attributes))


def row(ts: int, count: int) -> AggRow:
    return AggRow(AGG.name, Duration.SECONDS, ts, ("/pizza/1.0", "http://be"), (count,))


B1 = SinkBatch(1, 5, outputs=[out(1, 0, api="pizza", n=1), out(1, 1, api="pizza", n=2)])
B2 = SinkBatch(1, 9, outputs=[out(6, 0, latency=1.5, ok=True, note=None), out(8, 0, x="ü")])


def lines(path: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def ids(path: Path) -> list[list[int]]:
    return [line["id"] for line in lines(path) if "id" in line]  # type: ignore[misc]


async def opened(path: Path, **kwargs: bool) -> NdjsonSink:
    sink = NdjsonSink(path, **kwargs)
    await sink.setup([AGG])
    return sink


async def test_one_line_per_output_and_the_resume_offset_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outputs.ndjson"
    sink = await opened(path)
    assert await sink.applied_offset() == 0
    await sink.write(B1)
    await sink.write(B2)
    assert await sink.applied_offset() == 9
    await sink.close()
    assert lines(path)[0] == {
        "id": [1, 0],
        "app": "apim",
        "stream": "Alerts",
        "attributes": {"api": "pizza", "n": 1},
    }
    assert lines(path)[2]["attributes"] == {"latency": 1.5, "ok": True, "note": None}
    assert ids(path) == [[1, 0], [1, 1], [6, 0], [8, 0]]

    again = await opened(path)
    assert await again.applied_offset() == 8  # the last line's offset
    await again.write(B2)  # the engine resends from 8: (8, 0) is in already
    await again.write(SinkBatch(2, 12, outputs=[out(8, 1), out(11, 0)]))
    await again.write(SinkBatch(2, 12, outputs=[out(11, 0)]))  # at the applied offset: no-op
    await again.close()
    assert ids(path) == [[1, 0], [1, 1], [6, 0], [8, 0], [8, 1], [11, 0]]


async def test_a_torn_last_line_is_cut_and_the_batch_written_again(tmp_path: Path) -> None:
    path = tmp_path / "outputs.ndjson"
    sink = await opened(path)
    await sink.write(B1)
    await sink.close()
    whole = path.read_bytes()
    torn = orjson.dumps(B2.outputs[0].to_json_obj())[:-7]  # a crash in the middle of B2
    path.write_bytes(whole + torn)

    again = await opened(path)
    assert path.read_bytes() == whole
    assert await again.applied_offset() == 1
    await again.write(B1)  # resent from offset 1: nothing doubled
    await again.write(B2)
    await again.close()
    assert ids(path) == [[1, 0], [1, 1], [6, 0], [8, 0]]


async def test_rows_follow_the_outputs_and_a_row_line_resumes_at_the_batch_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "with-rows.ndjson"
    sink = await opened(path, include_rows=True)
    await sink.write(SinkBatch(1, 5, rows=[row(1000, 3)], outputs=[out(4, 0)]))
    await sink.write(SinkBatch(1, 9, rows=[row(1000, 4), row(2000, 1)], outputs=[out(7, 0)]))
    await sink.close()
    got = lines(path)
    assert [sorted(line) for line in got] == [
        ["app", "attributes", "id", "stream"],
        ["batch", "row"],
        ["app", "attributes", "id", "stream"],
        ["batch", "row"],
        ["batch", "row"],
    ]
    assert got[1] == {
        "row": {
            "aggregation": "ApiPerDestinationAgg",
            "duration": "SECONDS",
            "AGG_TIMESTAMP": 1000,
            "key": {"apiContext": "/pizza/1.0", "destination": "http://be"},
            "values": {"totalRequestCount": 3},
        },
        "batch": [0, 5],
    }
    assert got[4]["batch"] == [5, 9]

    # The last line is a row of batch [5, 9): resume at 5, its outputs are in, its rows
    # (absolute values) are written again.
    again = await opened(path, include_rows=True)
    assert await again.applied_offset() == 5
    await again.write(SinkBatch(1, 9, rows=[row(1000, 4), row(2000, 1)], outputs=[out(7, 0)]))
    await again.close()
    assert ids(path) == [[4, 0], [7, 0]]
    assert [line["row"]["values"] for line in lines(path)[5:]] == [  # type: ignore[index]
        {"totalRequestCount": 4},
        {"totalRequestCount": 1},
    ]


async def test_stdout_gets_the_same_lines_without_recovery() -> None:
    buffer = io.BytesIO()
    sink = NdjsonSink(None, stdout=buffer)
    await sink.setup([AGG])
    await sink.write(B1)
    await sink.write(B1)  # same batch: no-op
    assert await sink.applied_offset() == 5
    assert [orjson.loads(line)["id"] for line in buffer.getvalue().splitlines()] == [
        [1, 0],
        [1, 1],
    ]
    await sink.close()


async def test_a_line_over_the_limit_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    path = tmp_path / "outputs.ndjson"
    sink = await opened(path)
    sink.line_bytes_max = 200
    batch = SinkBatch(1, 3, outputs=[out(1, 0), out(2, 0, blob="x" * 300)])
    with pytest.raises(SinkError, match="over the limit of 200") as e:
        await sink.write(batch)
    assert not e.value.retriable
    assert path.read_bytes() == b""
    assert await sink.applied_offset() == 0
    await sink.close()


async def test_a_file_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.ndjson"
    path.write_bytes(b'{"hello": "world"}\n')
    with pytest.raises(SinkError, match="no id or row") as e:
        await opened(path)
    assert not e.value.retriable
