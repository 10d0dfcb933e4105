"""The canonical encoding of engine state: the snapshot bytes and what the digest hashes.

Format ``walrep.engine.state`` version 1: one UTF-8 JSON document as orjson writes it
(no whitespace, object keys sorted, floats in shortest round-trip form), so that
``orjson.dumps(orjson.loads(b), option=OPT_SORT_KEYS) == b`` for every state ``b``::

    {
      "applied": 120000,                      # state after offsets [0, applied)
      "apps": [                               # sorted by app name
        {
          "name": "apim_analytics", "version": "3f2a...",
          "streams": {"Request": {"accepted": n, "errors": n, "filtered": n, "rejected": n}, ...},
          "aggregations": [                   # in declaration order
            {"name": "ApiUserPerAppAgg", "errors": n, "watermark_ms": int | null,
             "durations": [                   # finest first
               {"duration": "seconds", "late_dropped": n,
                "buckets": [[start_ms, ROWS], ...]},   # sorted by start
               ...]},
            ...],
          "tables": [{"name": ..., "errors": n, "rows": ROWS}, ...]
        }, ...],
      "duplicates_skipped": n,                # log events with an already applied (producer, seq)
      "format": "walrep.engine.state", "format_version": 1,
      "producers": [[producer_id, [[first_seq, first_offset, count], ...]], ...],  # by id
      "unknown_streams": {"stream": n, ...}
    }

``ROWS`` is ``[[[key values...], [last offset, [carried values...] | null, slot values...]],
...]`` sorted by key: the offset of the last event folded into the row, the carried
attributes (null when the aggregation carries none), then one value per accumulator
slot (``walrep.engine.plan.Plan.slots``: stored columns that share an accumulator,
like a ``count`` and ``AGG_COUNT``, share a slot). Values are JSON numbers, strings and
booleans, except: an exact double sum (the integer multiple of 2**-1074 it holds) is
``"<odd mantissa, hex>p<binary exponent>"``, e.g. ``"3p1072"`` for 0.75, or ``"0"``; a
distinct set is the sorted list of its values; an integer outside the signed 64-bit
range is its decimal string (the column type says to read it back as an int).

The bytes of each bucket's ``ROWS`` are cached on the bucket until it is written again,
so a digest re-encodes only what changed since the last one (it still hashes all).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from walrep.engine.buckets import Bucket
from walrep.engine.dedup import Runs
from walrep.engine.plan import Plan
from walrep.engine.timeunits import Duration
from walrep.errors import SnapshotError

FORMAT_NAME: Final = "walrep.engine.state"
FORMAT_VERSION: Final = 1
DIGEST_BYTES: Final = 16
_COUNTER_NAMES: Final = ("accepted", "errors", "filtered", "rejected")


@dataclass
class AggView:
    name: str
    plan: Plan
    durations: tuple[Duration, ...]
    levels: list[dict[int, Bucket]]
    watermark_ms: int | None
    late_dropped: list[int]
    errors: int


@dataclass
class TableView:
    name: str
    plan: Plan
    bucket: Bucket
    errors: int


@dataclass
class AppView:
    name: str
    version: str
    streams: dict[str, dict[str, int]]
    aggregations: list[AggView]
    tables: list[TableView]


@dataclass
class StateView:
    """Everything that is engine state, as references (live) or frozen (a capture)."""

    applied: int
    apps: list[AppView]
    producers: dict[str, Runs]
    duplicates_skipped: int
    unknown_streams: dict[str, int] = field(default_factory=dict)


def digest_of(state: bytes) -> str:
    """The state digest: blake2b-128 of the canonical bytes, hex."""
    return hashlib.blake2b(state, digest_size=DIGEST_BYTES).hexdigest()


def encode_rows(plan: Plan, bucket: Bucket) -> bytes:
    """``ROWS`` of one bucket, from its cache when it has not changed."""
    cached = bucket.encoded
    if cached is not None:
        return cached
    rows = bucket.rows
    data: bytes | None = None
    if plan.exact_free:
        try:  # tuples are JSON arrays: no per-row work unless an int exceeds 64 bits
            data = orjson.dumps(sorted(rows.items()))
        except TypeError:
            data = None
    if data is None:
        data = orjson.dumps([plan.encode_row(k, rows[k]) for k in sorted(rows)])
    bucket.encoded = data
    return data


def _levels_json(view: AggView) -> list[dict[str, Any]]:
    out = []
    for li, level in enumerate(view.levels):
        parts = [
            b"[%d,%s]" % (start, encode_rows(view.plan, level[start])) for start in sorted(level)
        ]
        out.append(
            {
                "buckets": orjson.Fragment(b"[" + b",".join(parts) + b"]"),
                "duration": view.durations[li].value,
                "late_dropped": view.late_dropped[li],
            }
        )
    return out


def encode_state(view: StateView) -> bytes:
    """The canonical bytes of ``view`` (see the module docstring)."""
    apps = []
    for app in sorted(view.apps, key=lambda a: a.name):
        apps.append(
            {
                "aggregations": [
                    {
                        "durations": _levels_json(agg),
                        "errors": agg.errors,
                        "name": agg.name,
                        "watermark_ms": agg.watermark_ms,
                    }
                    for agg in app.aggregations
                ],
                "name": app.name,
                "streams": app.streams,
                "tables": [
                    {
                        "errors": t.errors,
                        "name": t.name,
                        "rows": orjson.Fragment(encode_rows(t.plan, t.bucket)),
                    }
                    for t in app.tables
                ],
                "version": app.version,
            }
        )
    producers = [[pid, view.producers[pid]] for pid in sorted(view.producers)]
    doc = {
        "applied": view.applied,
        "apps": apps,
        "duplicates_skipped": view.duplicates_skipped,
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "producers": producers,
        "unknown_streams": view.unknown_streams,
    }
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


# --- decoding ------------------------------------------------------------------------


@dataclass
class DecodedAgg:
    levels: list[dict[int, Bucket]]
    watermark_ms: int | None
    late_dropped: list[int]
    errors: int


@dataclass
class DecodedApp:
    streams: dict[str, dict[str, int]]
    aggregations: dict[str, DecodedAgg]
    tables: dict[str, tuple[Bucket, int]]


@dataclass
class DecodedState:
    applied: int
    apps: dict[str, DecodedApp]
    producers: dict[str, Runs]
    duplicates_skipped: int
    unknown_streams: dict[str, int]


def check_header(state: bytes, expected: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The parsed document, after checking format, version and app versions."""
    try:
        doc = orjson.loads(state)
    except orjson.JSONDecodeError as e:
        raise SnapshotError(f"engine state does not decode (not JSON: {e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise SnapshotError(f"engine state does not decode: no {FORMAT_NAME!r} document")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise SnapshotError(
            f"engine state format version {version!r} is not known here (this build reads "
            f"version {FORMAT_VERSION}): replay the log from scratch or use a matching build"
        )
    try:
        found = [(a["name"], a["version"]) for a in doc["apps"]]
    except (KeyError, TypeError) as e:
        raise SnapshotError(f"engine state is malformed: apps: {e!r}") from e
    if found != sorted(expected):
        raise SnapshotError(_version_mismatch(found, sorted(expected)))
    return doc


