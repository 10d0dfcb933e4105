"""Stream definitions and the event check (walrep.engine.schema)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from walrep.engine.schema import StreamDef, validate, validator_for
from walrep.engine.types import AttrType
from walrep.errors import InvalidEventError

ORDER = StreamDef.of(
    "Order",
    {"shop": "string", "qty": "int", "amount": "double", "paid": "bool", "ts": "long"},
    timestamp="ts",
)
GOOD: dict[str, Any] = {
    "shop": "s1",
    "qty": 2,
    "amount": 9.5,
    "paid": True,
    "ts": 1_700_000_000_000,
}


def refused(attrs: Any) -> str:
    with pytest.raises(InvalidEventError) as info:
        validate(ORDER, attrs)
    return str(info.value)


def test_accepts_exact_match_in_any_key_order() -> None:
    validate(ORDER, GOOD)
    validate(ORDER, dict(reversed(list(GOOD.items()))))
    validate(ORDER, {**GOOD, "amount": 9})  # an int is accepted for a double


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"qty": None}, ["Order", "'qty'", "int", "null"]),
        ({"qty": True}, ["Order", "'qty'", "int", "bool"]),  # bool is not an int
        ({"qty": 2.0}, ["'qty'", "float"]),
        ({"amount": "9.5"}, ["'amount'", "double", "str"]),
        ({"amount": False}, ["'amount'", "bool"]),
        ({"amount": math.nan}, ["'amount'", "finite"]),
        ({"amount": -math.inf}, ["'amount'", "finite"]),
        ({"paid": 1}, ["'paid'", "bool", "int"]),
        ({"shop": 7}, ["'shop'", "string"]),
        ({"extra": 1}, ["Order", "unknown attribute 'extra'"]),
    ],
)
def test_refusals_name_stream_and_attribute(change: dict[str, Any], words: list[str]) -> None:
    message = refused({**GOOD, **change})
    for word in words:
        assert word in message


def test_missing_attribute() -> None:
    attrs = dict(GOOD)
    del attrs["paid"]
    assert "attribute 'paid' is missing" in refused(attrs)
    assert "attributes must be a dict" in refused([1, 2])


def test_definition_checks() -> None:
    with pytest.raises(ValueError, match="timestamp"):
        StreamDef.of("S", {"ts": "string"}, timestamp="ts")
    with pytest.raises(ValueError, match="timestamp"):
        StreamDef.of("S", {"a": "long"}, timestamp="ts")
    with pytest.raises(ValueError, match="unknown type"):
        StreamDef.of("S", {"a": "decimal"})
    assert ORDER.type_of("amount") is AttrType.DOUBLE
    assert ORDER.names == ("shop", "qty", "amount", "paid", "ts")


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
)


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from([*ORDER.names, "other"]), values, min_size=4, max_size=6
        ).map(lambda d: {**GOOD, **d} if len(d) % 2 else d),
        min_size=1,
        max_size=12,
    )
)
def test_batch_check_agrees_with_single_check(batch: list[dict[str, Any]]) -> None:
    v = validator_for(ORDER)
    single = []
    for attrs in batch:
        try:
            validate(ORDER, attrs)
            single.append(True)
        except InvalidEventError:
            single.append(False)
    assert [v.ok(a) for a in batch] == single
    flags = v.ok_batch(batch)
    assert (flags is None) == all(single)
    assert flags is None or flags == single
