"""One order of the pack's drug -> :class:`OrderFacts`: dose, regimen totals, titration, withdrawal.

Why here: these facts combine one order with the regimen around it (what it replaces, what
was taken before, since when). The numbers are measurements only; every comparison with a
pack threshold is a rule.

Definitions (A4, A6, A9; calendar days are date differences in ``now``'s zone):
- ``current_daily``: the route's daily dose of the active records before signing (the step
  in effect now); ``current_start``: the newest start among them.
- ``new_start``: no order or statement of the drug (any status but entered-in-error, any route)
  in effect during the last ``new_start_lookback_days``.
- ``change``: "stop" when nothing by the route is left after signing; "new" when there was no
  current regimen by the route; else "same"/"increase"/"decrease" of the after-signing
  first-step total against ``current_daily`` (unknown when a dose in either is unknown).
- ``increase_daily``: after-signing first-step total minus ``current_daily`` (0 when there is
  none) when positive; not for a new start, which A4 checks with its own rule.
- ``days_on_current``: ``current_start`` to the effect time (the draft's first
  ``boundsPeriod.start`` when later than now, else now).
- ``chronic_user``: the drug scheduled by mouth continuously for ``chronic_min_days`` up to
  now, or any intrathecal order of it active, on hold, or stopped within that many days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cds.clinical.context import Context
from cds.clinical.facts import DosageStep, OrderFacts, PatientFacts
from cds.clinical.history import calendar_days, continuous_start, overlaps, span
from cds.clinical.orders import STOP_STATUSES, MedRecord
from cds.clinical.regimen import Regimen, RouteTotals, compare, daily_at, totals


@dataclass
class PatientHistory:
    """Patient-level look-back answers, computed once per request."""

    new_start: bool
    chronic_user: bool
    pump_first_order: bool
    pump_active: bool


def patient_history(reg: Regimen, ctx: Context) -> PatientHistory:
    p, now = ctx.params, ctx.now
    history = reg.history
    since = now - timedelta(days=p.new_start_lookback_days)
    new_start = not any(overlaps(r, since, now) for r in history)
    oral = [
        r
        for r in history
        if r.route == "oral"
        and r.dose is not None
        and not r.dose.prn_only
        # on hold: taken until the hold (a resumed regimen is the same regimen, A6)
        and r.status in ("active", "completed", "stopped", "on-hold")
    ]
    start = continuous_start(oral, now, max_gap=timedelta(days=p.chronic_max_gap_days))
    chronic = start is not None and calendar_days(start, now) >= p.chronic_min_days
    pumps = [r for r in history if r.route == "intrathecal" and not r.is_bolus]
    recent = now - timedelta(days=p.chronic_min_days)
    pump_active = any(r.status == "active" for r in pumps)
    if any(
        r.status in ("active", "on-hold")
        or (r.status in ("stopped", "completed") and overlaps(r, recent, now))
        for r in pumps
    ):
        chronic = True
    pump_since = now - timedelta(days=p.pump_titration_lookback_days)
    pump_first = not any(overlaps(r, pump_since, now) for r in pumps if r.status != "cancelled")
    return PatientHistory(new_start, chronic, pump_first, pump_active)


def _effect_time(rec: MedRecord, now: datetime) -> datetime:
    if rec.is_draft and rec.dose is not None and rec.dose.steps:
        start = rec.dose.steps[0].start
        if start is not None and start > now:
            return start
    return now


def _bolus_time(rec: MedRecord, now: datetime) -> datetime:
    """When a bolus is (to be) given: its timing.event; a draft without one is given now,
    a past order without one at its authoredOn (date-only values are midnight)."""
    if rec.event is not None:
        return rec.event
    if rec.is_draft:
        return now
    return rec.authored or now


_DUPLICATES_SHOWN = 10  # display only: the rules read the count (scheduled_orders)


@dataclass
class _RouteView:
    """One route's regimen sums, computed once per request (not once per order: a list of
    thousands of active orders must cost linear time, hardening #4)."""

    after: RouteTotals
    current_records: list[MedRecord]
    position: dict[str, int]  # request id -> its first index in current_records
    scheduled: list[MedRecord]
    regimen_ids: list[str]
    current_daily: float | None = None
    current_complete: bool = True
    current_start: datetime | None = None
    cutting: list[str] | None = None  # drafts lowering their own order's dose (ids)
    scheduled_sorted: list[tuple[str, MedRecord]] = field(default_factory=list)  # by id
    # 24 h / the administrations a day of the scheduled records after signing, when there
    # are several (even spacing); None with one: that order's own timing decides
    regimen_gap_hours: float | None = None


