"""Write the benchmark request mix to ``bench/requests/*.json``.

Synthetic patients built with the project's own FHIR builders (``cds.testing.builders``), so
every request goes through the same parsing as an EHR's:

- ``order-sign-typical``: one baclofen draft (a renewal at a higher dose) for a 68-year-old
  with CKD stage 3, ~40 prefetch resources (medications, creatinine/eGFR history, weights,
  vitals of the last two days, conditions, the encounter).
- ``order-select``: the same patient selecting baclofen among two draft orders.
- ``patient-view``: the same patient's chart opened (active regimen against new labs).
- ``order-sign-heavy``: 2,000 observations and 100 medications.

Dates are relative to ``--now``. The committed files are at the project's fixed instant
(2026-11-20T12:00:00Z, the default), byte-for-byte reproducible; the in-process benchmarks
evaluate them at that instant. The HTTP benchmarks talk to a server that uses the wall
clock, so they generate copies relative to now (``--now now``) in their run folder.

    python bench/gen_requests.py [--out bench/requests] [--now 2026-11-20T12:00:00Z|now]
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cds.testing import builders as b

HERE = Path(__file__).resolve().parent
FIXED_NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
KINDS = ("order-sign-typical", "order-select", "patient-view", "order-sign-heavy")
SERVICE = {
    "order-sign-typical": "medication-safety-order-sign",
    "order-sign-heavy": "medication-safety-order-sign",
    "order-select": "medication-safety-order-select",
    "patient-view": "medication-safety-patient-view",
}
# Everyday co-medications that no baclofen rule is about (RxNorm ingredient, name).
COMEDS: list[tuple[str, str]] = [
    ("6809", "metformin"),
    ("83367", "atorvastatin"),
    ("29046", "lisinopril"),
    ("17767", "amlodipine"),
    ("7646", "omeprazole"),
    ("1191", "aspirin"),
    ("5640", "ibuprofen"),
    ("161", "acetaminophen"),
    ("36567", "simvastatin"),
    ("4603", "furosemide"),
    ("8123", "prednisone"),
    ("10582", "levothyroxine"),
    ("6918", "metoprolol"),
    ("32968", "clopidogrel"),
    ("11289", "warfarin"),
    ("3443", "diltiazem"),
    ("5487", "hydrochlorothiazide"),
    ("8787", "propranolol"),
    ("41493", "meloxicam"),
    ("2551", "ciprofloxacin"),
]


def comed(i: int, now: datetime, rng: random.Random, pid: str) -> dict[str, Any]:
    code, name = COMEDS[i % len(COMEDS)]
    res = b.medication_request(
        rid=f"med-{i}",
        status="active",
        pid=pid,
        dosages=[b.dosage(dose=rng.choice([5, 10, 20, 40, 81, 500]), frequency=1)],
        authored=now - timedelta(days=rng.randint(10, 900)),
    )
    res["medicationCodeableConcept"] = {"coding": [b.coding(b.RXNORM, code, name)], "text": name}
    return res


def baclofen_active(now: datetime, pid: str) -> dict[str, Any]:
    return b.medication_request(
        rid="rx-current",
        status="active",
        product="tab10",
        pid=pid,
        dosages=[b.dosage(dose=10, frequency=3)],
        authored=now - timedelta(days=120),
    )


def baclofen_draft(now: datetime, pid: str, rid: str = "draft-1") -> dict[str, Any]:
    return b.medication_request(
        rid=rid,
        status="draft",
        product="tab20",
        pid=pid,
        dosages=[b.dosage(dose=20, frequency=3)],
        authored=now,
        prior="rx-current",
    )


def labs(now: datetime, rng: random.Random, pid: str, n: int) -> list[dict[str, Any]]:
    """Alternating creatinine and eGFR results, newest first, a few days apart."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        when = now - timedelta(days=2 + 9 * (i // 2), hours=rng.randint(0, 8))
        if i % 2 == 0:
            out.append(
                b.creatinine(round(rng.uniform(1.3, 1.7), 2), "mg/dL", when, oid=f"cr-{i}", pid=pid)
            )
        else:
            res = b.egfr(round(rng.uniform(38, 52), 1), when, pid=pid)
            res["id"] = f"egfr-{i}"
            out.append(res)
    return out


def body_obs(now: datetime, pid: str, n: int) -> list[dict[str, Any]]:
    out = [b.height(165, now - timedelta(days=400), pid=pid)]
    for i in range(n - 1):
        w = b.weight(72 - 0.1 * i, now - timedelta(days=3 + 30 * i), pid=pid)
        w["id"] = f"wt-{i}"
        out.append(w)
    return out


