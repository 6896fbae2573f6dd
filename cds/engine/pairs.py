"""Who owns the card for a pair of drugs that both have packs (``cds rules check``).

Why: two packs loaded together must give one card for their pair, not two and not none
(drug A with drug B: pack A's card; pack B carries the same rule silenced by
``unless_pack: A`` so it still covers the pair where pack A is not deployed). Each pack's
interaction classes are ValueSets; a class *covers* another pack's drug when a code of
that drug's identity ValueSet is in it, and a rule on the class fires unless it names the
other pack in ``unless_pack``. Pure data: no engine run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from typing import Any

from cds.engine.conditions import Cmp
from cds.engine.pack import CompiledPack


def _class_values(node: Any) -> set[str]:
    """The drug_class values a rule's condition tree tests for equality (or membership)."""
    out: set[str] = set()
    if isinstance(node, Cmp):
        if node.field == "drug_class" and node.op == "eq":
            out.add(str(node.value))
        return out
    if is_dataclass(node):
        for f in fields(node):
            out |= _class_values(getattr(node, f.name))
    elif isinstance(node, tuple | list):
        for item in node:
            out |= _class_values(item)
    return out


def covers(a: CompiledPack, b: CompiledPack) -> bool:
    """Pack ``a`` fires a card for ``b``'s drug when both run (its class rules for the pair
    are not silenced by ``unless_pack: b``)."""
    identity = b.drug.term.valuesets.get(b.drug.identity)
    if identity is None:
        return False
    codings = [(system, code, "") for system, code in sorted(identity.codes)]
    hits = a.drug.term.code_hits(codings)
    classes = {c.name for c in a.drug.interactions if set(c.valuesets) & hits}
    for rule in a.rules.values():
        if rule.category != "interaction" or rule.unless_pack == b.id:
            continue
        if _class_values(rule.tree) & classes:
            return True
    return False


def pair_problems(packs: Sequence[CompiledPack]) -> tuple[list[str], list[str]]:
    """(problems, owners): for every pair of packs whose drugs interact, exactly one pack
    must cover it when both run."""
    problems, owners = [], []
    for i, a in enumerate(packs):
        for b in packs[i + 1 :]:
            ab, ba = covers(a, b), covers(b, a)
            if ab and ba:
                problems.append(
                    f"{a.id} and {b.id} both fire a card for their pair: give one of them "
                    f"unless_pack on its rule for the other"
                )
            elif ab or ba:
                owners.append(f"{a.id}-{b.id}: {a.id if ab else b.id}")
            elif _interacts(a, b) or _interacts(b, a):
                problems.append(
                    f"neither {a.id} nor {b.id} fires a card for their pair: "
                    "one pack's rule must not name the other in unless_pack"
                )
    return problems, owners


def _interacts(a: CompiledPack, b: CompiledPack) -> bool:
    """``a`` has an interaction class holding ``b``'s drug (whatever its rules do)."""
    identity = b.drug.term.valuesets.get(b.drug.identity)
    if identity is None:
        return False
    hits = a.drug.term.code_hits([(s, c, "") for s, c in sorted(identity.codes)])
    return any(set(c.valuesets) & hits for c in a.drug.interactions)
