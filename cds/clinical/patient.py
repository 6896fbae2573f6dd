"""Patient context (A3-A9 inputs): age, sex, weight, setting, renal value, vitals, problems.

Why one assembly step: every order fact carries the same patient context, flattened, so the
rules can say "age < 18 and daily > 40" in one condition. This module turns the Patient,
the Encounter, the observation series and the condition flags into :class:`PatientFacts`.

- Age is completed years at now (a partial birth date is read as its latest possible day:
  the youngest age it can mean).
- Inpatient only when ``context.encounterId`` resolves to an Encounter whose class is one of
  ``params.inpatient_classes`` (R4 Coding, R5 list of CodeableConcepts); anything else,
  including an unreadable encounter, is outpatient.
- Vitals: the newest value within ``vitals_window_hours``; GCS drop = the previous value
  within ``gcs_previous_window_hours`` before the newest, minus the newest; temperature: the
  maximum within ``temperature_window_hours``.
- Pregnancy: an active pregnancy Condition, or a gestational age projected to now that is
  still plausible (not past ``gestation_max_weeks``, not followed by a pregnancy Condition
  that ended); the trimester comes from that gestational age.
"""

from __future__ import annotations

from datetime import timedelta

from cds.clinical.conditions import ConditionFlags
from cds.clinical.context import Context
from cds.clinical.facts import PatientFacts
from cds.clinical.fhirdata import JSON, as_dict, as_list, as_str, codings, parse_date_latest
from cds.clinical.observations import Obs, newest_within, report_implausible
from cds.clinical.renal import RenalInputs, RenalResult, compute_renal

_SEXES = {"male": "male", "female": "female", "other": "other", "unknown": "unknown"}


def demographics(patient: JSON | None, ctx: Context, facts: PatientFacts) -> None:
    if patient is None:
        return
    facts.sex = _SEXES.get((as_str(patient.get("gender")) or "unknown").lower(), "unknown")  # type: ignore[assignment]
    born = parse_date_latest(patient.get("birthDate"))
    if born is None:
        if "birthDate" in patient:
            ctx.issue(
                "measure-unreadable",
                "Age: the Patient's birthDate is unreadable: age-based checks did not run",
                ref=f"Patient/{ctx.patient_id}",
                measure="Age",
                value_text="(birth date unreadable)",
            )
        return
    today = ctx.now.date()
    if born > today:
        # A2 plausibility: an age below 0 is a typo; never guess an age from it
        ctx.issue(
            "measure-implausible",
            f"Age: birth date {born.isoformat()} is after today: age-based checks did not run",
            ref=f"Patient/{ctx.patient_id}",
            measure="Age",
            value_text=f"(born {born.isoformat()})",
        )
        return
    facts.age_days = (today - born).days
    facts.age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def is_inpatient(encounters: list[JSON], encounter_id: str | None, ctx: Context) -> bool:
    if not encounter_id:
        return False
    wanted = encounter_id.split("/")[-1]
    for enc in encounters:
        if as_str(enc.get("id")) != wanted:
            continue
        classes: list[tuple[str, str, str]] = []
        for c in as_list(enc.get("class")):
            c = as_dict(c)
            if c is None:
                continue
            classes.extend(codings(c) if "coding" in c else codings({"coding": [c]}))
        return any(code.upper() in ctx.params.inpatient_classes for _, code, _ in classes)
    return False


def _newest(series: list[Obs]) -> Obs | None:
    return next((o for o in series if o.value is not None), None)