def vitals(now: datetime, rng: random.Random, pid: str, n: int) -> list[dict[str, Any]]:
    kinds = ("resp_rate", "spo2", "sbp", "temperature")
    normal = {
        "resp_rate": (14, 18),
        "spo2": (95, 99),
        "sbp": (118, 138),
        "temperature": (36.5, 37.2),
    }
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        lo, hi = normal[kind]
        when = now - timedelta(minutes=30 + (i // len(kinds)) * (47 * 60 // max(1, n // 4)))
        res = b.vital(kind, round(rng.uniform(lo, hi), 1), when, pid=pid)
        res["id"] = f"vs-{i}"
        out.append(res)
    return out


def build(kind: str, now: datetime, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(f"{seed}-{kind}")
    pid = "bench-pat-1"
    pat = b.patient(pid=pid, now=now, age=68, sex="female")
    enc = b.encounter("enc-1", "AMB", pid=pid)
    conds = [b.condition(k, pid=pid) for k in ("stroke", "cerebral-palsy")]
    heavy = kind == "order-sign-heavy"
    n_meds = 100 if heavy else 7
    meds = [baclofen_active(now, pid)] + [comed(i, now, rng, pid) for i in range(n_meds - 1)]
    if heavy:  # 2,000 observations: 600 renal, 200 body, 1,200 vitals
        lab, body, vit = (
            labs(now, rng, pid, 600),
            body_obs(now, pid, 200),
            vitals(now, rng, pid, 1200),
        )
    else:  # 1 + 7 + 12 + 4 + 12 + 2 + 1 = 39 prefetch resources
        lab, body, vit = labs(now, rng, pid, 12), body_obs(now, pid, 4), vitals(now, rng, pid, 12)
    drafts: list[dict[str, Any]] = []
    hook = {"order-select": "order-select", "patient-view": "patient-view"}.get(kind, "order-sign")
    if hook != "patient-view":
        drafts = [baclofen_draft(now, pid)]
    if hook == "order-select":
        other = comed(99, now, rng, pid)
        other.update(id="draft-2", status="draft")
        drafts.append(other)
    req = b.hook_request(
        hook=hook,
        now=now,
        patient_res=pat,
        drafts=drafts,
        selections=["MedicationRequest/draft-1"] if hook == "order-select" else None,
        medications=meds,
        labs=lab,
        body=body,
        vitals=vit,
        conditions=conds,
        encounter_res=enc,
        hook_instance=f"00000000-0000-4000-8000-{seed:012d}",
    )
    _stable_full_urls(req)
    return req


def _stable_full_urls(obj: Any) -> None:
    """Bundle entries' ``fullUrl`` from the resource identity, not a random uuid."""
    if isinstance(obj, dict):
        if obj.get("resourceType") == "Bundle":
            for e in obj.get("entry", []):
                r = e.get("resource", {})
                name = f"{r.get('resourceType')}/{r.get('id')}"
                e["fullUrl"] = f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, name)}"
        for v in obj.values():
            _stable_full_urls(v)


def prefetch_count(req: dict[str, Any]) -> int:
    n = 0
    for v in (req.get("prefetch") or {}).values():
        if isinstance(v, dict):
            n += len(v.get("entry", [])) if v.get("resourceType") == "Bundle" else 1
    return n


def write_all(out: Path, now: datetime, seed: int = 7) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind in KINDS:
        p = out / f"{kind}.json"
        p.write_text(json.dumps(build(kind, now, seed), separators=(",", ":")))
        paths[kind] = p
    return paths


def parse_now(text: str | None) -> datetime:
    if not text:
        return FIXED_NOW
    if text == "now":
        return datetime.now(UTC).replace(microsecond=0)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=HERE / "requests")
    ap.add_argument(
        "--now",
        help="ISO 8601 instant the dates are relative to, or 'now' (default: 2026-11-20T12:00:00Z)",
    )
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    now = parse_now(args.now)
    for _kind, p in write_all(args.out, now, args.seed).items():
        req = json.loads(p.read_text())
        print(
            f"{p}  {p.stat().st_size:>9,} bytes  prefetch resources: {prefetch_count(req)}"
            f"  drafts: {len(req['context'].get('draftOrders', {}).get('entry', []))}"
        )


if __name__ == "__main__":
    main()