def _cutting(reg: Regimen, view: _RouteView, route: str, now: datetime) -> list[str]:
    """The drafts by ``route`` that lower the dose of the order they replace (or stand in
    for) in this signing, a stop included. A taper of one of them alone leaves the others'
    cuts: the suggestion planner must taper them together or not at all."""
    out = []
    for d in reg.drafts:
        if d.route != route or d.is_bolus or not d.id:
            continue
        hits = [view.position[i] for i in (d.id, d.prior_id) if i and i in view.position]
        source = view.current_records[min(hits)] if hits else None
        if source is None:
            source = next((r for r in reg.stand_ins if r.id == d.id), None)
        if source is None or source.dose is None or not source.dose.steps:
            continue
        before = _step_at(source, now).daily
        if d.status in STOP_STATUSES or d.dose is None or not d.dose.steps:
            after: float | None = 0.0
        else:
            after = d.dose.steps[0].daily
        if before is not None and after is not None and after < before - 1e-9:
            out.append(d.id)
    return out


def _view(reg: Regimen, route: str, now: datetime) -> _RouteView:
    cached = reg.views.get(route)
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    after = totals(reg.after, route)
    current_records = [
        r for r in reg.current if r.route == route and not r.is_bolus and r.dose is not None
    ]
    position: dict[str, int] = {}
    for i, r in enumerate(current_records):
        if r.kind == "request" and r.id and r.id not in position:
            position[r.id] = i
    scheduled = [
        r
        for r in after.records
        if r.dose is not None and not r.dose.prn_only and not r.dose.tapering
    ]
    view = _RouteView(
        after=after,
        current_records=current_records,
        position=position,
        scheduled=scheduled,
        regimen_ids=[r.id or r.ref for r in after.records],
    )
    if current_records:
        view.current_daily, view.current_complete = daily_at(current_records, now)
        # T0: when the dose now taken began (a titration schedule written as one order
        # began its current step on that step's date)
        starts = [
            (_step_at(r, now).start if r.dose is not None and r.dose.steps else None)
            or r.start
            or r.authored
            for r in current_records
        ]
        view.current_start = max((s for s in starts if s is not None), default=None)
    view.cutting = _cutting(reg, view, route, now)
    doses = [r.dose for r in after.records if r.dose is not None and not r.dose.prn_only]
    admins = sum(d.admin_per_day or 0.0 for d in doses)
    if len(doses) > 1 and admins > 0:
        view.regimen_gap_hours = round(24.0 / admins, 2)
    view.scheduled_sorted = sorted(
        ((r.id or r.ref or "", r) for r in scheduled), key=lambda pair: pair[0]
    )
    reg.views[route] = view
    return view


def _step_at(rec: MedRecord, when: datetime) -> DosageStep:
    """The dosage step of ``rec`` in effect at ``when`` (the first if none is dated)."""
    assert rec.dose is not None and rec.dose.steps
    chosen = rec.dose.steps[0]
    for step in rec.dose.steps:
        if step.start is not None and step.start <= when:
            chosen = step
    return chosen


def _adverse(rec: MedRecord, ctx: Context) -> bool:
    return "adverse-stop-reasons" in ctx.term.hits(rec.reason_codings, rec.reason_texts)


