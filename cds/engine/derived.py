"""Derived fact fields: a pack's arithmetic over measured facts, done before the engine runs.

Why: durable_rules compares a fact field with a constant, but some limits are arithmetic on
the facts themselves: "the daily dose exceeds R0 + 300 mg for each full 2 days since T0",
"300 mg x CrCl / 15", "the oedema began after the regimen". Facts carry measurements only
(``clinical/``); the arithmetic and its numbers are the pack's, so a pack declares them:

```yaml
derived:
  - name: rate_excess_daily
    value: {sub: [regimen_first_daily,
                  {add: [current_daily, {mul: [300, {floor: {div: [days_on_current, 2]}}]}]}]}
```

An operand is a number, a ``"@tables.x"`` reference (resolved at load), or the name of a
fact field (or of an earlier derived field). Operators: ``add sub mul div min max`` over a
list, ``floor ceil abs`` over one value. A missing operand, or a division by zero, makes the
derived field missing (a rule that needs it cannot fire on a guess).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cds.engine import conditions as cond
from cds.errors import PackError

Expr = Callable[[Mapping[str, Any]], float | None]
_NARY: dict[str, Callable[[list[float]], float]] = {
    "add": lambda xs: math.fsum(xs),
    "sub": lambda xs: xs[0] - math.fsum(xs[1:]),
    "mul": lambda xs: math.prod(xs),
    "min": min,
    "max": max,
}
_UNARY: dict[str, Callable[[float], float]] = {"floor": math.floor, "ceil": math.ceil, "abs": abs}


@dataclass(frozen=True)
class Derived:
    name: str
    kind: str  # the fact kind it is computed on ("order", "interaction")
    expr: Expr
    inputs: frozenset[str]


def compile_expr(
    spec: Any, resolver: cond.Resolver, fields: frozenset[str] | set[str], where: str
) -> tuple[Expr, frozenset[str]]:
    """A pure function of a fact, and the fact fields it reads."""
    if isinstance(spec, bool):
        raise PackError(f"{spec!r} is not a number", field=where)
    if isinstance(spec, int | float):
        value = float(spec)
        return (lambda _f: value), frozenset()
    if isinstance(spec, str) and spec.startswith("@"):
        resolved = resolver.value(spec)
        if isinstance(resolved, bool) or not isinstance(resolved, int | float):
            raise PackError(f"{spec} is not a number ({resolved!r})", field=where)
        number = float(resolved)
        return (lambda _f: number), frozenset()
    if isinstance(spec, str):
        if spec not in fields:
            import difflib

            hint = difflib.get_close_matches(spec, sorted(fields), n=1)
            raise PackError(
                f"unknown fact field {spec!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""),
                field=where,
            )
        name = spec

        def read(f: Mapping[str, Any]) -> float | None:
            v = f.get(name)
            if isinstance(v, bool) or not isinstance(v, int | float):
                return None
            return float(v)

        return read, frozenset({name})
    if isinstance(spec, Mapping) and len(spec) == 1:
        ((op, args),) = spec.items()
        if op in _UNARY:
            inner, used = compile_expr(args, resolver, fields, f"{where}.{op}")
            fn = _UNARY[op]

            def unary(f: Mapping[str, Any]) -> float | None:
                v = inner(f)
                return None if v is None else float(fn(v))

            return unary, used
        if op in _NARY or op == "div":
            if not isinstance(args, list) or len(args) < 2:
                raise PackError(f"{op} needs a list of two or more values", field=where)
            parts = [compile_expr(a, resolver, fields, f"{where}.{op}") for a in args]
            fns = [p[0] for p in parts]
            used = frozenset().union(*(p[1] for p in parts))
            if op == "div":

                def divide(f: Mapping[str, Any]) -> float | None:
                    values = [g(f) for g in fns]
                    if any(v is None for v in values):
                        return None
                    acc = values[0]
                    for v in values[1:]:
                        if v == 0:
                            return None
                        acc = acc / v  # type: ignore[operator]
                    return acc

                return divide, used
            agg = _NARY[op]

            def nary(f: Mapping[str, Any]) -> float | None:
                values = [g(f) for g in fns]
                if any(v is None for v in values):
                    return None
                return float(agg(values))  # type: ignore[arg-type]

            return nary, used
    raise PackError(f"not an expression: {spec!r}", field=where)


def apply(derived: tuple[Derived, ...], facts: list[dict[str, Any]]) -> None:
    """Add each derived field to the facts of its kind (in declaration order)."""
    if not derived:
        return
    for fact in facts:
        kind = fact.get("kind")
        for d in derived:
            if d.kind != kind:
                continue
            value = d.expr(fact)
            if value is not None and math.isfinite(value):
                fact[d.name] = round(value, 9)
