"""The rules dashboard's measures: per rule, category and pack version, and over time.

Every feedback event counts (a card accepted twice is two acceptances); rates are of the
prescribers' answers. Everything is read from two covering indexes in index order (no sort
of the cards, no read of the feedback or review tables), because what the measures need is
kept on the card row when it happens (migration 0006): the feedback counts and state, the
latest override reason in words, the problem a card repeats, the seconds to its first
review and its UTC hour.

* per rule etc.: one grouped read of ``ix_cards_stats`` by its prefix up to the override
  reason;
* time to review: one grouped read of the partial index ``ix_cards_reviewed`` (reviewed
  cards only) by rule and minutes, medians in Python;
* over time: one grouped read of ``ix_cards_hourly`` by UTC hour, folded into site-local
  days in Python (SQLite has no time zones; an hour is the finest offset most zones need).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from cds.store.models import Card, hour_of

NO_REASON = "(no reason given)"


@dataclass
class RuleStat:
    """Cards issued by one rule (or category, or pack version) in a period, every
    feedback event on them, how often they repeated, and how fast they were reviewed."""

    key: str
    category: str
    issued: int = 0
    accepted: int = 0  # acceptance events
    overridden: int = 0  # override events
    with_feedback: int = 0  # cards with at least one event
    both: int = 0  # cards both accepted and overridden
    repeats: int = 0  # cards that repeat an earlier card's problem (same rule and order)
    # minutes from issue to the first pharmacist action -> cards (reviewed cards only)
    review_minutes: Counter[int] = field(default_factory=Counter)
    reasons: list[tuple[str, int]] = field(default_factory=list)  # overridden cards per reason

    def add(self, other: RuleStat) -> None:
        for name in ("issued", "accepted", "overridden", "with_feedback", "both", "repeats"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.review_minutes.update(other.review_minutes)

    @property
    def reviewed(self) -> int:
        return sum(self.review_minutes.values())

    @property
    def events(self) -> int:
        return self.accepted + self.overridden

    @property
    def no_feedback(self) -> int:
        return self.issued - self.with_feedback

    @property
    def override_rate(self) -> float | None:
        """Override events among all feedback events (``None`` without any)."""
        return self.overridden / self.events if self.events else None

    @property
    def acceptance_rate(self) -> float | None:
        return self.accepted / self.events if self.events else None

    @property
    def repeat_rate(self) -> float | None:
        return self.repeats / self.issued if self.issued else None

    @property
    def median_review_minutes(self) -> float | None:
        """Median minutes from issue to the first review (``None``: nothing reviewed)."""
        n = self.reviewed
        if not n:
            return None
        ordered = sorted(self.review_minutes.items())

        def nth(k: int) -> int:
            seen = 0
            for minutes, count in ordered:
                seen += count
                if k < seen:
                    return minutes
            return ordered[-1][0]

        return (nth((n - 1) // 2) + nth(n // 2)) / 2


@dataclass
class Period:
    """One site-local day of the time series."""

    day: date
    by_indicator: dict[str, int] = field(default_factory=dict)
    issued: int = 0
    accepted: int = 0
    overridden: int = 0
    repeats: int = 0

    @property
    def override_rate(self) -> float | None:
        events = self.accepted + self.overridden
        return self.overridden / events if events else None

    @property
    def acceptance_rate(self) -> float | None:
        events = self.accepted + self.overridden
        return self.accepted / events if events else None

    @property
    def repeat_rate(self) -> float | None:
        return self.repeats / self.issued if self.issued else None


@dataclass
class Dashboard:
    rules: list[RuleStat]
    categories: list[RuleStat]
    packs: list[RuleStat]
    total: RuleStat
    days: list[Period]  # site-local days with cards, oldest first

    @property
    def daily(self) -> list[tuple[str, str, int]]:
        """(YYYY-MM-DD, indicator, cards): the severity chart's input."""
        return [(p.day.isoformat(), ind, n) for p in self.days for ind, n in p.by_indicator.items()]


def _filters(
    since: datetime | None, until: datetime | None, rule: str | None, pack: str | None
) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = []
    # UTC: SQLite compares the stored text, so an instant in another zone would be
    # compared by its wall-clock digits
    if since is not None:
        conds.append(Card.created_at >= since.astimezone(UTC))
    if until is not None:
        conds.append(Card.created_at < until.astimezone(UTC))
    if rule is not None:
        conds.append(Card.primary_rule == rule)
    if pack is not None:
        conds.append(Card.pack_id == pack)
    return conds


def _is_repeat() -> Any:
    return Card.is_repeat