def build_order_facts(
    rec: MedRecord,
    reg: Regimen,
    hist: PatientHistory,
    patient: PatientFacts,
    ctx: Context,
    *,
    pump_removal_planned: bool,
) -> OrderFacts:
    assert rec.dose is not None
    now, p = ctx.now, ctx.params
    dose = rec.dose
    o = OrderFacts(
        order_id=rec.id or rec.ref,
        route=rec.route,
        status=rec.status,
        is_draft=rec.is_draft,
        route_unknown=rec.route_unknown,
        route_given=rec.route_given,
        product_kind=rec.product_kind,  # type: ignore[arg-type]
        matched_by_name=rec.matched == "name",
        dose_computable=dose.computable,
        dose_problem=dose.problem,
        daily=dose.daily,
        first_step_daily=dose.first_step_daily,
        admin_per_day=dose.admin_per_day,
        single_max=dose.single_max,
        single_min=dose.single_min,
        prn=dose.prn,
        prn_only=dose.prn_only,
        prn_max_unknown=dose.prn_max_unknown,
        is_taper=dose.is_taper,
        tapering=dose.tapering,
        resource=rec.resource,
        steps=list(dose.steps),
        medication_text=rec.name,
        strength_per_ml=dose.strength_per_ml,
        dose_unit_written=dose.unit_written,
    )
    route = rec.route
    view = _view(reg, route, now)
    after = view.after
    current_records = view.current_records
    o.regimen_daily = after.daily
    o.regimen_first_daily = after.first_daily
    o.regimen_admin_per_day = after.admin_per_day
    # Duplicate therapy counts scheduled orders; a taper winding one order down beside
    # another is not a second regimen (else accepting a taper would raise a duplicate card)
    o.scheduled_orders = len(view.scheduled)
    # named in id order, whatever order the EHR listed them in (order independence)
    o.duplicate_ids = [
        ident
        for ident, r in view.scheduled_sorted[: _DUPLICATES_SHOWN + 1]
        if r is not rec and r.id != rec.id
    ][:_DUPLICATES_SHOWN]
    hits = [view.position[i] for i in (rec.id, rec.prior_id) if i and i in view.position]
    replaced = [current_records[min(hits)]] if hits else []
    o.replaces = replaced[0].id if replaced and rec.is_draft else None
    o.current_resource = replaced[0].resource if replaced and rec.is_draft else None
    o.product, o.strength = rec.product, rec.strength
    o.regimen_ids = view.regimen_ids
    o.co_cut_ids = [i for i in view.cutting or () if i != rec.id]
    # The dose this order changes, per administration, as taken now: a taper starts from it
    # (A6). A draft that stops an order missing from the data stands in for it.
    source = replaced[0] if replaced and rec.is_draft else None
    if source is None and rec.is_draft:
        source = next((r for r in reg.stand_ins if r.id == rec.id), None)
    if source is not None and source.dose is not None and source.dose.steps:
        step = _step_at(source, now)
        o.current_per_admin, o.current_admins = step.single_max, step.admin_per_day
        o.current_order_daily = step.daily

    complete = after.complete
    if current_records:
        complete = complete and view.current_complete
        o.current_daily = view.current_daily
        o.current_start = view.current_start
    o.regimen_complete = complete

    if (
        route == "oral"
        and patient.weight_kg
        and patient.weight_age_days is not None
        and (patient.weight_age_days <= p.weight_for_mg_per_kg_days)
    ):
        o.regimen_daily_per_kg = after.daily / patient.weight_kg
        o.weight_recent_days = patient.weight_age_days

    o.new_start = hist.new_start
    o.chronic_user = hist.chronic_user
    if not after.records:
        # nothing by this route after signing: a stop, unless nothing ran before either
        # (a one-off screening bolus is not the interruption of a regimen)
        o.change = "stop" if current_records else "new"
    elif o.current_daily is None:
        o.change = "new"
    elif complete:
        o.change = compare(after.first_daily, o.current_daily)
    o.prior_daily = o.current_daily
    o.after_daily = after.first_daily if complete or not after.records else None
    if o.after_daily is not None and o.prior_daily:
        o.after_to_prior = o.after_daily / o.prior_daily
    if not hist.new_start and complete and o.change in ("increase", "new"):
        increase = after.first_daily - (o.current_daily or 0.0)
        if increase > 0:
            o.increase_daily = increase
            if after.admin_per_day:
                o.increase_per_admin = increase / after.admin_per_day
    if o.current_start is not None:
        o.days_on_current = float(calendar_days(o.current_start, _effect_time(rec, now)))
    o.adverse_reason = _adverse(rec, ctx)
    _product_and_steps(o, rec, reg, ctx)
    # The patient's longest gap is the regimen's: a bedtime order beside a TID order is not
    # 24 h between doses. Several scheduled orders: 24 h / their administrations a day
    # (even spacing, as for one order without times of day), if that is shorter.
    if o.max_interval_hours is not None and view.regimen_gap_hours is not None:
        o.max_interval_hours = min(o.max_interval_hours, view.regimen_gap_hours)

    if route == "intrathecal":
        _intrathecal(
            o,
            rec,
            reg,
            hist,
            current_records,
            after.first_daily,
            ctx,
            pump_removal_planned=pump_removal_planned,
        )
    return o


def _schedule_at(rows: tuple[tuple[float, float], ...], day: float) -> float | None:
    value = None
    for from_day, max_daily in rows:
        if day + 1e-9 >= from_day:
            value = max_daily
    return value


