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


def _when(now: datetime, spec: dict[str, Any]) -> datetime:
    return now - timedelta(
        days=float(spec.get("days_ago", 0)), hours=float(spec.get("hours_ago", 0))
    )


def _dosages(now: datetime, o: dict[str, Any]) -> list[dict[str, Any]]:
    specs = o.get("dosages") or [o]
    out = []
    for d in specs:
        start = None
        if "start_in_days" in d:
            start = now + timedelta(days=float(d["start_in_days"]))
        end = None
        if "end_in_days" in d:
            end = now + timedelta(days=float(d["end_in_days"]))
        event = None  # a one-off administration time (timing.event), e.g. a bolus given
        if "event_hours_ago" in d:
            event = now - timedelta(hours=float(d["event_hours_ago"]))
        out.append(
            b.dosage(
                dose=d.get("dose"),
                unit=d.get("unit", "mg"),
                frequency=d.get("frequency"),
                period=d.get("period", 1),
                period_unit=d.get("period_unit", "d"),
                timing_code=d.get("timing_code"),
                route=d.get("route", "oral") if "route" in d or "route" not in o else o["route"],
                prn=d.get("prn", False),
                max_per_day=d.get("max_per_day"),
                sequence=d.get("sequence"),
                start=start,
                end=end,
                rate_per_day=d.get("rate_per_day"),
                text=d.get("text"),
                event=event,
            )
        )
    return out


def _order(now: datetime, o: dict[str, Any], default_status: str) -> dict[str, Any]:
    authored = None
    if "start_days_ago" in o:
        authored = now - timedelta(days=float(o["start_days_ago"]))
    validity_end = None
    if "refill_due_days_ago" in o:
        validity_end = (now - timedelta(days=float(o["refill_due_days_ago"]))).date()
    reason = None
    if o.get("adverse_reason"):
        reason = (b.SNOMED, "281647001", "Adverse reaction")
    return b.medication_request(
        rid=o["id"],
        status=o.get("status", default_status),
        product=o.get("product", "tab20"),
        drug=o.get("drug"),
        dosages=_dosages(now, o) if not o.get("no_dosage") else None,
        authored=authored,
        prior=o.get("prior"),
        validity_end=validity_end,
        text=o.get("text"),
        status_reason=reason,
        coded=o.get("coded", True),
    )


def build_request(spec: dict[str, Any], now: datetime, base: Path) -> dict[str, Any]:
    """The full CDS Hooks request a vignette describes."""
    if "request_file" in spec:
        return json.loads((base / spec["request_file"]).read_text(encoding="utf-8"))
    p = spec.get("patient", {})
    pat = b.patient(
        now=now, age=p.get("age", 55), sex=p.get("sex", "male"), birth_date=p.get("birth_date")
    )
    body = []
    if "weight" in spec:
        body.append(
            b.weight(
                spec["weight"]["kg"],
                _when(now, spec["weight"]),
                unit=spec["weight"].get("unit", "kg"),
            )
        )
    if "height" in spec:
        body.append(b.height(spec["height"]["cm"], _when(now, spec["height"])))
    labs = []
    for i, c in enumerate(spec.get("creatinine", [])):
        labs.append(
            b.creatinine(c["value"], c.get("unit", "mg/dL"), _when(now, c), oid=f"cr-{i + 1}")
        )
    for e in spec.get("egfr", []):
        labs.append(b.egfr(e["value"], _when(now, e), loinc=e.get("loinc", "98979-8")))
    vitals = [b.vital(v["kind"], v["value"], _when(now, v)) for v in spec.get("vitals", [])]
    conditions = [
        b.condition(
            c if isinstance(c, str) else c["key"],
            onset=_when(now, c) if isinstance(c, dict) else None,
        )
        for c in spec.get("conditions", [])
    ]
    procedures = None
    if "procedures" in spec:
        procedures = [
            b.procedure(
                pr["key"],
                status=pr.get("status", "completed"),
                when=_when(now, pr) if ("days_ago" in pr or "hours_ago" in pr) else None,
                resource_type=pr.get("type", "Procedure"),
            )
            for pr in spec["procedures"]
        ]
    enc = b.encounter("enc-1", spec["encounter"]) if spec.get("encounter") else None
    meds = [_order(now, o, "active") for o in spec.get("active", [])]
    drafts = [_order(now, o, "draft") for o in spec.get("drafts", [])]
    return b.hook_request(
        hook=spec.get("hook", "order-sign"),
        now=now,
        patient_res=pat,
        drafts=drafts,
        selections=spec.get("selections"),
        medications=meds,
        labs=labs,
        body=body,
        vitals=vitals,
        conditions=conditions,
        encounter_res=enc,
        procedures=procedures,
    )


