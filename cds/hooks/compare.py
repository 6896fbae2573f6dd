"""What changes between two evaluations of the same call: cards that appear, disappear or
change severity, and the rules that fire more or less.

Shared by the replay (``cds rules replay``: the served packs against a working copy) and
shadow mode (the live cards against a shadow pack's, on the same call). Nothing here
evaluates anything: it compares what ``cds.hooks.pipeline.evaluate`` produced twice.

A card is identified as the pipeline makes them: one per (pack, order, category, group),
``group`` being the interacting class of an interaction card and empty otherwise. Each
change is attributed to one rule: the card's severity rule (``primary_rule``) after the
change, or before it for a card that disappears.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cds.engine.findings import SEVERITY_RANK

__all__ = ["CHANGE_KINDS", "CardView", "Change", "compare", "rule_counts", "views_of"]

APPEAR, DISAPPEAR, SEVERITY, RULES, SAME = "appear", "disappear", "severity", "rules", "same"
#: ``appear``: a card the first evaluation did not give; ``disappear``: the reverse;
#: ``severity``: the same card with another indicator; ``rules``: the same card and
#: indicator, but other rules behind it (a rule now merged into a card already there);
#: ``same``: no difference that matters to the prescriber or the rules committee.
CHANGE_KINDS = (APPEAR, DISAPPEAR, SEVERITY, RULES, SAME)

Key = tuple[str, str, str, str]  # (pack_id, order_id, category, group)


@dataclass(frozen=True)
class CardView:
    """What a comparison needs of one card (from a ``BuiltCard`` or an audit record)."""

    pack_id: str
    order_id: str
    category: str
    group: str
    indicator: str
    primary_rule: str
    rule_ids: tuple[str, ...]
    summary: str = ""
    card_id: str = ""  # the card uuid (the live card's: feedback is keyed by it)

    @property
    def key(self) -> Key:
        return (self.pack_id, self.order_id, self.category, self.group)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pack_id": self.pack_id,
            "order_id": self.order_id,
            "category": self.category,
            "group": self.group,
            "indicator": self.indicator,
            "primary_rule": self.primary_rule,
            "rule_ids": list(self.rule_ids),
            "summary": self.summary,
            "card_id": self.card_id,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CardView:
        return cls(
            pack_id=str(d["pack_id"]),
            order_id=str(d["order_id"]),
            category=str(d["category"]),
            group=str(d.get("group") or ""),
            indicator=str(d["indicator"]),
            primary_rule=str(d["primary_rule"]),
            rule_ids=tuple(str(r) for r in d.get("rule_ids") or ()),
            summary=str(d.get("summary") or ""),
            card_id=str(d.get("card_id") or ""),
        )


def views_of(cards: Iterable[Any]) -> list[CardView]:
    """Views of the pipeline's ``BuiltCard``s (``Evaluation.cards``)."""
    return [
        CardView(
            pack_id=c.primary.pack_id,
            order_id=c.order_id,
            category=c.category,
            group=c.group,
            indicator=str(c.card["indicator"]),
            primary_rule=c.primary.rule_id,
            rule_ids=tuple(dict.fromkeys(f.rule_id for f in c.findings)),
            summary=str(c.card.get("summary", "")),
            card_id=str(c.card.get("uuid", "")),
        )
        for c in cards
    ]


@dataclass(frozen=True)
class Change:
    """One card key compared: ``before`` and/or ``after`` and what changed."""

    kind: str
    rule_id: str  # the rule the change is attributed to
    before: CardView | None
    after: CardView | None
    rules_added: tuple[str, ...] = ()
    rules_removed: tuple[str, ...] = ()

    @property
    def key(self) -> Key:
        view = self.after or self.before
        assert view is not None
        return view.key

    @property
    def direction(self) -> int:
        """+1 more severe (or appeared), -1 less severe (or gone), 0 otherwise."""
        if self.kind == APPEAR:
            return 1
        if self.kind == DISAPPEAR:
            return -1
        if self.kind == SEVERITY and self.before and self.after:
            up = SEVERITY_RANK[self.after.indicator] > SEVERITY_RANK[self.before.indicator]
            return 1 if up else -1
        return 0

    def as_dict(self) -> dict[str, Any]:
        pack_id, order_id, category, group = self.key
        return {
            "kind": self.kind,
            "rule_id": self.rule_id,
            "pack_id": pack_id,
            "order_id": order_id,
            "category": category,
            "group": group,
            "before": self.before.indicator if self.before else None,
            "after": self.after.indicator if self.after else None,
            "before_rule": self.before.primary_rule if self.before else None,
            "after_rule": self.after.primary_rule if self.after else None,
            "summary": (self.after or self.before).summary,  # type: ignore[union-attr]
            "rules_added": list(self.rules_added),
            "rules_removed": list(self.rules_removed),
        }


def compare(before: Sequence[CardView], after: Sequence[CardView]) -> list[Change]:
    """Every card key of either side, compared (``same`` included), in a stable order."""
    old = {c.key: c for c in before}
    new = {c.key: c for c in after}
    out: list[Change] = []
    for key in sorted(old.keys() | new.keys()):
        b, a = old.get(key), new.get(key)
        if b is None:
            assert a is not None
            out.append(Change(APPEAR, a.primary_rule, None, a, rules_added=a.rule_ids))
            continue
        if a is None:
            out.append(Change(DISAPPEAR, b.primary_rule, b, None, rules_removed=b.rule_ids))
            continue
        added = tuple(r for r in a.rule_ids if r not in b.rule_ids)
        removed = tuple(r for r in b.rule_ids if r not in a.rule_ids)
        if a.indicator != b.indicator:
            kind = SEVERITY
        elif added or removed or a.primary_rule != b.primary_rule:
            kind = RULES
        else:
            kind = SAME
        out.append(Change(kind, a.primary_rule, b, a, added, removed))
    return out


def rule_counts(cards: Iterable[CardView]) -> dict[str, int]:
    """How many cards each rule is behind (a rule merged into a card counts too)."""
    counts: dict[str, int] = {}
    for c in cards:
        for r in c.rule_ids:
            counts[r] = counts.get(r, 0) + 1
    return counts