def _top(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def dashboard(
    *,
    session: Session,
    since: datetime | None,
    until: datetime | None,
    tz: tzinfo = UTC,
    rule: str | None = None,
    pack: str | None = None,
) -> Dashboard:
    """Per rule, category and pack version: cards, every feedback event, acceptance and
    override rates, repeat firings, time to first review and the override reasons given;
    and cards, answers and repeats per site-local day.

    A rule is counted by the cards it set the severity of (``cards.primary_rule``): that
    is the rule the prescriber saw the card for, so its override rate is the one to read.
    """
    conds = _filters(since, until, rule, pack)
    conn = session.connection()  # Core rows: no ORM bookkeeping per row
    group = (
        Card.primary_rule,
        Card.category,
        Card.indicator,
        Card.pack_id,
        Card.pack_version,
        Card.review_status,
        Card.source,
        Card.feedback_state,
        Card.override_reason,
    )  # a prefix of ix_cards_stats: grouped in index order
    stmt = (
        select(
            *group,
            func.count(),
            func.sum(Card.accepted_n),
            func.sum(Card.overridden_n),
            func.sum(_is_repeat()),
        )
        .where(*conds)
        .group_by(*group)
    )
    by_rule: dict[str, RuleStat] = {}
    by_pack: dict[str, RuleStat] = {}
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    pack_reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for rule_id, category, _i, pack_id, version, _s, _src, state, reason, *nums in conn.execute(
        stmt
    ):
        issued, acc, over, rep = (int(n or 0) for n in nums)
        label = f"{pack_id} {version}"
        for stat in (
            by_rule.setdefault(rule_id, RuleStat(key=rule_id, category=category)),
            by_pack.setdefault(label, RuleStat(key=label, category=pack_id)),
        ):
            stat.issued += issued
            stat.accepted += acc
            stat.overridden += over
            stat.repeats += rep
            if state != "none":
                stat.with_feedback += issued
            if state == "both":
                stat.both += issued
        if state in ("overridden", "both"):
            reasons[rule_id][reason or NO_REASON] += issued
            pack_reasons[label][reason or NO_REASON] += issued

    # Minutes to the first review: reviewed cards only (the partial ix_cards_reviewed).
    review = (Card.primary_rule, Card.pack_id, Card.pack_version, Card.review_minutes)
    for rule_id, pack_id, version, minutes, count in conn.execute(
        select(*review, func.count())
        .where(Card.review_minutes.is_not(None), *conds)
        .group_by(*review)
    ):
        waited = int(minutes or 0)
        if rule_id in by_rule:
            by_rule[rule_id].review_minutes[waited] += int(count)
        if f"{pack_id} {version}" in by_pack:
            by_pack[f"{pack_id} {version}"].review_minutes[waited] += int(count)

    by_category: dict[str, RuleStat] = {}
    cat_reasons: dict[str, Counter[str]] = defaultdict(Counter)
    total = RuleStat(key="all", category="")
    every: Counter[str] = Counter()
    for stat in by_rule.values():
        stat.reasons = _top(reasons[stat.key])
        by_category.setdefault(
            stat.category, RuleStat(key=stat.category, category=stat.category)
        ).add(stat)
        total.add(stat)
        cat_reasons[stat.category].update(reasons[stat.key])
        every.update(reasons[stat.key])
    for cat in by_category.values():
        cat.reasons = _top(cat_reasons[cat.key])
    for label, stat in by_pack.items():
        stat.reasons = _top(pack_reasons[label])
    total.reasons = _top(every)

    def order(stats: dict[str, RuleStat]) -> list[RuleStat]:
        return sorted(stats.values(), key=lambda s: (-s.issued, s.key))

    return Dashboard(
        rules=order(by_rule),
        categories=order(by_category),
        packs=sorted(by_pack.values(), key=lambda s: s.key),
        total=total,
        days=_days(session, conds, since, until, tz),
    )


def _days(
    session: Session,
    conds: list[ColumnElement[bool]],
    since: datetime | None,
    until: datetime | None,
    tz: tzinfo,
) -> list[Period]:
    """Cards, feedback events and repeats per site-local day, from UTC hours."""
    hours: list[ColumnElement[bool]] = [Card.created_hour.is_not(None)]
    if since is not None:
        hours.append(Card.created_hour >= hour_of(since))
    if until is not None:
        hours.append(Card.created_hour <= hour_of(until))
    group = (Card.created_hour, Card.indicator)  # the prefix of ix_cards_hourly: no sort
    stmt = (
        select(
            *group,
            func.count(),
            func.sum(Card.accepted_n),
            func.sum(Card.overridden_n),
            func.sum(_is_repeat()),
        )
        .where(*hours, *conds)
        .group_by(*group)
    )
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    out: dict[date, Period] = {}
    days: dict[int, date] = {}
    for hour, indicator, n, acc, over, rep in session.connection().execute(stmt):
        day = days.get(hour)
        if day is None:
            day = days[hour] = (epoch + timedelta(hours=int(hour))).astimezone(tz).date()
        p = out.setdefault(day, Period(day))
        p.by_indicator[indicator] = p.by_indicator.get(indicator, 0) + int(n)
        p.issued += int(n)
        p.accepted += int(acc or 0)
        p.overridden += int(over or 0)
        p.repeats += int(rep or 0)
    return [out[d] for d in sorted(out)]


__all__ = ["Dashboard", "Period", "RuleStat", "dashboard"]
