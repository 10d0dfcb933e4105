"""Generated fold and merge code for a plan (the hot loops of the engine).

The two hot functions (``fold`` per source stream, possibly fused over several plans
reading one stream, and ``merge_into``) are generated as Python source for each
aggregation (as ``dataclasses`` and ``collections.namedtuple`` do): with the column list
unrolled, a fold step is a handful of bytecodes per column instead of a loop over column
descriptors. Attribute names enter the source only through ``repr`` (string literals);
functions and constants only through the namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from walrep.engine.aggregators import ColKind, FnSource, exact
from walrep.engine.schema import FLOAT_TYPES
from walrep.engine.types import AttrType

if TYPE_CHECKING:
    from walrep.engine.plan import Plan


def _compile(source: str, name: str, namespace: dict[str, Any]) -> Any:
    scope = dict(namespace)
    exec(compile(source, f"<walrep kernel {name}>", "exec"), scope)
    return scope[name]


def _norm(expr: str, attr_type: AttrType | None) -> str:
    # A double is held as a float with 0.0 for -0.0 (x + 0.0 does both), so equal
    # values are identical objects in keys, sets and min/max ties.
    return f"({expr} + 0.0)" if attr_type in FLOAT_TYPES else expr


@dataclass(frozen=True)
class Member:
    """One consumer of a fused fold: its plan, the shape of its pending, its streams."""

    plan: Plan
    by_sec: bool  # pending is second -> key -> delta (an aggregation), else key -> delta
    multi: bool  # the plan reads several streams: the last event is the highest offset


def _block(
    member: Member,
    stream: str,
    type_of: Callable[[str], AttrType | None],
    attr: Callable[[str], str],
    fn_vars: list[str],
    deltas: str,
) -> list[str]:
    """The loop-body lines folding one event into ``deltas`` for one member."""
    plan = member.plan
    key_parts = [_norm(attr(c.name), c.type) for c in plan.key_columns]
    init: list[str] = ["i", "a"]
    update: list[str] = []
    for p, slot in enumerate(plan.slots):
        at = f"r[{p + 2}]"
        if slot.kind is ColKind.COUNT:
            init.append("1")
            update.append(f"{at} += 1")
            continue
        src = dict(slot.sources)[stream]
        exact_done = False
        if callable(src):
            assert slot.value_type is not None
            fs = FnSource(src, slot.value_type)
            expr = fn_vars[plan.fn_sources[stream].index(fs)]  # checked and normalized
        elif isinstance(src, str):
            expr = attr(src)
            vtype = type_of(src)
            if slot.kind is not ColKind.SUM_EXACT:
                expr = _norm(expr, vtype)
        else:
            assert isinstance(src, int | float)
            if slot.kind is ColKind.SUM_EXACT:
                expr, exact_done = repr(exact(src)), True
            else:
                expr = repr(src + 0.0 if isinstance(src, float) else src)
        if slot.kind is ColKind.SUM_EXACT and not exact_done:
            expr = f"_exact({expr})"
        if slot.kind in (ColKind.SUM, ColKind.SUM_EXACT):
            init.append(expr)
            if expr != "0":
                update.append(f"{at} += {expr}")
        elif slot.kind is ColKind.DISTINCT:
            init.append("{" + expr + "}")
            update.append(f"{at}.add({expr})")
        else:
            op = "<" if slot.kind is ColKind.MIN else ">"
            init.append(expr)
            update += [f"m = {expr}", f"if m {op} {at}:", f"    {at} = m"]
    # The carried values are taken while the event is at hand (its dict is in the CPU
    # caches; a delta keeps no reference to the event): a tuple, the same object in the
    # rows of every duration.
    if plan.carried_columns:
        carried = [attr(c.name) for c in plan.carried_columns]
        init[1] = "(" + ", ".join(carried) + ("," if len(carried) == 1 else "") + ")"
    else:
        init[1] = "None"
    if member.multi:
        last = [
            "if i > r[0]:",
            "    r[0] = i",
            *([f"    r[1] = {init[1]}"] if plan.carried_columns else []),
        ]
    else:
        last = ["r[0] = i", *([f"r[1] = {init[1]}"] if plan.carried_columns else [])]
    key = "(" + ", ".join(key_parts) + ("," if len(key_parts) == 1 else "") + ")"
    return [
        f"k = {key}",
        f"r = {deltas}.get(k)",
        "if r is None:",
        f"    {deltas}[k] = [{', '.join(init)}]",
        "else:",
        *[f"    {stmt}" for stmt in last + update],
    ]


def fold_source(
    members: Sequence[Member], stream: str, type_of: Callable[[str], AttrType | None]
) -> str:
    """``fold(pending, offsets, attrs, secs, *fn_values)`` for one member, or, for
    several, ``fold(pendings, offsets, attrs, secs, *fn_values of each member)``: one
    loop over the events that folds each into every member (attributes read once)."""
    locals_: dict[str, str] = {}

    def attr(name: str) -> str:
        if name not in locals_:
            locals_[name] = f"x{len(locals_)}"
        return locals_[name]

    body: list[str] = []
    fn_params: list[str] = []
    fn_vars: list[str] = []
    for m, member in enumerate(members):
        count = len(member.plan.fn_sources[stream])
        mine = [f"v{m}_{j}" for j in range(count)]
        fn_params += [f"f{m}_{j}" for j in range(count)]
        fn_vars += mine
        body += _block(member, stream, type_of, attr, mine, f"d{m}")
    timed = any(m.by_sec for m in members)
    loop_vars = ", ".join(["i", "a", *(["sec"] if timed else []), *fn_vars])
    zipped = ", ".join(["offsets", "attrs", *(["secs"] if timed else []), *fn_params])
    fused = len(members) > 1
    params = ["pendings" if fused else "p0", "offsets", "attrs", "secs", *fn_params]
    head = [f"def fold({', '.join(params)}):"]
    if fused:
        head += [f"    p{m} = pendings[{m}]" for m in range(len(members))]
    head += [f"    d{m} = p{m}" for m, member in enumerate(members) if not member.by_sec]
    if timed:  # second -> {key: delta}; consecutive events mostly share a second
        head.append("    sec_now = None")
    head.append(f"    for {loop_vars} in zip({zipped}):")
    if timed:
        head.append("        if sec != sec_now:")
        for m, member in enumerate(members):
            if member.by_sec:
                head += [
                    f"            d{m} = p{m}.get(sec)",
                    f"            if d{m} is None:",
                    f"                d{m} = p{m}[sec] = {{}}",
                ]
        head.append("            sec_now = sec")
    loads = [f"        {var} = a[{name!r}]" for name, var in locals_.items()]
    return "\n".join(head + loads + [f"        {line}" for line in body]) + "\n"


def compile_fold(
    members: Sequence[Member], stream: str, type_of: Callable[[str], AttrType | None]
) -> Callable[..., None]:
    """The compiled ``fold_source``."""
    fn: Callable[..., None] = _compile(
        fold_source(members, stream, type_of), "fold", {"_exact": exact}
    )
    return fn


def merge_source(plan: Plan) -> str:
    # A stored row is a delta's values as a tuple, never changed once stored: a new row
    # is taken as it is, a merge builds a new tuple. So the dict copy of a bucket
    # (copy-on-write) may share its rows, and so may the buckets of durations. The merge
    # is commutative: the carried values are those of the higher last offset.
    merged: list[str] = []
    for p, slot in enumerate(plan.slots):
        d, o = f"d[{p + 2}]", f"o[{p + 2}]"
        if slot.kind in (ColKind.COUNT, ColKind.SUM, ColKind.SUM_EXACT):
            merged.append(f"{o} + {d}")
        elif slot.kind is ColKind.DISTINCT:
            merged.append(f"({o} if {d} <= {o} else {o} | {d})")
        else:
            op = "<=" if slot.kind is ColKind.MIN else ">="
            merged.append(f"({o} if {o} {op} {d} else {d})")
    values = ", ".join(merged)
    lines = [
        "def merge_into(rows, inner):",
        "    setdefault = rows.setdefault",
        "    for g, d in inner.items():",
        "        o = setdefault(g, d)",
        "        if o is not d:",
        "            if d[0] > o[0]:",
        f"                rows[g] = (d[0], d[1], {values})",
        "            else:",
        f"                rows[g] = (o[0], o[1], {values})",
    ]
    return "\n".join(lines) + "\n"


def compile_merge(plan: Plan) -> Callable[[dict[Any, Any], dict[Any, Any]], None]:
    """The compiled ``merge_source``."""
    fn: Callable[[dict[Any, Any], dict[Any, Any]], None] = _compile(
        merge_source(plan), "merge_into", {}
    )
    return fn
