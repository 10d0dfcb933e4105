"""Aggregate kinds and their exact arithmetic (pure).

Every stored aggregate is a *commutative monoid with exact arithmetic*: counts and
integer sums (Python ints), min and max (of values normalized so that equal values are
identical: a double is held as a float, ``-0.0`` as ``0.0``), distinct sets, and double
sums held exactly as an integer multiple of 2**-1074 (every finite double is one; the
float shown is the correctly rounded quotient). Carried attributes are "the value of the
event with the highest offset". So folding events in any grouping, and merging partial
results in any order, gives the same state bit for bit: the engine batches freely, and
applying [0, N) in any chunks agrees. ``walrep.engine.plan`` lays the aggregates of one
aggregation out as slots; ``walrep.engine.kernels`` generates the code that folds them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from walrep.engine.schema import FLOAT_TYPES, INT_TYPES
from walrep.engine.types import AttrType, Column, Value

EXACT_SHIFT: Final = 1074  # 2**-1074 is the smallest positive double (subnormal)
_EXACT_ONE: Final = 1 << EXACT_SHIFT
_I64_MIN: Final = -(2**63)
_I64_MAX: Final = 2**63 - 1


def exact(value: int | float) -> int:
    """``value`` as an exact integer multiple of 2**-1074 (finite values only)."""
    if type(value) is int:
        return value << EXACT_SHIFT
    num, den = value.as_integer_ratio()  # den is a power of two, at most 2**1074
    return num << (EXACT_SHIFT + 1 - den.bit_length())


def exact_to_float(total: int) -> float:
    """The double nearest to ``total * 2**-1074`` (int / int is correctly rounded)."""
    try:
        return total / _EXACT_ONE
    except OverflowError:
        return math.inf if total > 0 else -math.inf


def encode_exact(total: int) -> str:
    """An exact sum as ``"<odd hex mantissa>p<binary exponent>"`` (``"0"`` for zero):
    ``"3p1072"`` is 3 * 2**1072, i.e. 0.75 as a multiple of 2**-1074."""
    if total == 0:
        return "0"
    shift = (total & -total).bit_length() - 1
    return f"{total >> shift:x}p{shift}"


def decode_exact(text: object) -> int:
    """The inverse of ``encode_exact``; ``ValueError`` for anything else."""
    if type(text) is not str:
        raise ValueError(f"exact sum {text!r} is not a string")
    if text == "0":
        return 0
    mantissa, sep, shift = text.partition("p")
    if not sep or not shift.isdigit() or int(mantissa, 16) % 2 == 0:
        raise ValueError(f"exact sum {text!r}")
    return int(mantissa, 16) << int(shift)


class ColKind(enum.Enum):
    COUNT = "count"
    SUM = "sum"  # an exact int sum of ints
    SUM_EXACT = "sum_exact"  # a double sum, held exactly (see ``exact``)
    MIN = "min"
    MAX = "max"
    DISTINCT = "distinct"  # a set of values; the stored column shows its size


@dataclass(frozen=True)
class Slot:
    """One accumulator: its kind, value type and, per source stream, its value source."""

    kind: ColKind
    value_type: AttrType | None
    sources: tuple[tuple[str, object], ...]  # (stream, attr name | fn | number)


@dataclass(frozen=True)
class StoredColumn:
    column: Column
    kind: ColKind
    slot: int


@dataclass(frozen=True)
class FnSource:
    """A value function of one stream whose results are computed and checked first."""

    fn: Callable[[Mapping[str, Any]], Value]
    value_type: AttrType


def enc_value(value: Any) -> Any:
    # Ints beyond 64 bits (an exact sum, a huge in-process value) are not JSON numbers
    # orjson writes: they become decimal strings, and the column type says to read back.
    if type(value) is int and not _I64_MIN <= value <= _I64_MAX:
        return str(value)
    return value


_PY_TYPES: Final[dict[AttrType, tuple[type, ...]]] = {
    AttrType.STRING: (str,),
    AttrType.BOOL: (bool,),
    AttrType.INT: (int,),
    AttrType.LONG: (int,),
    AttrType.FLOAT: (float, int),
    AttrType.DOUBLE: (float, int),
}


def dec_value(value: Any, attr_type: AttrType) -> Any:
    if type(value) is str and attr_type is not AttrType.STRING:
        return int(value)  # a big int, see _enc_value
    if type(value) not in _PY_TYPES[attr_type]:
        raise ValueError(f"{value!r} is not a {attr_type.value}")
    return value


def check_fn_values(values: list[Any], value_type: AttrType) -> list[Any] | None:
    """``values`` of a function as the kernel takes them, or None if one is bad.

    Ints (a bool counts as 0/1) for int types, finite numbers as normalized floats for
    doubles (see ``_norm``), str for strings, bool for bools.
    """
    types = set(map(type, values))
    if value_type in INT_TYPES:
        if types <= {int}:
            return values
        if types <= {int, bool}:
            return [int(v) for v in values]
        return None
    if value_type in FLOAT_TYPES:
        if not types <= {int, float, bool}:
            return None
        out = [v + 0.0 for v in values]
        return out if all(map(math.isfinite, out)) else None
    expected = str if value_type is AttrType.STRING else bool
    return values if types <= {expected} else None


def fn_values_or_errors(
    fs: FnSource, attrs: Sequence[Any]
) -> tuple[list[Any] | None, list[bool] | None]:
    """``(values, None)`` when ``fs.fn`` works for every event, else ``(None, flags)``
    with False for the events where it raises or returns a bad value."""
    try:
        values = check_fn_values(list(map(fs.fn, attrs)), fs.value_type)
    except Exception:  # app code: any error only marks the event, found one by one below
        values = None
    if values is not None:
        return values, None
    flags = []
    for a in attrs:
        try:
            flags.append(check_fn_values([fs.fn(a)], fs.value_type) is not None)
        except Exception:  # a deterministic function fails the same way on every node
            flags.append(False)
    return None, flags
