"""Clinical vignettes: a situation, the cards it must give, and the runner.

A vignette (``rules/<pack>/vignettes/*.yaml``) describes a patient compactly, or points at
a full request file, and lists the expected cards by category and severity (and, where
it matters, the rules behind them and the suggested dose or taper). The runner builds the
full CDS Hooks request and sends it through the same app as ``POST /cds-services/{id}``
at the vignette's fixed instant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cds.cards import card_extension
from cds.testing import builders as b
from cds.testing.formulary import Formulary, formulary_in
from cds.testing.vignette_spec import (
    DosageSpec,
    OrderSpec,
    ServiceRequestSpec,
    VignetteSpec,
    When,
    parse_vignette_spec,
)

DEFAULT_NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@dataclass
class Vignette:
    id: str
    path: Path
    description: str
    now: datetime
    profile: str
    request: dict[str, Any]
    expect: dict[str, Any]
    part_d: int | None = None
    covers: list[str] = field(default_factory=list)
    packs: tuple[str, ...] | None = None  # the packs the service runs (None: the pack's own)
    # a known pack or code bug: the expectation is right, the service is not (yet); the
    # test suite marks it xfail(strict=True) and ``cds rules test`` shows "xfail"
    xfail: str | None = None


@dataclass
class VignetteResult:
    vignette: Vignette
    ok: bool
    problems: list[str]
    status: int
    response: Any


def _dt(v: Any) -> datetime:
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=UTC)
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day, tzinfo=UTC)
    return datetime.fromisoformat(str(v).replace("Z", "+00:00"))


def _when(now: datetime, spec: When) -> datetime:
    return now - timedelta(days=spec.days_ago, hours=spec.hours_ago)


def _dosages(now: datetime, o: OrderSpec) -> list[dict[str, Any]]:
    specs: list[DosageSpec | OrderSpec] = list(o.dosages) if o.dosages else [o]
    out = []
    for d in specs:
        start = now + timedelta(days=d.start_in_days) if d.start_in_days is not None else None
        end = now + timedelta(days=d.end_in_days) if d.end_in_days is not None else None
        event = None  # a one-off administration time (timing.event), e.g. a bolus given
        if isinstance(d, DosageSpec) and d.event_hours_ago is not None:
            event = now - timedelta(hours=d.event_hours_ago)
        # a dosage's own route when it writes one (even null), else the order's
        route = d.route if "route" in d.model_fields_set or d is o else o.route
        out.append(
            b.dosage(
                dose=d.dose,
                unit=d.unit,
                unit_text=d.unit_text,
                frequency=d.frequency,
                period=d.period,
                period_unit=d.period_unit,
                timing_code=d.timing_code,
                route=route,
                prn=d.prn,
                max_per_day=d.max_per_day,
                sequence=d.sequence if isinstance(d, DosageSpec) else None,
                start=start,
                end=end,
                rate_per_day=d.rate_per_day,
                text=d.text if isinstance(d, DosageSpec) else None,
                event=event,
            )
        )
    return out


def _order(
    now: datetime, o: OrderSpec, default_status: str, formulary: Formulary | None = None
) -> dict[str, Any]:
    authored = None
    if o.start_days_ago is not None:
        authored = now - timedelta(days=o.start_days_ago)
    validity_end = None
    if o.refill_due_days_ago is not None:
        validity_end = (now - timedelta(days=o.refill_due_days_ago)).date()
    if o.refill_due_in_days is not None:
        validity_end = (now + timedelta(days=o.refill_due_in_days)).date()
    reason = (b.SNOMED, "281647001", "Adverse reaction") if o.adverse_reason else None
    return b.medication_request(
        rid=o.id,
        status=o.status or default_status,
        product=o.product,
        drug=o.drug,
        dosages=_dosages(now, o) if not o.no_dosage else None,
        authored=authored,
        prior=o.prior,
        validity_end=validity_end,
        text=o.text,
        status_reason=reason,
        coded=o.coded,
        formulary=formulary,
    )


def _statement(now: datetime, o: OrderSpec, formulary: Formulary | None = None) -> dict[str, Any]:
    start = now - timedelta(days=o.start_days_ago) if o.start_days_ago is not None else None
    return b.medication_statement(
        rid=o.id,
        status=o.status or "active",
        product=o.product,
        drug=o.drug,
        dosages=_dosages(now, o) if not o.no_dosage else None,
        start=start,
        based_on=o.based_on,
        formulary=formulary,
    )


def _draft(
    now: datetime, d: OrderSpec | ServiceRequestSpec, formulary: Formulary | None = None
) -> dict[str, Any]:
    if isinstance(d, ServiceRequestSpec):
        return b.procedure(
            d.service_request,
            status=d.status,
            resource_type="ServiceRequest",
            rid=d.id,
            formulary=formulary,
        )
    return _order(now, d, "draft", formulary)


def build_request(
    spec: VignetteSpec, now: datetime, base: Path, formulary: Formulary | None = None
) -> dict[str, Any]:
    """The full CDS Hooks request a vignette describes; product keys, drug names and
    concept codes are looked up in ``formulary`` (default: every shipped pack)."""
    if spec.request_file is not None:
        return json.loads((base / spec.request_file).read_text(encoding="utf-8"))
    p = spec.patient
    pat = b.patient(now=now, age=p.age, sex=p.sex, birth_date=p.birth_date)
    body = []
    weights = ([spec.weight] if spec.weight else []) + list(spec.weights)
    for i, w in enumerate(weights):
        res = b.weight(w.kg, _when(now, w), unit=w.unit)
        res["id"] = w.id or ("wt-1" if i == 0 else f"wt-{i + 1}")
        body.append(res)
    if spec.height is not None:
        body.append(b.height(spec.height.cm, _when(now, spec.height)))
    labs = [
        b.creatinine(c.value, c.unit, _when(now, c), oid=f"cr-{i + 1}")
        for i, c in enumerate(spec.creatinine)
    ]
    labs += [b.egfr(e.value, _when(now, e), loinc=e.loinc) for e in spec.egfr]
    vitals = [b.vital(v.kind, v.value, _when(now, v)) for v in spec.vitals]
    conditions = []
    for c in spec.conditions:
        if isinstance(c, str):
            conditions.append(b.condition(c, formulary=formulary))
        else:
            onset = _when(now, c) if (c.days_ago or c.hours_ago) else None
            res = b.condition(c.key, onset=onset, formulary=formulary)
            if c.status != "active":
                res["clinicalStatus"]["coding"][0]["code"] = c.status
            conditions.append(res)
    procedures: list[dict[str, Any]] | None = None
    service_requests: list[dict[str, Any]] = []
    if spec.procedures is not None:
        procedures = []
        for pr in spec.procedures:
            res = b.procedure(
                pr.key,
                status=pr.status,
                when=_when(now, pr) if (pr.days_ago or pr.hours_ago) else None,
                resource_type=pr.type,
                rid=pr.id,
                formulary=formulary,
            )
            (service_requests if pr.type == "ServiceRequest" else procedures).append(res)
    enc = b.encounter("enc-1", spec.encounter) if spec.encounter else None
    return b.hook_request(
        hook=spec.hook,
        now=now,
        patient_res=pat,
        drafts=[_draft(now, d, formulary) for d in spec.drafts],
        selections=spec.selections,
        medications=[_order(now, o, "active", formulary) for o in spec.active],
        statements=[_statement(now, o, formulary) for o in spec.statements],
        labs=labs,
        body=body,
        vitals=vitals,
        conditions=conditions,
        encounter_res=enc,
        procedures=procedures,
        service_requests=service_requests,
    )


def _formulary_for(path: Path, spec: VignetteSpec) -> Formulary | None:
    """The packs beside the vignette's own (``rules/<pack>/vignettes/x.yaml``), its pack
    and those it runs looked up first; None when the file is not in a pack folder."""
    folder = path.resolve().parent.parent
    if spec.request_file is not None or not (folder / "pack.yaml").is_file():
        return None
    return formulary_in(folder.parent, (folder.name, *(spec.packs or ())))


def load_vignette(path: Path, repo_root: Path | None = None) -> Vignette:
    """Read and validate one vignette file (strict: an unknown key is an error)."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec = parse_vignette_spec(raw, where=str(path))
    now = _dt(spec.now) if spec.now is not None else DEFAULT_NOW
    base = (
        path.parent
        if spec.request_file and (path.parent / spec.request_file).exists()
        else (repo_root or path.parent)
    )
    return Vignette(
        id=spec.id,
        path=path,
        description=spec.description,
        now=now,
        profile=spec.profile.upper(),
        request=build_request(spec, now, base, _formulary_for(path, spec)),
        expect=spec.expect.model_dump(exclude_defaults=False),
        part_d=spec.part_d,
        covers=list(spec.covers),
        xfail=spec.xfail,
        packs=tuple(spec.packs) if spec.packs else None,
    )


