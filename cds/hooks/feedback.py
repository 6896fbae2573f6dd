"""Feedback items: validated one by one, so one bad item never loses the good ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cds.errors import MalformedRequest, PayloadTooLarge
from cds.store.audit import FeedbackItem

#: How far an EHR's clock may run ahead of ours.
CLOCK_SKEW = timedelta(minutes=5)
MAX_ITEMS = 100


@dataclass
class Rejected:
    index: int
    card: str | None
    reason: str


def _parse_time(v: Any) -> datetime | None:
    if not isinstance(v, str):
        return None
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def parse_feedback(
    body: Any, *, now: datetime | None = None, max_items: int = MAX_ITEMS
) -> tuple[list[tuple[int, FeedbackItem]], list[Rejected]]:
    """Split a feedback body into well-formed items and rejected ones (with reasons).

    More than ``max_items`` items is a 413 for the whole request (a batch that size held
    the SQLite write lock for seconds); an ``outcomeTimestamp`` later than ``now`` (plus
    ``CLOCK_SKEW``) is rejected: it would win every later, real outcome.
    """
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list):
        raise MalformedRequest(
            "the body must be an object with a 'feedback' array", expression=["feedback"]
        )
    items = body["feedback"]
    if not items:
        raise MalformedRequest("the feedback array is empty", expression=["feedback"])
    if len(items) > max_items:
        raise PayloadTooLarge(
            f"{len(items)} feedback items; at most {max_items} per request "
            "(CDS_MAX_FEEDBACK_ITEMS): send them in smaller batches",
            expression=["feedback"],
        )
    good: list[tuple[int, FeedbackItem]] = []
    bad: list[Rejected] = []
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            bad.append(Rejected(i, None, "item is not an object"))
            continue
        card = it.get("card")
        card_s = card if isinstance(card, str) else None
        if not card_s:
            bad.append(Rejected(i, None, "card (the card uuid) is required"))
            continue
        outcome = it.get("outcome")
        if outcome not in ("accepted", "overridden"):
            bad.append(Rejected(i, card_s, "outcome must be 'accepted' or 'overridden'"))
            continue
        ts = _parse_time(it.get("outcomeTimestamp"))
        if ts is None:
            bad.append(
                Rejected(i, card_s, "outcomeTimestamp must be an RFC 3339 date-time with a zone")
            )
            continue
        if now is not None and ts > now + CLOCK_SKEW:
            bad.append(Rejected(i, card_s, "outcomeTimestamp is in the future"))
            continue
        accepted: list[str] = []
        raw_acc = it.get("acceptedSuggestions")
        if outcome == "accepted":
            if (
                not isinstance(raw_acc, list)
                or not raw_acc
                or not all(isinstance(a, dict) and isinstance(a.get("id"), str) for a in raw_acc)
            ):
                bad.append(
                    Rejected(i, card_s, "acceptedSuggestions [{id}] is required when accepted")
                )
                continue
            accepted = [a["id"] for a in raw_acc]
        elif raw_acc:
            bad.append(Rejected(i, card_s, "acceptedSuggestions only go with outcome accepted"))
            continue
        code = system = display = comment = None
        reason = it.get("overrideReason")
        if reason is not None:
            if outcome != "overridden" or not isinstance(reason, dict):
                bad.append(Rejected(i, card_s, "overrideReason goes with outcome overridden"))
                continue
            coding = reason.get("reason")
            if coding is not None:
                if not isinstance(coding, dict) or not isinstance(coding.get("code"), str):
                    bad.append(Rejected(i, card_s, "overrideReason.reason must be a Coding"))
                    continue
                code = coding["code"][:128]
                system = str(coding.get("system") or "")[:256] or None
                display = str(coding.get("display") or "")[:256] or None
            uc = reason.get("userComment")
            if uc is not None and not isinstance(uc, str):
                bad.append(Rejected(i, card_s, "overrideReason.userComment must be a string"))
                continue
            comment = uc[:4000] if uc else None
        good.append(
            (
                i,
                FeedbackItem(
                    card_id=card_s,
                    outcome=outcome,
                    accepted_suggestions=accepted,
                    override_code=code,
                    override_system=system,
                    override_display=display,
                    override_comment=comment,
                    outcome_timestamp=ts,
                ),
            )
        )
    return good, bad
