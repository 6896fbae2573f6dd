"""A request in a few readable lines: what a rule author reads when an invariant fails.

:func:`describe_request` prints the hook, the patient, every order with its doses and
schedule, labs, vitals, problems, the encounter, and which prefetch keys were absent,
null or failed, so a shrunk failing request reads like a chart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cds.testing import strategies as strat
from cds.testing.rewrites import bundle_resources

__all__ = ["describe_request"]


def _qty(q: Mapping[str, Any]) -> str:
    return f"{q.get('value')} {q.get('code') or q.get('unit') or ''}".strip()


def _dosage_text(d: Mapping[str, Any]) -> str:
    parts = []
    if d.get("sequence") is not None:
        parts.append(f"step {d['sequence']}:")
    for dr in d.get("doseAndRate") or []:
        if "doseQuantity" in dr:
            parts.append(_qty(dr["doseQuantity"]))
        if "doseRange" in dr:
            parts.append(
                f"{_qty(dr['doseRange'].get('low', {}))}-{_qty(dr['doseRange'].get('high', {}))}"
            )
        if "rateQuantity" in dr:
            parts.append(f"rate {_qty(dr['rateQuantity'])}")
    timing = d.get("timing") or {}
    for c in (timing.get("code") or {}).get("coding") or []:
        parts.append(str(c.get("code")))
    rep = dict(timing.get("repeat") or {})
    bounds = rep.pop("boundsPeriod", None)
    if rep:
        parts.append(" ".join(f"{k}={v}" for k, v in rep.items()))
    if bounds:
        parts.append(
            f"from {bounds.get('start')}" + (f" to {bounds['end']}" if bounds.get("end") else "")
        )
    if d.get("asNeededBoolean"):
        parts.append("PRN")
    if d.get("maxDosePerPeriod"):
        parts.append(f"max {_qty(d['maxDosePerPeriod'].get('numerator', {}))}/day")
    route = [c.get("display") or c.get("code") for c in (d.get("route") or {}).get("coding") or []]
    if route:
        parts.append(f"({route[0]})")
    return " ".join(parts)


def _med_text(r: Mapping[str, Any]) -> str:
    med = r.get("medicationCodeableConcept") or {}
    name = med.get("text") or next((c.get("display") for c in med.get("coding") or []), "?")
    extra = []
    if r.get("authoredOn"):
        extra.append(f"authored {r['authoredOn']}")
    if r.get("priorPrescription"):
        extra.append(f"replaces {r['priorPrescription'].get('reference')}")
    end = ((r.get("dispenseRequest") or {}).get("validityPeriod") or {}).get("end")
    if end:
        extra.append(f"refill due {end}")
    if r.get("statusReason"):
        extra.append("reason: adverse reaction")
    doses = "; ".join(_dosage_text(d) for d in r.get("dosageInstruction") or r.get("dosage") or [])
    return (
        f"{r.get('resourceType')}/{r.get('id')} [{r.get('status')}] {name}: "
        f"{doses or 'no dosage'}" + (f" ({', '.join(extra)})" if extra else "")
    )


def describe_request(request: Any) -> str:
    """A few readable lines for a request: hook, patient, orders, labs, vitals, problems,
    and which prefetch keys were missing, null or failed."""
    if not isinstance(request, dict):
        return f"  request: {request!r}"[:300]
    ctx = request.get("context") or {}
    prefetch = request.get("prefetch") or {}
    lines = [
        f"  hook {request.get('hook')}"
        + (f", encounter {ctx['encounterId']}" if ctx.get("encounterId") else "")
        + (f", selections {ctx['selections']}" if "selections" in ctx else "")
    ]
    pat = prefetch.get("patient")
    if isinstance(pat, dict) and pat.get("resourceType") == "Patient":
        lines.append(
            f"  patient born {pat.get('birthDate', '?')}, {pat.get('gender', 'no gender')}"
        )
    for r in bundle_resources(ctx.get("draftOrders")):
        lines.append(f"  draft  {_med_text(r)}")
    for key in ("medications", "medicationStatements"):
        for r in bundle_resources(prefetch.get(key)):
            lines.append(f"  {key[:10]:<6} {_med_text(r)}")
    for key in ("renal", "weight", "vitals"):
        for r in bundle_resources(prefetch.get(key)):
            code = next((c.get("code") for c in (r.get("code") or {}).get("coding") or []), "?")
            q = r.get("valueQuantity") or {}
            lines.append(
                f"  {key:<6} {r.get('id')} {code} = {_qty(q)} at {r.get('effectiveDateTime')}"
            )
    for r in bundle_resources(prefetch.get("conditions")):
        lines.append(
            f"  problem {(r.get('code') or {}).get('text')}"
            + (f" onset {r['onsetDateTime']}" if r.get("onsetDateTime") else "")
        )
    enc = prefetch.get("encounter")
    if isinstance(enc, dict) and enc.get("resourceType") == "Encounter":
        lines.append(f"  encounter class {(enc.get('class') or {}).get('code')}")
    missing = [k for k in strat.PREFETCH_KEYS if k not in prefetch]
    nulls = [k for k in strat.PREFETCH_KEYS if k in prefetch and prefetch[k] is None]
    failed = [
        k
        for k, v in prefetch.items()
        if isinstance(v, dict) and v.get("resourceType") == "OperationOutcome"
    ]
    for label, keys in (("absent", missing), ("null", nulls), ("OperationOutcome", failed)):
        if keys:
            lines.append(f"  prefetch {label}: {', '.join(keys)}")
    return "\n".join(lines)