def load_vignettes(folder: Path) -> list[Vignette]:
    from cds.paths import data_dir

    try:
        root = data_dir("fhir").parent
    except FileNotFoundError:  # pragma: no cover
        root = folder
    return [load_vignette(p, root) for p in sorted(folder.glob("*.yaml"))]


def _first_dose(resource: dict[str, Any]) -> tuple[float | None, str | None, float | None]:
    di = (resource.get("dosageInstruction") or [{}])[0]
    q = ((di.get("doseAndRate") or [{}])[0]).get("doseQuantity") or {}
    freq = ((di.get("timing") or {}).get("repeat") or {}).get("frequency")
    return q.get("value"), q.get("code") or q.get("unit"), freq


def _product_codes(resource: dict[str, Any]) -> list[str]:
    concept = resource.get("medicationCodeableConcept") or {}
    return [str(c.get("code")) for c in concept.get("coding") or [] if isinstance(c, dict)]


def _check_suggestion(cat: str, s: dict[str, Any], sugg: dict[str, Any]) -> list[str]:
    problems = []
    res = sugg["actions"][0].get("resource", {})
    dose, unit, freq = _first_dose(res)
    if (
        dose is None
        or abs(float(dose) - float(s["dose"])) > 1e-6
        or unit != s["unit"]
        or (s.get("frequency") is not None and freq != s["frequency"])
    ):
        problems.append(
            f"{cat}: suggested {dose} {unit} x{freq}, "
            f"expected {s['dose']} {s['unit']} x{s.get('frequency')}"
        )
    if s.get("start") is not None:
        di = res.get("dosageInstruction", [{}])[0]
        start = ((di.get("timing") or {}).get("repeat") or {}).get("boundsPeriod", {}).get("start")
        if start != s["start"]:
            problems.append(f"{cat}: suggested start {start}, expected {s['start']}")
    if s.get("product") is not None and s["product"] not in _product_codes(res):
        problems.append(f"{cat}: suggested product {_product_codes(res)}, expected {s['product']}")
    for text in s.get("label_includes") or []:
        if text not in sugg.get("label", ""):
            problems.append(f"{cat}: suggestion label {sugg.get('label')!r} lacks {text!r}")
    if s.get("prn") is not None:
        di = res.get("dosageInstruction", [{}])[0]
        if bool(di.get("asNeededBoolean")) != s["prn"]:
            problems.append(f"{cat}: suggestion asNeeded is not {s['prn']}")
    return problems


