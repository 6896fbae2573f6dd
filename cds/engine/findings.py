"""What the engine says: one ``Finding`` per (rule, fact) that fired."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SEVERITY_RANK = {"info": 1, "warning": 2, "critical": 3}


@dataclass(frozen=True)
class SuggestionSpec:
    """A rule's fix, with its numbers already resolved from the pack."""

    kind: str  # dose_limit, titration_step, taper, none
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    rule_id: str
    category: str
    severity: str
    order_id: str
    group: str  # cards are one per (order, category, group); group = interacting class
    summary: str
    detail: str
    evidence: tuple[str, ...]
    suggestion: SuggestionSpec | None
    override_reasons: tuple[str, ...]
    fact: dict[str, Any]
    pack_id: str
    pack_version: str
    profile: str
    order: int = 0  # rule position in the pack: a stable tie-break
    unless_offered: str | None = None  # see RuleDef.unless_offered
    unless_pack: str | None = None  # see RuleDef.unless_pack
    join_worst: bool = False  # see RuleDef.join_worst
    never_alone: bool = False  # see RuleDef.never_alone

    @property
    def rank(self) -> int:
        return SEVERITY_RANK[self.severity]
