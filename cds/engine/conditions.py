"""The pack's condition language, compiled to durable_rules JSON conditions.

A condition in YAML is one of:

- a list: every item holds (``all``);
- ``{all: [...]}``, ``{any: [...]}``, ``{not: cond}``;
- a mapping of fact field -> value (equality) or -> operators
  ``{gt|gte|lt|lte|eq|ne: value, in: [values], exists: bool}`` (several keys: all hold);
- a ``"@ref"`` string naming a condition stored in a table (``@tables.when.x``, ``@row.when``);
- ``{any_row: {table: T, where: key, where_not: key, cond: ...}}`` (or ``all_row``): the
  condition repeated for every row of table T (optionally only rows with / without a
  key), ``@row.x`` naming that row's values: "in any renal band whose limit ...".

Values are literals or ``"@profile.x"``, ``"@tables.x"``, ``"@row.x"`` references, or
compile-time arithmetic ``{mul|div|min|max|add|sub: [values]}``: pack numbers are combined
once, at load time, so a rule compares a measured fact with a constant.

A missing fact field means *unknown*: a comparison on it is false, and ``not`` of a
comparison is true (``not (x > 5)`` holds when x is missing). ``not`` is pushed down to
the comparisons (De Morgan) because durable_rules has no negation of a sub-expression.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cds.errors import PackError

OPS = {"gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte", "ne": "$neq"}
NEGATE = {"gt": "lte", "gte": "lt", "lt": "gte", "lte": "gt", "eq": "ne", "ne": "eq"}
ARITH: dict[str, Callable[[list[float]], float]] = {
    "mul": lambda xs: _fold(xs, lambda a, b: a * b),
    "div": lambda xs: _fold(xs, lambda a, b: a / b),
    "add": lambda xs: _fold(xs, lambda a, b: a + b),
    "sub": lambda xs: _fold(xs, lambda a, b: a - b),
    "min": min,
    "max": max,
}


def _fold(xs: list[float], f: Callable[[float, float], float]) -> float:
    acc = xs[0]
    for x in xs[1:]:
        acc = f(acc, x)
    return acc


# ---- the intermediate tree -------------------------------------------------------------


@dataclass(frozen=True)
class Cmp:
    """One comparison of a fact field with a constant."""

    field: str
    op: str  # eq ne gt gte lt lte exists nexists
    value: Any = None


@dataclass(frozen=True)
class All:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Any_:
    items: tuple[Node, ...]


Node = Cmp | All | Any_  # noqa: UP007


class Resolver:
    """Resolves ``@`` references against the pack's profile, tables and the current row."""

    def __init__(
        self, scopes: Mapping[str, Any], where: str, present: frozenset[str] = frozenset()
    ) -> None:
        self.scopes = scopes
        self.where = where
        self.present = present  # fields the fact always carries (see ``negate``)

    def ref(self, text: str) -> Any:
        path = text[1:].split(".")
        node: Any = self.scopes
        for i, part in enumerate(path):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            else:
                options = list(node) if isinstance(node, Mapping) else []
                hint = difflib.get_close_matches(part, options, n=1)
                raise PackError(
                    f"unknown reference {text!r} (no {'.'.join(path[: i + 1])!r})"
                    + (f"; did you mean {hint[0]!r}?" if hint else ""),
                    field=self.where,
                )
        return node

    def value(self, v: Any) -> Any:
        if isinstance(v, str) and v.startswith("@"):
            return self.value(self.ref(v))
        if isinstance(v, Mapping) and len(v) == 1 and next(iter(v)) in ARITH:
            op, args = next(iter(v.items()))
            nums = [self.value(a) for a in args]
            nums = [n for n in nums if n is not None]
            if not nums or not all(isinstance(n, int | float) for n in nums):
                raise PackError(f"{op} needs numbers, got {args!r}", field=self.where)
            return ARITH[op](nums)
        if isinstance(v, float):
            return round(v, 9)
        return v