def check_card(card: dict[str, Any], exp: dict[str, Any]) -> list[str]:
    problems = []
    cat = exp["category"]
    ext = card_extension(card)
    rules = ext.get("ruleIds", [])
    if exp.get("order") is not None and ext.get("orderId") != exp["order"]:
        problems.append(f"{cat}: card is about order {ext.get('orderId')}, expected {exp['order']}")
    for r in exp.get("rules_include") or []:
        if r not in rules:
            problems.append(f"{cat}: rule {r} missing (fired: {rules})")
    for r in exp.get("rules_exclude") or []:
        if r in rules:
            problems.append(f"{cat}: rule {r} fired but must not")
    summary = card.get("summary", "")
    for text in exp.get("summary_includes") or []:
        if text not in summary:
            problems.append(f"{cat}: summary {summary!r} lacks {text!r}")
    for text in exp.get("summary_excludes") or []:
        if text in summary:
            problems.append(f"{cat}: summary {summary!r} contains {text!r}")
    for text in exp.get("detail_includes") or []:
        if text not in card.get("detail", ""):
            problems.append(f"{cat}: detail lacks {text!r}")
    suggs = card.get("suggestions", [])
    if exp.get("no_suggestion"):
        if suggs:
            problems.append(f"{cat}: unexpected suggestion {suggs[0]['label']}")
        return problems
    if all(exp.get(k) is None for k in ("suggestion", "taper", "tapers")):
        return problems
    if not suggs:
        return [*problems, f"{cat}: no suggestion"]
    if exp.get("suggestion") is not None:
        problems.extend(_check_suggestion(cat, exp["suggestion"], suggs[0]))
    if exp.get("taper") is not None:
        got = _taper_steps(suggs[0]["actions"][0].get("resource", {}))
        if got != exp["taper"]:
            problems.append(f"{cat}: taper {got}, expected {exp['taper']}")
    if exp.get("tapers") is not None:
        got_all = {
            (a.get("resource") or {}).get("id"): _taper_steps(a.get("resource") or {})
            for a in suggs[0]["actions"]
        }
        if got_all != exp["tapers"]:
            problems.append(f"{cat}: tapers {got_all}, expected {exp['tapers']}")
    return problems