def _version_mismatch(found: list[tuple[str, str]], expected: list[tuple[str, str]]) -> str:
    have, want = dict(found), dict(expected)
    diffs = []
    for name in sorted(set(have) | set(want)):
        if name not in want:
            diffs.append(f"{name} {have[name]} is in the snapshot but not deployed")
        elif name not in have:
            diffs.append(f"{name} {want[name]} is deployed but not in the snapshot")
        elif have[name] != want[name]:
            diffs.append(f"{name}: snapshot has version {have[name]}, deployed is {want[name]}")
    return (
        "snapshot app versions differ from the deployed apps: "
        + "; ".join(diffs)
        + " (replay the log from scratch with the deployed apps to rebuild the state)"
    )


def decode_state(
    state: bytes, plans: dict[str, dict[str, Plan]], expected: Sequence[tuple[str, str]]
) -> DecodedState:
    """Decode ``state`` for apps whose versions are ``expected``; ``plans[app][name]``
    is the plan of each aggregation and table. ``SnapshotError`` for anything else."""
    doc = check_header(state, expected)
    try:
        apps = {a["name"]: _decode_app(a, plans[a["name"]]) for a in doc["apps"]}
        producers = {}
        for pid, runs in doc["producers"]:
            if type(pid) is not str or not runs:
                raise ValueError(f"producer {pid!r}")
            producers[pid] = tuple((_int(a), _int(b), _int(c)) for a, b, c in runs)
        unknown = {str(k): _int(v) for k, v in doc["unknown_streams"].items()}
        return DecodedState(
            _int(doc["applied"]), apps, producers, _int(doc["duplicates_skipped"]), unknown
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise SnapshotError(f"engine state is malformed: {e!r}") from e


def _int(value: Any) -> int:
    if type(value) is not int:
        raise ValueError(f"expected an int, got {value!r}")
    return value


def _decode_app(doc: dict[str, Any], plans: dict[str, Plan]) -> DecodedApp:
    streams = {
        str(s): {c: _int(counts[c]) for c in _COUNTER_NAMES} for s, counts in doc["streams"].items()
    }
    aggs = {}
    for agg in doc["aggregations"]:
        plan = plans[agg["name"]]
        levels, late = [], []
        for level in agg["durations"]:
            buckets = {}
            for start, rows in level["buckets"]:
                buckets[_int(start)] = Bucket(dict(map(plan.decode_row, rows)), 0)
            levels.append(buckets)
            late.append(_int(level["late_dropped"]))
        wm = agg["watermark_ms"]
        aggs[agg["name"]] = DecodedAgg(
            levels, None if wm is None else _int(wm), late, _int(agg["errors"])
        )
    tables = {
        t["name"]: (Bucket(dict(map(plans[t["name"]].decode_row, t["rows"])), 0), _int(t["errors"]))
        for t in doc["tables"]
    }
    return DecodedApp(streams, aggs, tables)