def parse(cond: Any, r: Resolver, fields: frozenset[str]) -> Node:
    """YAML condition -> tree, checking every field name against the fact's fields."""
    if isinstance(cond, str) and cond.startswith("@"):
        return parse(r.ref(cond), r, fields)
    if isinstance(cond, list):
        return All(tuple(parse(c, r, fields) for c in cond))
    if not isinstance(cond, Mapping) or not cond:
        raise PackError(f"a condition must be a list or a mapping, got {cond!r}", field=r.where)
    if len(cond) == 1 and next(iter(cond)) in ("any_row", "all_row"):
        key, spec = next(iter(cond.items()))
        rows = r.ref(f"@tables.{spec['table']}")
        items: list[Node] = []
        for row in rows:
            if spec.get("where") and row.get(spec["where"]) is None:
                continue
            if spec.get("where_not") and row.get(spec["where_not"]) is not None:
                continue
            sub = Resolver({**r.scopes, "row": row}, r.where, r.present)
            items.append(parse(spec["cond"], sub, fields))
        if not items:
            raise PackError(f"{key} over {spec['table']!r} selects no rows", field=r.where)
        return Any_(tuple(items)) if key == "any_row" else All(tuple(items))
    if len(cond) == 1 and next(iter(cond)) in ("all", "any", "not"):
        key, body = next(iter(cond.items()))
        if key == "not":
            return negate(parse(body, r, fields), r.present)
        if not isinstance(body, list) or not body:
            raise PackError(f"{key} needs a non-empty list", field=r.where)
        parsed = tuple(parse(c, r, fields) for c in body)
        return All(parsed) if key == "all" else Any_(parsed)
    out: list[Node] = []
    for name, spec in cond.items():
        if name not in fields:
            hint = difflib.get_close_matches(str(name), sorted(fields), n=1)
            raise PackError(
                f"unknown fact field {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""),
                field=r.where,
            )
        out.extend(_field_tests(name, spec, r))
    return out[0] if len(out) == 1 else All(tuple(out))


def _field_tests(name: str, spec: Any, r: Resolver) -> list[Node]:
    if isinstance(spec, str) and spec.startswith("@"):
        spec = r.ref(spec)
    if not isinstance(spec, Mapping) or (len(spec) == 1 and next(iter(spec)) in ARITH):
        return [Cmp(name, "eq", r.value(spec))]
    tests: list[Node] = []
    for op, raw in spec.items():
        if op == "exists":
            tests.append(Cmp(name, "exists" if raw else "nexists"))
        elif op == "in":
            values = [r.value(v) for v in raw]
            tests.append(Any_(tuple(Cmp(name, "eq", v) for v in values)))
        elif op in OPS or op == "eq":
            value = r.value(raw)
            if value is None:
                raise PackError(f"{name}.{op} has no value", field=r.where)
            tests.append(Cmp(name, op, value))
        else:
            raise PackError(f"unknown operator {op!r} on {name!r}", field=r.where)
    return tests


def negate(node: Node, present: frozenset[str] = frozenset()) -> Node:
    """Push ``not`` down to comparisons; a missing field makes a comparison false.

    ``present`` names fields the fact always carries (booleans with a default): their
    negation needs no "or missing" branch, which keeps compiled rules small.
    """
    if isinstance(node, All):
        return Any_(tuple(negate(n, present) for n in node.items))
    if isinstance(node, Any_):
        return All(tuple(negate(n, present) for n in node.items))
    if node.op == "exists":
        return Cmp(node.field, "nexists")
    if node.op == "nexists":
        return Cmp(node.field, "exists")
    if node.field in present:
        if node.op in ("eq", "ne") and isinstance(node.value, bool):
            flip = not node.value if node.op == "eq" else node.value
            return Cmp(node.field, "eq", flip)
        return Cmp(node.field, NEGATE[node.op], node.value)
    return Any_((Cmp(node.field, NEGATE[node.op], node.value), Cmp(node.field, "nexists")))


MAX_DISJUNCTS = 256


def _consistent(lits: frozenset[Cmp]) -> bool:
    by_field: dict[str, list[Cmp]] = {}
    for c in lits:
        by_field.setdefault(c.field, []).append(c)
    for cs in by_field.values():
        ops = {c.op for c in cs}
        if "nexists" in ops and len(ops) > 1:
            return False
        eqs = {repr(c.value) for c in cs if c.op == "eq"}
        if len(eqs) > 1:
            return False
        eq = next((c.value for c in cs if c.op == "eq"), None)
        if eq is not None and any(c.op == "ne" and c.value == eq for c in cs):
            return False
        nums = [
            c
            for c in cs
            if c.op in ("gt", "gte", "lt", "lte")
            and isinstance(c.value, int | float)
            and not isinstance(c.value, bool)
        ]
        lo, lo_open, hi, hi_open = float("-inf"), False, float("inf"), False
        for c in nums:
            v = float(c.value)
            if c.op in ("gt", "gte") and (v > lo or (v == lo and c.op == "gt")):
                lo, lo_open = v, c.op == "gt"
            if c.op in ("lt", "lte") and (v < hi or (v == hi and c.op == "lt")):
                hi, hi_open = v, c.op == "lt"
        if lo > hi or (lo == hi and (lo_open or hi_open)):
            return False
        if (
            isinstance(eq, int | float)
            and not isinstance(eq, bool)
            and nums
            and not evaluate(All(tuple(nums)), {nums[0].field: eq})
        ):
            return False
    return True