def _taper_steps(res: dict[str, Any]) -> list[list[Any]]:
    """[dose, frequency] of each dosage instruction of a suggested resource."""
    got = []
    for di in res.get("dosageInstruction", []):
        q = ((di.get("doseAndRate") or [{}])[0]).get("doseQuantity") or {}
        f = ((di.get("timing") or {}).get("repeat") or {}).get("frequency")
        got.append([q.get("value"), f])
    return got


def compare(response: Any, expect: dict[str, Any]) -> list[str]:
    """Differences between a hook response and a vignette's expectations."""
    if expect.get("status", 200) != 200:
        return []
    cards = response.get("cards", []) if isinstance(response, dict) else []
    problems: list[str] = []
    got = [(c["source"]["topic"]["code"], c["indicator"]) for c in cards]
    unmatched = list(cards)
    for exp in expect.get("cards", []):
        candidates = [
            c
            for c in unmatched
            if c["source"]["topic"]["code"] == exp["category"]
            and c["indicator"] == exp["indicator"]
            and (exp.get("pack") is None or card_extension(c).get("packId") == exp["pack"])
        ]
        # several cards of one category (one per order): the one about the expected order
        match = next(
            (c for c in candidates if card_extension(c).get("orderId") == exp.get("order")),
            candidates[0] if candidates else None,
        )
        if match is None:
            problems.append(f"expected {exp['category']} {exp['indicator']}; got {got}")
            continue
        unmatched.remove(match)
        problems.extend(check_card(match, exp))
    if expect.get("exact", True) and unmatched:
        problems.append(
            "unexpected cards: "
            + ", ".join(
                f"{c['source']['topic']['code']} {c['indicator']} "
                f"({','.join(card_extension(c).get('ruleIds', []))})"
                for c in unmatched
            )
        )
    for cat in expect.get("forbid", []):
        if any(c["source"]["topic"]["code"] == cat for c in cards):
            problems.append(f"forbidden category {cat} present")
    from cds.cards import contract_problems

    for c in cards:
        for p in contract_problems(c):
            problems.append(f"card contract: {p}")
    return problems


@cache
def _registry(rules_dir: Path, pack_ids: tuple[str, ...], profile: str) -> Any:
    from cds.engine.registry import PackRegistry

    reg = PackRegistry(rules_dir=rules_dir, pack_ids=list(pack_ids), profile=profile)
    reg.load()
    return reg


def run_vignette(v: Vignette, rules_dir: Path, pack_id: str) -> VignetteResult:
    from cds.evaluate_file import evaluate_request

    packs = v.packs or (pack_id,)
    status, response = evaluate_request(
        v.request,
        rules_dir=rules_dir,
        pack_ids=list(packs),
        profile=v.profile,
        now=v.now,
        registry=_registry(rules_dir, packs, v.profile),
    )
    problems = []
    want = v.expect.get("status", 200)
    if status != want:
        problems.append(f"HTTP {status}, expected {want}: {json.dumps(response)[:300]}")
    else:
        problems = compare(response, v.expect)
    return VignetteResult(v, not problems, problems, status, response)


def run_vignettes_cli(rules_dir: Path, pack_id: str, console: Any) -> bool:
    from rich.table import Table

    folder = rules_dir / pack_id / "vignettes"
    vignettes = load_vignettes(folder)
    results = [run_vignette(v, rules_dir, pack_id) for v in vignettes]
    # an xfail vignette (a known bug) is expected to fail; passing is news (strict)
    failed = [r for r in results if r.ok == bool(r.vignette.xfail)]
    xfailed = [r for r in results if r.vignette.xfail and not r.ok]
    title = f"{pack_id}: {len(results)} vignettes, {len(failed)} failed"
    if xfailed:
        title += f", {len(xfailed)} xfail"
    table = Table(title=title)
    table.add_column("vignette")
    table.add_column("result")
    table.add_column("difference")
    for r in results:
        if r.vignette.xfail:
            if r.ok:
                table.add_row(
                    r.vignette.id,
                    "[red]XPASS[/red]",
                    f"marked xfail ({r.vignette.xfail}) but passes",
                )
            else:
                table.add_row(
                    r.vignette.id,
                    "[yellow]xfail[/yellow]",
                    "\n".join([f"known bug: {r.vignette.xfail}", *r.problems]),
                )
            continue
        table.add_row(
            r.vignette.id,
            "[green]pass[/green]" if r.ok else "[red]FAIL[/red]",
            "\n".join(r.problems),
        )
    console.print(table)
    return not failed
