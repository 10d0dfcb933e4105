"""Stream definitions and the check every event passes on ingest and on apply (pure).

A ``StreamDef`` names a stream, its attributes with their types and, optionally, the
attribute that holds the event time (epoch ms). ``validate`` refuses an event whose
attributes do not match exactly:

- every declared attribute present, no other attribute (an unknown extra is refused);
- ``string`` a str; ``int``/``long`` an int that is not a bool; ``float``/``double`` a
  finite float or an int (not a bool); ``bool`` a bool; ``None`` is never accepted.
  Ints are not range-checked (Python ints are exact; the engine encodes values beyond
  64 bits as strings in its state).

Speed: the check runs for every event, twice (ingest and apply). An event is reduced to
its *signature* ``(attribute names in dict order, value types in the same order)``,
two tuples built in C; a signature already accepted is a set look-up. Only a new
signature (a new key order, an int in a double attribute) takes the slow path, which
explains what is wrong or adds the signature to a bounded cache. Signatures with a
float-typed value also need a finiteness check per event (JSON cannot carry NaN or
infinities, but in-process events can).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import itemgetter
from typing import Any, Final

from walrep.engine.types import AttrType, Column
from walrep.errors import InvalidEventError

SIGNATURES_MAX: Final = 256  # accepted signatures cached per stream (key orders x type mixes)

_ACCEPTED: Final[dict[AttrType, tuple[type, ...]]] = {
    AttrType.STRING: (str,),
    AttrType.INT: (int,),
    AttrType.LONG: (int,),
    AttrType.FLOAT: (float, int),
    AttrType.DOUBLE: (float, int),
    AttrType.BOOL: (bool,),
}
FLOAT_TYPES: Final = frozenset({AttrType.FLOAT, AttrType.DOUBLE})
INT_TYPES: Final = frozenset({AttrType.INT, AttrType.LONG})


@dataclass(frozen=True)
class StreamDef:
    """An input stream: its name, attributes (in declaration order) and time attribute.

    ``timestamp`` names an ``int``/``long`` attribute holding the event time in epoch ms,
    or is None (the engine then uses the ingest time the WAL recorded).
    """

    name: str
    attributes: tuple[Column, ...]
    timestamp: str | None = None
    _by_name: dict[str, AttrType] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a stream needs a name")
        by_name = {c.name: c.type for c in self.attributes}
        if len(by_name) != len(self.attributes):
            raise ValueError(f"stream {self.name}: duplicate attribute names")
        if self.timestamp is not None and by_name.get(self.timestamp) not in INT_TYPES:
            raise ValueError(
                f"stream {self.name}: timestamp attribute {self.timestamp!r} must be a "
                "declared int or long attribute"
            )
        object.__setattr__(self, "_by_name", by_name)

    @classmethod
    def of(
        cls, name: str, attributes: Mapping[str, str | AttrType], timestamp: str | None = None
    ) -> StreamDef:
        """From ``{"apiName": "string", ...}`` (Siddhi's type names, or ``AttrType``)."""
        cols = []
        for attr, typ in attributes.items():
            try:
                cols.append(Column(attr, typ if isinstance(typ, AttrType) else AttrType(typ)))
            except ValueError:
                known = ", ".join(t.value for t in AttrType)
                raise ValueError(
                    f"stream {name}: attribute {attr!r} has unknown type {typ!r} ({known})"
                ) from None
        return cls(name, tuple(cols), timestamp)

    def type_of(self, attribute: str) -> AttrType | None:
        return self._by_name.get(attribute)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.attributes)


def validate(stream_def: StreamDef, attributes: dict[str, Any]) -> None:
    """Raise ``InvalidEventError`` (naming the stream and the attribute) unless the
    attributes match ``stream_def`` exactly (see the module docstring)."""
    validator_for(stream_def).validate(attributes)


_VALIDATORS: dict[StreamDef, Validator] = {}


def validator_for(stream_def: StreamDef) -> Validator:
    """The (cached) compiled validator of ``stream_def``."""
    found = _VALIDATORS.get(stream_def)
    if found is None:
        found = _VALIDATORS.setdefault(stream_def, Validator(stream_def))
    return found