def _tidy(lits: frozenset[Cmp]) -> frozenset[Cmp]:
    """Drop ``exists`` where another comparison on the field already implies it."""
    compared = {c.field for c in lits if c.op not in ("exists", "nexists")}
    return frozenset(c for c in lits if not (c.op == "exists" and c.field in compared))


def dnf(node: Node) -> list[frozenset[Cmp]]:
    """Disjunctive normal form with contradictions and subsumed terms removed.

    durable_rules rejects deeply nested and/or trees (error 113, measured), and flat
    conjunctions are what its matcher is fastest at: each disjunct becomes one engine rule.
    """
    if isinstance(node, Cmp):
        return [frozenset((node,))]
    if isinstance(node, Any_):
        terms = [t for n in node.items for t in dnf(n)]
    else:
        terms = [frozenset()]
        for n in node.items:
            nxt = []
            for a in terms:
                for b in dnf(n):
                    t = a | b
                    if _consistent(t):
                        nxt.append(t)
            terms = list(dict.fromkeys(nxt))
            if len(terms) > MAX_DISJUNCTS * 4:
                raise PackError("condition too complex to compile (too many alternatives)")
    terms = list(dict.fromkeys(_tidy(t) for t in terms if _consistent(t)))
    terms.sort(key=len)
    kept: list[frozenset[Cmp]] = []
    for t in terms:
        if not any(k <= t for k in kept):
            kept.append(t)
    if len(kept) > MAX_DISJUNCTS:
        raise PackError(f"condition too complex to compile ({len(kept)} alternatives)")
    return kept


def conjunction_to_durable(term: frozenset[Cmp]) -> dict[str, Any]:
    items = [
        to_durable(c)
        for c in sorted(term, key=lambda c: (c.field != "kind", c.field, c.op, repr(c.value)))
    ]
    return items[0] if len(items) == 1 else {"$and": items}


def flatten(node: Node) -> Node:
    """Merge nested all-in-all and any-in-any: fewer nodes for the engine to walk."""
    if isinstance(node, All | Any_):
        kind = type(node)
        items: list[Node] = []
        for n in node.items:
            n = flatten(n)
            items.extend(n.items if isinstance(n, kind) else (n,))
        return items[0] if len(items) == 1 else kind(tuple(items))
    return node


def to_durable(node: Node) -> dict[str, Any]:
    """Tree -> durable_rules expression (the value under ``m``)."""
    node = flatten(node)
    if isinstance(node, All):
        return {"$and": [to_durable(n) for n in node.items]}
    if isinstance(node, Any_):
        return {"$or": [to_durable(n) for n in node.items]}
    if node.op == "exists":
        return {"$ex": {node.field: 1}}
    if node.op == "nexists":
        return {"$nex": {node.field: 1}}
    if node.op == "eq":
        return {node.field: node.value}
    return {OPS[node.op]: {node.field: node.value}}


def evaluate(node: Node, fact: Mapping[str, Any]) -> bool:
    """Reference semantics in Python, used by tests to cross-check the engine."""
    if isinstance(node, All):
        return all(evaluate(n, fact) for n in node.items)
    if isinstance(node, Any_):
        return any(evaluate(n, fact) for n in node.items)
    present = node.field in fact
    if node.op == "exists":
        return present
    if node.op == "nexists":
        return not present
    if not present:
        return False
    v = fact[node.field]
    try:
        return {
            "eq": lambda: v == node.value,
            "ne": lambda: v != node.value,
            "gt": lambda: v > node.value,
            "gte": lambda: v >= node.value,
            "lt": lambda: v < node.value,
            "lte": lambda: v <= node.value,
        }[node.op]()
    except TypeError:
        return False


def fields_of(node: Node) -> set[str]:
    if isinstance(node, All | Any_):
        out: set[str] = set()
        for n in node.items:
            out |= fields_of(n)
        return out
    return {node.field}


def all_of(nodes: Sequence[Node]) -> Node:
    return nodes[0] if len(nodes) == 1 else All(tuple(nodes))