def _product_and_steps(o: OrderFacts, rec: MedRecord, reg: Regimen, ctx: Context) -> None:
    """Family, indication-free product facts, and the measures of an order's later steps:
    the rise between steps, the excess over the pack's dose schedules (counted from the
    first dose of the family) and over its linear titration allowance."""
    assert rec.dose is not None
    dose, now, drug = rec.dose, ctx.now, ctx.drug
    o.family = rec.family
    o.product_stated = rec.product_stated
    o.route_tube = rec.route_tube
    o.max_interval_hours = dose.max_interval_hours
    if dose.supplement_single_max is not None:
        o.supplement_indices = list(rec.supplement_indices)
        o.supplement = True
        o.supplement_single_max = dose.supplement_single_max
        o.supplement_per_week = dose.supplement_per_week
    if rec.is_draft and rec.contributes and rec.family is not None:
        kept = {id(r) for r in reg.after}
        removed = [r for r in reg.current if id(r) not in kept]
        o.family_switch = (
            bool(removed)
            and all(r.family != rec.family for r in removed)
            and not any(r.family == rec.family for r in reg.current)
        )
    steps = [st for st in dose.steps if st.daily is not None]
    if not rec.is_draft or not rec.contributes or not steps:
        return
    rises = [
        (b.daily - a.daily) / b.admin_per_day  # type: ignore[operator]
        for a, b in zip(steps, steps[1:], strict=False)
        if b.admin_per_day
    ]
    if rises:
        o.step_rise_per_admin_max = max(rises)
    others = (o.regimen_first_daily or 0.0) - (o.first_step_daily or 0.0)
    effect = _effect_time(rec, now)

    def when(st: DosageStep) -> datetime:
        return st.start if st.start is not None and st.start > effect else effect

    if drug.schedules:
        same = [
            r
            for r in reg.history
            if r.family == rec.family and r.dose is not None and not r.dose.prn_only
        ]
        begun = continuous_start(same, now, max_gap=timedelta(days=ctx.params.chronic_max_gap_days))
        first = begun or when(steps[0])
        for name, rows in drug.schedules:
            excess = []
            for st in steps:
                limit = _schedule_at(rows, float(calendar_days(first, when(st))))
                if limit is not None:
                    excess.append(others + st.daily - limit)  # type: ignore[operator]
            if excess:
                o.schedule_excess[f"above_{name}"] = max(excess)
                if len(excess) > 1:
                    o.schedule_excess[f"above_{name}_later"] = max(excess[1:])
    if (
        drug.titration_rate is not None
        and not o.new_start
        and o.current_daily is not None
        and o.current_start is not None
        and o.regimen_complete
    ):
        per, interval = drug.titration_rate
        o.rate_excess = max(
            others
            + st.daily  # type: ignore[operator]
            - (
                o.current_daily
                + per * math.floor(calendar_days(o.current_start, when(st)) / interval)
            )
            for st in steps
        )


def _intrathecal(
    o: OrderFacts,
    rec: MedRecord,
    reg: Regimen,
    hist: PatientHistory,
    current_records: list[MedRecord],
    after_first: float,
    ctx: Context,
    *,
    pump_removal_planned: bool,
) -> None:
    now = ctx.now
    assert rec.dose is not None
    o.pump_first_order = hist.pump_first_order
    links = {rec.id, rec.prior_id} - {None}
    # The refill is due at the active pump order's validity end (A6 convention). An active
    # order that goes on unchanged after signing carries its own due date. A renewal signed
    # after the replaced order's due date does not refill the pump: until the refill is done
    # the refill stays overdue (the safer reading), so the renewal carries the later of the
    # two lateness counts; a renewal signed before the due date carries its own new date.
    if rec.kind == "request" and rec.contributes:
        ends = [rec.validity_end] + [
            r.validity_end for r in current_records if r.kind == "request" and r.id in links
        ]
        late = [calendar_days(end, now) for end in ends if end is not None]
        if late:
            o.refill_overdue_days = float(max(late))
    stopping = any(
        d.route == "intrathecal" and not d.is_bolus and d.status in STOP_STATUSES
        for d in reg.drafts
    )
    o.pump_removal = stopping or pump_removal_planned
    if rec.dose.bolus is not None:
        o.bolus_ug = rec.dose.bolus
        mine = _bolus_time(rec, now)
        others = reg.history + [d for d in reg.drafts if d.contributes]
        previous = [
            _bolus_time(r, now)
            for r in others
            if r is not rec
            and r.route == "intrathecal"
            and r.is_bolus
            and r.status != "cancelled"
            and not (r.id and r.id == rec.id)
        ]
        earlier = [t for t in previous if t <= mine]
        if earlier:
            o.bolus_interval_hours = (mine - max(earlier)) / timedelta(hours=1)
        return
    if not rec.is_draft or not rec.contributes:
        return
    new = rec.dose.first_step_daily
    replaced = [r for r in current_records if r.kind == "request" and r.id in links]
    if replaced:
        base, ok = daily_at(replaced, now)
    else:
        base, ok = (o.current_daily or 0.0), o.regimen_complete
    if new is not None and ok and base > 0:
        o.step_up_fraction = new / base - 1
    then = now - timedelta(hours=24)
    active_then = [
        r
        for r in reg.history
        if r.route == "intrathecal"
        and not r.is_bolus
        and r.status != "cancelled"
        and (s := span(r, now)) is not None
        and s[0] <= then <= s[1]
    ]
    old, ok = daily_at(active_then, then)
    if ok and old > 0 and o.regimen_complete:
        o.change_24h_fraction = after_first / old - 1