class Validator:
    """The compiled check of one ``StreamDef`` (see the module docstring).

    The signature cache only memoizes a pure function of the signature, so which
    signatures happen to be cached never changes an answer.
    """

    def __init__(self, stream_def: StreamDef) -> None:
        self.stream_def = stream_def
        self._accepted: dict[tuple[tuple[str, ...], tuple[type, ...]], tuple[str, ...]] = {}
        self._names = frozenset(stream_def.names)

    def validate(self, attributes: dict[str, Any]) -> None:
        if not self.ok(attributes):
            raise InvalidEventError(self.explain(attributes))

    def ok(self, attributes: dict[str, Any]) -> bool:
        if type(attributes) is not dict:
            return False
        floats = self._signature_ok((tuple(attributes), tuple(map(type, attributes.values()))))
        if floats is None:
            return False
        return all(math.isfinite(attributes[name]) for name in floats)

    def ok_batch(self, batch: Sequence[dict[str, Any]]) -> list[bool] | None:
        """None when every event passes (the fast, common answer), else one flag each.

        The common batch has one signature throughout (one producer, one key order):
        the events' key and type tuples are compared with the first event's in C
        (``list.count``), with no hashing; the first signature is looked up once.
        """
        if not batch or not all(type(a) is dict for a in batch):
            return [self.ok(a) for a in batch]
        keys = list(map(tuple, batch))
        types = list(map(tuple, map(map, repeat(type), map(dict.values, batch))))
        n = len(batch)
        if keys.count(keys[0]) == n and types.count(types[0]) == n:
            floats = self._signature_ok((keys[0], types[0]))
            if floats is not None and all(
                all(map(math.isfinite, map(itemgetter(name), batch))) for name in floats
            ):
                return None
        flags = [self.ok(a) for a in batch]
        return None if all(flags) else flags

    def _signature_ok(
        self, sig: tuple[tuple[str, ...], tuple[type, ...]]
    ) -> tuple[str, ...] | None:
        """The names of float values to check for finiteness, or None if refused."""
        found = self._accepted.get(sig)
        if found is not None:
            return found
        names, types = sig
        if len(names) != len(self._names) or not self._names.issuperset(names):
            return None
        type_of = self.stream_def.type_of
        floats = []
        for name, typ in zip(names, types, strict=True):
            declared = type_of(name)
            assert declared is not None
            if typ not in _ACCEPTED[declared]:
                return None
            if typ is float:
                floats.append(name)
        result = tuple(floats)
        if len(self._accepted) < SIGNATURES_MAX:
            self._accepted[sig] = result
        return result

    def explain(self, attributes: object) -> str:
        """Why ``attributes`` is refused (for an event that ``ok`` refused)."""
        stream = self.stream_def.name
        if not isinstance(attributes, dict):
            return f"stream {stream}: attributes must be a dict, got {type(attributes).__name__}"
        for col in self.stream_def.attributes:
            if col.name not in attributes:
                return f"stream {stream}: attribute {col.name!r} is missing"
            value = attributes[col.name]
            if type(value) not in _ACCEPTED[col.type]:
                return (
                    f"stream {stream}: attribute {col.name!r} must be {col.type.value}, "
                    f"got {_type_name(value)}"
                )
            if type(value) is float and not math.isfinite(value):
                return f"stream {stream}: attribute {col.name!r} must be finite, got {value!r}"
        extra = sorted(str(k) for k in attributes if k not in self._names)
        if extra:
            return f"stream {stream}: unknown attribute {extra[0]!r} (not declared)"
        return f"stream {stream}: attributes do not match the definition"


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def accepted_types(attr_type: AttrType) -> tuple[type, ...]:
    """The Python types a value of ``attr_type`` may have."""
    return _ACCEPTED[attr_type]


def select(flags: Iterable[bool], items: Iterable[Any]) -> list[Any]:
    """``items`` where ``flags`` is true (a C-level ``itertools.compress``)."""
    return list(compress(items, flags))


def getter(names: Sequence[str]) -> Any:
    """An ``itemgetter`` that always returns a tuple (also for zero or one name)."""
    if not names:
        return lambda _attrs: ()
    if len(names) == 1:
        one = itemgetter(names[0])
        return lambda attrs: (one(attrs),)
    return itemgetter(*names)