def load_vignette(path: Path, repo_root: Path | None = None) -> Vignette:
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    now = _dt(spec.get("now", DEFAULT_NOW))
    base = repo_root or path.parent
    return Vignette(
        id=spec["id"],
        path=path,
        description=spec.get("description", ""),
        now=now,
        profile=str(spec.get("profile", "US")).upper(),
        request=build_request(spec, now, base),
        expect=spec.get("expect", {}),
        part_d=spec.get("part_d"),
        covers=list(spec.get("covers", [])),
        xfail=spec.get("xfail"),
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
    return q.get("value"), q.get("unit"), freq


def check_card(card: dict[str, Any], exp: dict[str, Any]) -> list[str]:
    problems = []
    ext = card_extension(card)
    rules = ext.get("ruleIds", [])
    for r in exp.get("rules_include", []):
        if r not in rules:
            problems.append(f"{exp['category']}: rule {r} missing (fired: {rules})")
    for r in exp.get("rules_exclude", []):
        if r in rules:
            problems.append(f"{exp['category']}: rule {r} fired but must not")
    if "suggestion" in exp or "taper" in exp or "no_suggestion" in exp:
        suggs = card.get("suggestions", [])
        if exp.get("no_suggestion"):
            if suggs:
                problems.append(f"{exp['category']}: unexpected suggestion {suggs[0]['label']}")
            return problems
        if not suggs:
            return [*problems, f"{exp['category']}: no suggestion"]
        res = suggs[0]["actions"][0].get("resource", {})
        if "suggestion" in exp:
            s = exp["suggestion"]
            dose, unit, freq = _first_dose(res)
            if (
                dose is None
                or abs(float(dose) - float(s["dose"])) > 1e-6
                or unit != s.get("unit", "mg")
                or ("frequency" in s and freq != s["frequency"])
            ):
                problems.append(
                    f"{exp['category']}: suggested {dose} {unit} x{freq}, "
                    f"expected {s['dose']} {s.get('unit', 'mg')} "
                    f"x{s.get('frequency')}"
                )
            if "start" in s:
                di = res.get("dosageInstruction", [{}])[0]
                start = (
                    ((di.get("timing") or {}).get("repeat") or {})
                    .get("boundsPeriod", {})
                    .get("start")
                )
                if start != s["start"]:
                    problems.append(
                        f"{exp['category']}: suggested start {start}, expected {s['start']}"
                    )
        if "taper" in exp:
            got = []
            for di in res.get("dosageInstruction", []):
                q = ((di.get("doseAndRate") or [{}])[0]).get("doseQuantity") or {}
                f = ((di.get("timing") or {}).get("repeat") or {}).get("frequency")
                got.append([q.get("value"), f])
            if got != exp["taper"]:
                problems.append(f"{exp['category']}: taper {got}, expected {exp['taper']}")
    return problems


def compare(response: Any, expect: dict[str, Any]) -> list[str]:
    """Differences between a hook response and a vignette's expectations."""
    if expect.get("status", 200) != 200:
        return []
    cards = response.get("cards", []) if isinstance(response, dict) else []
    problems: list[str] = []
    got = [(c["source"]["topic"]["code"], c["indicator"]) for c in cards]
    expected = expect.get("cards", [])
    unmatched = list(cards)
    for exp in expected:
        match = next(
            (
                c
                for c in unmatched
                if c["source"]["topic"]["code"] == exp["category"]
                and c["indicator"] == exp["indicator"]
            ),
            None,
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
def _registry(rules_dir: Path, pack_id: str, profile: str) -> Any:
    from cds.engine.registry import PackRegistry

    reg = PackRegistry(rules_dir=rules_dir, pack_ids=[pack_id], profile=profile)
    reg.load()
    return reg


def run_vignette(v: Vignette, rules_dir: Path, pack_id: str) -> VignetteResult:
    from cds.evaluate_file import evaluate_request

    status, response = evaluate_request(
        v.request,
        rules_dir=rules_dir,
        pack_ids=[pack_id],
        profile=v.profile,
        now=v.now,
        registry=_registry(rules_dir, pack_id, v.profile),
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
