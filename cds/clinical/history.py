"""Time spans of medication records, for the look-backs of A4, A6 and A9.

Why separate: "new start" (nothing in the last 30 days), "chronic user" (continuous for 14
days up to now) and "first intrathecal order" (none in the last 30 days) all ask when a
record was in effect, which FHIR states in several places and often not at all. The rules
for reading a span are here once:

- start: ``timing.repeat.boundsPeriod.start`` of the first step, else ``authoredOn``
  (statements: ``effective[x]``, else ``dateAsserted``);
- an active or on-hold record runs up to now;
- any other record ends at its ``boundsPeriod.end``/``effectivePeriod.end``, else its
  ``dispenseRequest.validityPeriod.end``, else it is a point at its start; never after now;
- a record with no date at all has no span (it proves nothing either way).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cds.clinical.orders import MedRecord

_ONGOING = frozenset({"active", "on-hold"})


def span(record: MedRecord, now: datetime) -> tuple[datetime, datetime] | None:
    start = record.start or record.authored
    if record.status in _ONGOING:
        begin = start or now
        return (min(begin, now), now)
    end = record.end or record.validity_end or start
    if end is None:
        return None
    begin = start or end
    end = min(end, now)
    return (min(begin, end), end)


def overlaps(record: MedRecord, start: datetime, now: datetime) -> bool:
    """The record was in effect at some time in [start, now]."""
    s = span(record, now)
    return s is not None and s[0] <= now and s[1] >= start


def continuous_start(
    records: list[MedRecord], now: datetime, *, max_gap: timedelta
) -> datetime | None:
    """Start of the unbroken run of spans that reaches now (gaps up to ``max_gap`` joined)."""
    spans = sorted(sp for r in records if (sp := span(r, now)) is not None)
    if not spans:
        return None
    run_start, run_end = spans[0]
    for begin, end in spans[1:]:
        if begin <= run_end + max_gap:
            run_end = max(run_end, end)
        else:
            run_start, run_end = begin, end
    return run_start if run_end >= now - max_gap else None


def calendar_days(start: datetime, end: datetime) -> int:
    """Calendar days from ``start`` to ``end`` in ``end``'s time zone (date difference)."""
    tz = end.tzinfo
    return (end.date() - start.astimezone(tz).date()).days
