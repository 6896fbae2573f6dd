"""The pack's drug, from ``pack.yaml``: its terminology and the :class:`DrugSpec` the
clinical layer reads it by.

Every ValueSet a pack names (its identity, condition flags, procedures, classes,
co-medications, observations, prefetch) must exist, among the shared ones under ``fhir/``
or the pack's own ``terminology:`` files: a typo fails ``cds rules check`` with a "did you
mean", never a request.
"""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path

from cds.clinical.drugspec import (
    Comedication,
    ConditionFlag,
    DrugSpec,
    Family,
    InteractionClass,
    ObservationKind,
    ProcedureFlag,
)
from cds.clinical.terminology import load_terminology
from cds.engine.schema import PackDef
from cds.errors import PackError
from cds.paths import data_dir


def _file(folder: Path, rel: str, where: str) -> Path:
    path = (folder / rel).resolve()
    if not path.is_relative_to(folder.resolve()) or not path.is_file():
        raise PackError(
            f"no file {rel!r} in the pack folder", file=str(folder / "pack.yaml"), field=where
        )
    return path


def build_drug(pack: PackDef, folder: Path) -> tuple[DrugSpec, str]:
    """(the DrugSpec, a digest of the terminology files) for the pack in ``folder``."""
    main = str(folder / "pack.yaml")
    files = [_file(folder, rel, f"terminology[{i}]") for i, rel in enumerate(pack.terminology)]
    products = _file(folder, pack.drug.products, "drug.products") if pack.drug.products else None
    digest = hashlib.sha256()
    for path in [*files, *([products] if products else [])]:
        digest.update(path.read_bytes())
    try:
        term = load_terminology(
            data_dir("fhir"), valuesets=files, products=products, identity=pack.drug.identity
        )
    except (ValueError, KeyError, OSError) as exc:
        raise PackError(f"terminology: {exc}", file=main) from None

    def vs(name: str | None, where: str) -> str:
        if name is None or name in term.valuesets:
            return name or ""
        hint = difflib.get_close_matches(name, sorted(term.valuesets), n=1)
        raise PackError(
            f"unknown ValueSet {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""),
            file=main,
            field=where,
        )

    vs(pack.drug.identity, "drug.identity")
    if pack.drug.screening_bolus:
        vs(pack.drug.screening_bolus, "drug.screening_bolus")
    conditions = tuple(
        ConditionFlag(
            name=name,
            valueset=vs(c.valueset, f"conditions.{name}.valueset"),
            history=c.history,
            recent_days=c.recent_days,
            screen=vs(c.screen, f"conditions.{name}.screen") or None,
            screen_hours=c.screen_hours,
            procedure_days=c.procedure_days,
            onset_field=c.onset_field,
        )
        for name, c in pack.conditions.items()
    )
    families = tuple(
        Family(
            name=name,
            valueset=vs(f.valueset, f"drug.families.{name}.valueset") or None,
            in_regimen=f.in_regimen,
            default=f.default,
        )
        for name, f in pack.drug.families.items()
    )
    if sum(f.default for f in families) > 1:
        raise PackError("at most one family is the default", file=main, field="drug.families")
    comeds = []
    for name, c in pack.comedications.items():
        sets = [c.valueset] if c.valueset else []
        sets += c.valuesets
        if not sets:
            raise PackError("give valueset or valuesets", file=main, field=f"comedications.{name}")
        comeds.append(
            Comedication(
                name,
                tuple(vs(v, f"comedications.{name}") for v in sets),
                count=c.count,
                drafts_only=c.drafts_only,
            )
        )
    procedures = tuple(
        ProcedureFlag(name, vs(p.valueset, f"procedures.{name}.valueset"), p.lookback_days)
        for name, p in pack.procedures.items()
    )
    classes = tuple(
        InteractionClass(
            name=name,
            valuesets=tuple(vs(v, f"interactions.{name}.valuesets") for v in c.valuesets),
            conditions=tuple(vs(v, f"interactions.{name}.conditions") for v in c.conditions),
            condition_name=c.condition_name,
        )
        for name, c in pack.interactions.items()
    )
    observations = tuple(
        ObservationKind(
            name=name,
            valueset=vs(o.valueset, f"observations.{name}.valueset"),
            window_hours=o.window_hours,
            value=o.value,
            negative_codes=frozenset(o.negative_codes),
            positive_integer_min=o.positive_integer_min,
        )
        for name, o in pack.observations.items()
    )
    for key, pf in pack.prefetch.items():
        for v in pf.observations:
            vs(v, f"prefetch.{key}.observations")
        if (pf.search is None) == (not pf.observations):
            raise PackError(
                "give either search or observations", file=main, field=f"prefetch.{key}"
            )
    drug = DrugSpec(
        name=pack.drug.name,
        identity=pack.drug.identity,
        routes=dict(pack.drug.routes),
        term=term,
        conditions=conditions,
        procedures=procedures,
        interactions=classes,
        comedications=tuple(comeds),
        observations=observations,
        screening_bolus=pack.drug.screening_bolus,
        families=families,
        indications=tuple(
            (i.name, vs(i.valueset, f"drug.indications.{i.name}")) for i in pack.drug.indications
        ),
        indication_default=pack.drug.indication_default,
        supplement_valueset=(
            vs(pack.drug.supplement.valueset, "drug.supplement.valueset")
            if pack.drug.supplement
            else None
        ),
        schedules=tuple(
            (name, tuple(sorted((float(d), float(m)) for d, m in rows)))
            for name, rows in pack.drug.schedules.items()
        ),
        titration_rate=(
            (pack.drug.titration_rate.per_interval, pack.drug.titration_rate.interval_days)
            if pack.drug.titration_rate
            else None
        ),
        supplement_max_per_week=(pack.drug.supplement.max_per_week if pack.drug.supplement else 4),
    )
    return drug, digest.hexdigest()