def assemble_patient(
    *,
    patient: JSON | None,
    encounters: list[JSON],
    encounter_id: str | None,
    obs: dict[str, list[Obs]],
    flags: ConditionFlags,
    ctx: Context,
) -> tuple[PatientFacts, RenalResult]:
    p = ctx.params
    now = ctx.now
    facts = PatientFacts()
    demographics(patient, ctx, facts)
    facts.inpatient = is_inpatient(encounters, encounter_id, ctx)
    for kind in ("weight", "height", "egfr", "crcl"):
        report_implausible(obs[kind], ctx)
    weight = _newest(obs["weight"])
    if weight is not None:
        facts.weight_kg = weight.value
        facts.weight_age_days = (now - weight.when) / timedelta(days=1)
        facts.weight_effective = weight.when
    height = _newest(obs["height"])
    if height is not None:
        facts.height_cm = height.value

    renal = compute_renal(
        RenalInputs(
            age=facts.age,
            sex=facts.sex,
            inpatient=facts.inpatient,
            creatinine=obs["creatinine"],
            crcl=obs["crcl"],
            egfr=obs["egfr"],
            weight=obs["weight"],
            height=obs["height"],
        ),
        now,
        p,
    )
    if renal.measure is not None:
        m = renal.measure
        facts.renal = m
        facts.renal_value = m.value
        facts.renal_kind = m.kind
        facts.renal_is_egfr = m.kind.startswith("egfr")
        facts.renal_age_hours = (now - m.effective) / timedelta(hours=1)
    facts.egfr_for_beers = renal.egfr_for_beers
    facts.renal_needed_missing_height = renal.needed_missing_height
    facts.creatinine_rise_48h_mg_dl = renal.rise_48h
    facts.creatinine_ratio_7d = renal.ratio_7d
    for bad in renal.unusable_newer:
        facts.creatinine_unusable = True
        what = (
            "unit missing or not convertible"
            if bad.problem == "creatinine-unit"
            else ("value implausible for its unit")
        )
        named = f"{bad.raw or 'no value'}, {bad.when.date().isoformat()}, Observation/{bad.id}"
        facts.creatinine_unusable_text = facts.creatinine_unusable_text or named
        ctx.issue(
            bad.problem or "creatinine-unit",
            f"Observation/{bad.id}: creatinine {bad.raw or ''} {what}".replace("  ", " "),
            ref=f"Observation/{bad.id}",
        )

    for field_name, kind in (
        ("resp_rate", "rr"),
        ("spo2", "spo2"),
        ("gcs", "gcs"),
        ("rass", "rass"),
        ("sbp", "sbp"),
    ):
        o = newest_within(obs[kind], now, p.vitals_window_hours)
        setattr(facts, field_name, o.value if o is not None else None)
    gcs = newest_within(obs["gcs"], now, p.vitals_window_hours)
    if gcs is not None and gcs.value is not None:
        since = gcs.when - timedelta(hours=p.gcs_previous_window_hours)
        prev = next(
            (o for o in obs["gcs"] if o.value is not None and since <= o.when < gcs.when), None
        )
        if prev is not None and prev.value is not None:
            facts.gcs_drop_48h = prev.value - gcs.value
    temp_since = now - timedelta(hours=p.temperature_window_hours)
    temps = [o.value for o in obs["temp"] if o.value is not None and o.when >= temp_since]
    facts.temp_max_24h_c = max(temps) if temps else None

    facts.on_dialysis = flags.on_dialysis
    # The pack's questions: condition flags (a positive screen counts too), its own
    # observations (the newest value in the window, the maximum, or a positive result).
    for f in ctx.drug.conditions:
        value = flags.flags.get(f.name, False)
        if not value and f.screen and f.screen_hours is not None:
            screen = newest_within(obs[f"screen:{f.screen}"], now, f.screen_hours)
            value = bool(screen and screen.positive)
        facts.flags[f.name] = value
    for o in ctx.drug.observations:
        series = obs[o.name]
        if o.value == "positive":
            since = now - timedelta(hours=o.window_hours)
            facts.flags[o.name] = any(x.positive for x in series if x.when >= since)
            continue
        if o.value == "max":
            since = now - timedelta(hours=o.window_hours)
            values = [x.value for x in series if x.value is not None and x.when >= since]
            if values:
                facts.flags[o.name] = max(values)
            continue
        newest = newest_within(series, now, o.window_hours)
        if newest is not None and newest.value is not None:
            facts.flags[o.name] = newest.value
    _pregnancy(facts, obs["gestational_age"], flags, ctx)
    return facts, renal


def _pregnancy(facts: PatientFacts, series: list[Obs], flags: ConditionFlags, ctx: Context) -> None:
    p = ctx.params
    ga = _newest(series)
    weeks = None
    ended = flags.pregnancy_ended
    if ga is not None and ga.value is not None and (ended is None or ended < ga.when):
        weeks = ga.value + (ctx.now - ga.when) / timedelta(weeks=1)
        if weeks > p.gestation_max_weeks:
            weeks = None
    facts.pregnant = flags.pregnant or flags.pregnancy_third_trimester or weeks is not None
    if facts.pregnant and weeks is None and flags.pregnancy_third_trimester:
        facts.pregnancy_trimester = 3
    elif facts.pregnant and weeks is not None:
        if weeks < p.trimester_2_from_weeks:
            facts.pregnancy_trimester = 1
        elif weeks < p.trimester_3_from_weeks:
            facts.pregnancy_trimester = 2
        else:
            facts.pregnancy_trimester = 3
