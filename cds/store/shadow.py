"""Shadow evaluations and their would-be cards (written by the sidecar), and what the
rules page reads of them: per shadow pack version and rule, the cards it would add, drop
or change, and what prescribers did with the live cards of the same calls.

Keyword-only functions; callers pass a session (the caller commits) or a sessionmaker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, insert, select
from sqlalchemy.orm import Session

from cds.store.models import Card
from cds.store.models_replay import ShadowCard, ShadowEvaluation

__all__ = [
    "ShadowPackSummary",
    "ShadowRuleRow",
    "record_shadow",
    "shadow_summary",
]


def record_shadow(
    *, session: Session, evaluation: dict[str, Any], cards: list[dict[str, Any]]
) -> int:
    """Insert one shadow evaluation and its card rows (the caller commits); its id."""
    row = ShadowEvaluation(**evaluation)
    session.add(row)
    session.flush()
    if cards:
        session.execute(
            insert(ShadowCard),
            [{**c, "evaluation_id": row.id, "invocation_id": row.invocation_id} for c in cards],
        )
    return int(row.id)


@dataclass
class ShadowRuleRow:
    """One rule of one shadow pack version over a period."""

    rule_id: str
    category: str
    would_be: int = 0  # cards the shadow pack would give with this rule deciding them
    appear: int = 0
    disappear: int = 0
    severity: int = 0
    rules: int = 0  # same card and indicator, other rules behind it
    same: int = 0
    live_cards: int = 0  # live cards of these calls compared with the shadow's
    live_accepted: int = 0
    live_overridden: int = 0
    gone_overridden: int = 0  # of the live cards the shadow would drop, overridden
    gone_accepted: int = 0

    @property
    def live_no_feedback(self) -> int:
        return self.live_cards - self.live_accepted - self.live_overridden

    @property
    def changed(self) -> int:
        return self.appear + self.disappear + self.severity + self.rules


@dataclass
class ShadowPackSummary:
    pack_id: str
    pack_version: str
    evaluations: int = 0
    errors: int = 0  # error or timeout: contained, the live answer was unaffected
    changed_calls: int = 0
    first: datetime | None = None
    last: datetime | None = None
    mean_ms: float | None = None
    max_ms: float | None = None
    live_versions: list[str] = field(default_factory=list)
    rules: list[ShadowRuleRow] = field(default_factory=list)

    @property
    def totals(self) -> ShadowRuleRow:
        t = ShadowRuleRow(rule_id="", category="")
        for r in self.rules:
            for name in (
                "would_be",
                "appear",
                "disappear",
                "severity",
                "rules",
                "same",
                "live_cards",
                "live_accepted",
                "live_overridden",
                "gone_overridden",
                "gone_accepted",
            ):
                setattr(t, name, getattr(t, name) + getattr(r, name))
        return t


def _period(stmt: Any, column: Any, since: datetime | None, until: datetime | None) -> Any:
    if since is not None:
        stmt = stmt.where(column >= since)
    if until is not None:
        stmt = stmt.where(column < until)
    return stmt


def shadow_summary(
    *, session: Session, since: datetime | None = None, until: datetime | None = None
) -> list[ShadowPackSummary]:
    """Every shadow pack version evaluated in the period, newest first, with its rules."""
    ev = ShadowEvaluation
    packs: dict[tuple[str, str], ShadowPackSummary] = {}
    stmt = _period(
        select(
            ev.pack_id,
            ev.pack_version,
            func.count(),
            func.sum(case((ev.status != "ok", 1), else_=0)),
            func.sum(case((ev.changed > 0, 1), else_=0)),
            func.min(ev.received_at),
            func.max(ev.received_at),
            func.avg(ev.duration_ms),
            func.max(ev.duration_ms),
        ).group_by(ev.pack_id, ev.pack_version),
        ev.received_at,
        since,
        until,
    )
    for pid, ver, n, errors, changed, first, last, mean, top in session.execute(stmt):
        packs[(pid, ver)] = ShadowPackSummary(
            pack_id=pid,
            pack_version=ver,
            evaluations=int(n),
            errors=int(errors or 0),
            changed_calls=int(changed or 0),
            first=first,
            last=last,
            mean_ms=float(mean) if mean is not None else None,
            max_ms=float(top) if top is not None else None,
        )
    for pid, ver, live in session.execute(
        _period(
            select(ev.pack_id, ev.pack_version, ev.live_version).distinct(),
            ev.received_at,
            since,
            until,
        )
    ):
        if (pid, ver) in packs and live:
            packs[(pid, ver)].live_versions.append(live)

    sc = ShadowCard
    outcome = Card.feedback_outcome
    stmt = _period(
        select(
            sc.pack_id,
            sc.pack_version,
            sc.rule_id,
            sc.category,
            sc.change,
            func.count(),
            func.sum(case((sc.live_card_id.is_not(None), 1), else_=0)),
            func.sum(case((outcome == "accepted", 1), else_=0)),
            func.sum(case((outcome == "overridden", 1), else_=0)),
        )
        .outerjoin(Card, Card.id == sc.live_card_id)
        .group_by(sc.pack_id, sc.pack_version, sc.rule_id, sc.category, sc.change),
        sc.created_at,
        since,
        until,
    )
    rows: dict[tuple[str, str, str], ShadowRuleRow] = {}
    for pid, ver, rule, category, change, n, live, accepted, overridden in session.execute(stmt):
        summary = packs.get((pid, ver))
        if summary is None:
            continue
        key = (pid, ver, rule)
        row = rows.get(key)
        if row is None:
            row = rows[key] = ShadowRuleRow(rule_id=rule, category=category)
            summary.rules.append(row)
        n, live = int(n), int(live or 0)
        accepted, overridden = int(accepted or 0), int(overridden or 0)
        if change in ("appear", "disappear", "severity", "rules", "same"):
            setattr(row, change, getattr(row, change) + n)
        if change != "disappear":
            row.would_be += n
        else:
            row.gone_accepted += accepted
            row.gone_overridden += overridden
        row.live_cards += live
        row.live_accepted += accepted
        row.live_overridden += overridden
    for summary in packs.values():
        summary.rules.sort(key=lambda r: (-r.changed, -r.would_be, r.rule_id))
    return sorted(packs.values(), key=lambda p: p.last.timestamp() if p.last else 0.0, reverse=True)
