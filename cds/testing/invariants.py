"""Invariants every rule pack must keep, as plain functions and as a CLI report.

A rule author who edits a pack wants to know, within a minute, what the edit broke. The
vignettes (``cds rules test``) check chosen situations; the invariants here check
*properties* over thousands of generated charts (``cds rules test --properties``):

=============================  =============================================================
invariant                      what it means
=============================  =============================================================
valid cards                    no generated request makes the service fail (5xx, or a 4xx
                               for a valid request), and every card meets the card contract
                               (``cds.cards.contract_problems``) with valid FHIR in its
                               suggestions
determinism                    the same request at the same instant gives the same cards
                               (uuids aside), and evaluating never edits the request
prefetch = fetched             the same data sent as prefetch or read from the FHIR server
                               gives the same cards
unit invariance                a dose in mg or ug/mcg, a creatinine in mg/dL or umol/L
                               (x 88.4), a schedule as ``timing.code`` or ``timing.repeat``:
                               the same cards
monotonic in dose              a higher dose never removes a dose-ceiling card or lowers
                               its severity
monotonic in renal function    worse renal function never removes a renal card or lowers
                               its severity
monotonic in interactions      adding an interacting drug never removes a card
safe suggestions               accepting a suggestion the pack makes (before the service's
                               own re-check) fires none of the rules behind it and raises
                               no card of its category on that order
no alert loops                 accepting any suggestion the service offers leaves no card
                               above info in its category on that order, and raises no new
                               or worse card (every category; production re-check included)
order independence             shuffling prefetch resources or draft orders changes nothing
=============================  =============================================================

Each ``check_*`` function takes a request (CDS Hooks JSON), the packs (a ``PackRegistry``,
a ``CompiledPack`` or a list of them) and ``now``, and raises :class:`InvariantViolation`
with a readable message naming the request's chart (see :func:`describe_request`). Use
them from your own hypothesis tests with ``cds.testing.strategies``, or run them all with
:func:`run_properties` / ``cds rules test --properties``.

Requests run through the same steps as ``POST /cds-services/{id}`` (request validation,
prefetch resolution, ``cds.hooks.pipeline.evaluate``) in process; the "valid cards"
invariant goes through the real FastAPI app so that a crash shows as the 500 an EHR would
get. Cards are compared with one normaliser, :func:`card_key`: (order id, category,
indicator, sorted rule ids, suggestions without uuids, doses in mg and schedules as
administrations per day).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import itertools
import json
import logging
import random
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlsplit

import httpx
from hypothesis import example, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisException
from hypothesis.reporting import with_reporter
from hypothesis.strategies import SearchStrategy

from cds.cards import BuiltCard, card_extension, contract_problems
from cds.clinical.dosing import admins_per_day
from cds.clinical.extract import HookInput
from cds.clinical.terminology import get_terminology
from cds.clinical.units import convert_mass, mass_unit
from cds.engine.findings import SEVERITY_RANK
from cds.engine.pack import CompiledPack
from cds.engine.registry import PackRegistry
from cds.errors import RequestError
from cds.hooks.pipeline import Evaluation, apply_action, evaluate
from cds.hooks.prefetch import render_template, resolve_prefetch
from cds.hooks.recheck import accepted
from cds.hooks.request import parse_hook_call, require_patient
from cds.hooks.services import SERVICE_IDS, ServiceDef, catalog
from cds.settings import Settings
from cds.store.db import make_memory_sessionmaker
from cds.testing import strategies as strat

# Imported here, not on first use, for a second reason beyond speed: hypothesis draws some
# values from constants in the modules loaded so far, so a module first imported in the
# middle of a run would change the (derandomised) examples of every invariant after it.
from cds.web.app import create_app

JSON = dict[str, Any]
Packs = PackRegistry | CompiledPack | Sequence[CompiledPack]

__all__ = [
    "INVARIANTS",
    "UNIT_REWRITES",
    "Invariant",
    "InvariantViolation",
    "Outcome",
    "PrefetchServer",
    "PropertyResult",
    "add_interacting_drug",
    "call_app",
    "card_key",
    "card_keys",
    "check_determinism",
    "check_dose_monotonicity",
    "check_interaction_monotonicity",
    "check_no_alert_loops",
    "check_order_independence",
    "check_prefetch_equivalence",
    "check_renal_monotonicity",
    "check_suggestions_safe",
    "check_unit_invariance",
    "check_valid_cards",
    "creatinine_in_other_unit",
    "describe_request",
    "doses_in_micrograms",
    "hook_input",
    "lower_renal_function",
    "pack_list",
    "raise_doses",
    "registry_for",
    "run_properties",
    "run_properties_cli",
    "run_property",
    "run_request",
    "save_failure",
    "service_for",
    "shuffled",
    "timing_in_other_form",
]

FHIR_SERVER = "https://ehr.example.org/fhir"


def service_for(request: Any, packs: Packs) -> ServiceDef:
    """The service (of ``packs``) a request's hook calls (order-sign when unclear)."""
    hook = str(request.get("hook")) if isinstance(request, dict) else ""
    svc = catalog(pack_list(packs)).get(SERVICE_IDS.get(hook, SERVICE_IDS["order-sign"]))
    assert svc is not None
    return svc


UCUM = "http://unitsofmeasure.org"
BACLOFEN_CODES = frozenset(
    {"1292", "430902", "197391", "2679605", "197392", "250976", "2667941", "2593376",
     "1047437", "M03BX01", "387342009"}
)  # fmt: skip


class InvariantViolation(AssertionError):
    """A pack (or the code under it) broke an invariant for one request.

    ``str()`` is the readable report: the invariant, what differed, and the chart.
    ``request`` is the request itself, to save and replay with ``cds evaluate``.
    """

    def __init__(self, invariant: str, message: str, request: JSON | None = None) -> None:
        self.invariant = invariant
        self.message = message
        self.request = request
        chart = f"\n{describe_request(request)}" if request is not None else ""
        super().__init__(f"[{invariant}] {message}{chart}")


# ---- running a request ---------------------------------------------------------------------


def pack_list(packs: Packs) -> list[CompiledPack]:
    if isinstance(packs, PackRegistry):
        return packs.packs()
    if isinstance(packs, CompiledPack):
        return [packs]
    return list(packs)


@cache
def registry_for(rules_dir: Path, pack_id: str, profile: str) -> PackRegistry:
    """One compiled registry per (rules dir, pack, profile), reused across examples:
    compiling takes ~0.5 s, evaluating a request a few ms."""
    reg = PackRegistry(rules_dir=Path(rules_dir), pack_ids=[pack_id], profile=profile)
    reg.load()
    return reg


@dataclass
class Outcome:
    """What one request gave: the HTTP status it would get, and the cards when 200."""

    status: int
    cards: list[BuiltCard] = field(default_factory=list)
    evaluation: Evaluation | None = None
    hook_input: HookInput | None = None
    error: str | None = None


def hook_input(
    request: JSON,
    now: datetime,
    packs: Packs,
    *,
    client: httpx.AsyncClient | None = None,
    allowlist: Sequence[str] = (),
) -> HookInput:
    """The request as the clinical layer sees it (validated, prefetch resolved by the
    service of ``packs``).

    Raises ``RequestError`` (with its HTTP status) as ``POST /cds-services/{id}`` would.
    """
    svc = service_for(request, packs)
    call = parse_hook_call(request, expected_hook=svc.hook)
    resolved = asyncio.run(
        resolve_prefetch(
            keys=svc.prefetch,
            prefetch=call.prefetch,
            context=call.context,
            fhir_server=call.fhir_server,
            access_token=call.access_token,
            allowlist=list(allowlist),
            now=now,
            client=client,
        )
    )
    require_patient(resolved.resources, call.patient_id)
    return call.pipeline_input(resolved.resources)


def run_request(
    request: JSON,
    packs: Packs,
    now: datetime,
    *,
    client: httpx.AsyncClient | None = None,
    allowlist: Sequence[str] = (),
    recheck: bool = True,
) -> Outcome:
    """Evaluate ``request`` at ``now`` through the production steps, in process."""
    try:
        inp = hook_input(request, now, packs, client=client, allowlist=allowlist)
    except RequestError as exc:
        return Outcome(status=exc.status, error=str(exc))
    ev = evaluate(inp, pack_list(packs), now=now, recheck=recheck)
    return Outcome(status=200, cards=ev.cards, evaluation=ev, hook_input=inp)


class _StaticRegistry:
    """What the app needs of a registry (``packs()``), for packs compiled elsewhere."""

    def __init__(self, packs: list[CompiledPack]) -> None:
        self._packs = packs
        self.pack_ids = [p.id for p in packs]
        self.last_errors: dict[str, str] = {}

    def packs(self) -> list[CompiledPack]:
        return list(self._packs)


_APPS: dict[tuple[int, ...], tuple[list[CompiledPack], Any]] = {}


def _app_for(packs: list[CompiledPack]) -> Any:
    """One app per pack set (building it costs more than a call): auth off, memory store.

    Keyed by the pack objects themselves (kept alive in the cache, so their ids stay
    theirs): two packs may compile to the same rules yet differ in override reasons,
    evidence or clinical parameters."""
    key = tuple(id(p) for p in packs)
    if key not in _APPS:
        settings_ = Settings().model_copy(update={"auth": "off", "database_url": "sqlite://"})
        with _quiet():
            app = create_app(
                settings_,
                registry=cast(Any, _StaticRegistry(packs)),
                maker=make_memory_sessionmaker(),
            )
        _APPS[key] = (list(packs), app)
    return _APPS[key][1]


def call_app(request: JSON, packs: Packs, now: datetime) -> tuple[int, Any]:
    """(status, JSON body) of ``POST /cds-services/{id}`` for ``request`` at ``now``:
    the same app as ``cds evaluate`` and the server (``create_app``), with auth off."""
    app = _app_for(pack_list(packs))
    app.state.clock = lambda: now
    svc = service_for(request, packs)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cds.local") as c:
            return await c.post(f"/cds-services/{svc.id}", json=request)

    resp = asyncio.run(call())
    try:
        return resp.status_code, resp.json()
    except ValueError:
        return resp.status_code, resp.text


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the service's own warnings (dev-mode banner, dropped suggestions) while
    thousands of examples run; the invariants report what matters."""
    logger = logging.getLogger("cds")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# ---- comparing cards -----------------------------------------------------------------------

CardKey = tuple[str, str, str, tuple[str, ...], str]


def _canonical(value: Any, key: str = "") -> Any:
    """Drop uuids; doses to mg; timings to administrations per day (plus bounds)."""
    if isinstance(value, list):
        return [_canonical(v, key) for v in value]
    if not isinstance(value, dict):
        return value
    if key == "timing":
        per_day, _ = admins_per_day(value, get_terminology())
        if per_day is not None:
            bounds = (value.get("repeat") or {}).get("boundsPeriod")
            return {"perDay": round(per_day, 9), "bounds": bounds}
    unit = value.get("code") or value.get("unit")
    if "value" in value and isinstance(unit, str) and isinstance(value["value"], int | float):
        mass = mass_unit(unit)
        if mass is not None:
            mg = convert_mass(float(value["value"]), mass, "mg")
            return {"value": round(mg, 6), "unit": "mg"}
    return {k: _canonical(v, k) for k, v in value.items() if k != "uuid"}


def card_key(card: Mapping[str, Any] | BuiltCard) -> CardKey:
    """(order id, category, indicator, sorted rule ids, suggestions) of one card.

    Suggestions are compared without their uuids, with doses in mg and schedules as
    administrations per day: what the clinician would accept, not how it is spelled.
    """
    c = card.card if isinstance(card, BuiltCard) else card
    ext = card_extension(c)
    suggestions = [
        {
            "label": s.get("label"),
            "isRecommended": s.get("isRecommended"),
            "actions": _canonical(s.get("actions")),
        }
        for s in c.get("suggestions") or []
    ]
    return (
        str(ext.get("orderId", "")),
        str(((c.get("source") or {}).get("topic") or {}).get("code", "")),
        str(c.get("indicator", "")),
        tuple(sorted(ext.get("ruleIds") or [])),
        json.dumps(suggestions, sort_keys=True),
    )


def card_keys(cards: Iterable[Mapping[str, Any] | BuiltCard]) -> list[CardKey]:
    """The normalised card set (sorted), for comparing two evaluations."""
    return sorted(card_key(c) for c in cards)


def _show(key: CardKey) -> str:
    order, category, indicator, rules, sugg = key
    s = json.loads(sugg)
    fix = f"; fix: {', '.join(str(x['label']) for x in s)}" if s else ""
    return f"{order or '(request)'} {category} {indicator} [{', '.join(rules)}]{fix}"


def _json_diff(a: Any, b: Any, path: str = "") -> list[str]:
    """The paths where two JSON values differ, with both values (first few only)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _json_diff(a.get(k, "(absent)"), b.get(k, "(absent)"), f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _json_diff(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path or '.'}: {json.dumps(a)} vs {json.dumps(b)}"]


def _diff(a: Outcome, b: Outcome, what_a: str, what_b: str) -> str | None:
    if a.status != b.status:
        return f"HTTP {a.status} ({what_a}) vs {b.status} ({what_b}): {a.error or b.error}"
    ka, kb = card_keys(a.cards), card_keys(b.cards)
    if ka == kb:
        return None
    only_a = [k for k in ka if k not in kb]
    only_b = [k for k in kb if k not in ka]
    lines = [f"cards differ ({what_a} vs {what_b}):"]
    lines += [f"  only {what_a}: {_show(k)}" for k in only_a]
    lines += [f"  only {what_b}: {_show(k)}" for k in only_b]
    for x in only_a:  # same card, different fix: say where the suggestions differ
        for y in only_b:
            if x[:4] == y[:4]:
                paths = _json_diff(json.loads(x[4]), json.loads(y[4]), "suggestions")
                lines += [f"  suggestion differs at {p}" for p in paths[:5]]
    return "\n".join(lines)


# ---- request surgery -----------------------------------------------------------------------


def _bundle_resources(value: Any) -> list[JSON]:
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        return [
            e["resource"]
            for e in value.get("entry") or []
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
        ]
    if isinstance(value, dict) and isinstance(value.get("resourceType"), str):
        return [value]
    return []


def _all_resources(request: JSON) -> list[JSON]:
    out = [r for v in (request.get("prefetch") or {}).values() for r in _bundle_resources(v)]
    out += _bundle_resources((request.get("context") or {}).get("draftOrders"))
    return out


def _is_baclofen(res: JSON) -> bool:
    med = res.get("medicationCodeableConcept") or {}
    codes = {c.get("code") for c in med.get("coding") or [] if isinstance(c, dict)}
    return bool(codes & BACLOFEN_CODES) or "baclofen" in str(med.get("text", "")).lower()


def _medications(request: JSON, *, baclofen_only: bool = True) -> list[JSON]:
    return [
        r
        for r in _all_resources(request)
        if r.get("resourceType") in ("MedicationRequest", "MedicationStatement")
        and (not baclofen_only or _is_baclofen(r))
    ]


def _dose_quantities(med: JSON) -> Iterator[JSON]:
    """Every dose-bearing Quantity of an order: doses, ranges, rates and PRN maxima."""
    for d in med.get("dosageInstruction") or med.get("dosage") or []:
        for dr in d.get("doseAndRate") or []:
            for key in ("doseQuantity", "rateQuantity"):
                if isinstance(dr.get(key), dict):
                    yield dr[key]
            rng = dr.get("doseRange") or {}
            for key in ("low", "high"):
                if isinstance(rng.get(key), dict):
                    yield rng[key]
        num = (d.get("maxDosePerPeriod") or {}).get("numerator")
        if isinstance(num, dict):
            yield num


def _observations(request: JSON, loincs: Iterable[str]) -> list[JSON]:
    wanted = set(loincs)
    return [
        r
        for r in _all_resources(request)
        if r.get("resourceType") == "Observation"
        and any(c.get("code") in wanted for c in (r.get("code") or {}).get("coding") or [])
    ]


def doses_in_micrograms(request: JSON) -> JSON:
    """The request with every baclofen dose written in mg (or mg/d) rewritten in ug (x 1000),
    and every dose in ug or mcg rewritten in mg: the same doses, other units."""
    out = copy.deepcopy(request)
    for med in _medications(out):
        for q in _dose_quantities(med):
            unit = str(q.get("code") or q.get("unit") or "")
            num, _, per = unit.partition("/")
            mass = mass_unit(num)
            if mass == "mg":
                q.update(value=q["value"] * 1000, unit=f"ug/{per}" if per else "ug")
            elif mass == "ug":
                q.update(value=q["value"] / 1000, unit=f"mg/{per}" if per else "mg")
            else:
                continue
            q["system"], q["code"] = UCUM, q["unit"]
    return out


_CREATININE_SWAP = {
    "2160-0": "14682-9",
    "38483-4": "59826-8",
    "14682-9": "2160-0",
    "59826-8": "38483-4",
}


def creatinine_in_other_unit(request: JSON) -> JSON:
    """The request with each creatinine in the other unit: mg/dL x 88.4 = umol/L."""
    out = copy.deepcopy(request)
    for obs in _observations(out, _CREATININE_SWAP):
        q = obs.get("valueQuantity") or {}
        coding = obs["code"]["coding"]
        mg = (q.get("code") or q.get("unit")) == "mg/dL"
        q["value"] = q["value"] * strat.UMOL_PER_MG_DL if mg else q["value"] / strat.UMOL_PER_MG_DL
        q["unit"] = q["code"] = "umol/L" if mg else "mg/dL"
        for c in coding:
            c["code"] = _CREATININE_SWAP.get(c.get("code"), c.get("code"))
            c.pop("display", None)
    return out


_REPEAT_OF_CODE = {code: v[2] for code, v in strat.SCHEDULES.items()}
_CODE_OF_REPEAT: dict[tuple[int, float, str], tuple[str, str]] = {}
for _code, _v in strat.SCHEDULES.items():
    _CODE_OF_REPEAT.setdefault(_v[2], (_code, _v[1]))


def timing_in_other_form(request: JSON) -> JSON:
    """The request with each schedule written the other way: ``timing.code`` TID as
    ``timing.repeat`` 3 per 1 d, and a plain repeat as its code."""
    out = copy.deepcopy(request)
    for med in _medications(out):
        for d in med.get("dosageInstruction") or med.get("dosage") or []:
            timing = d.get("timing")
            if not isinstance(timing, dict):
                continue
            repeat = timing.get("repeat") or {}
            codes = [c.get("code") for c in (timing.get("code") or {}).get("coding") or []]
            if codes and codes[0] in _REPEAT_OF_CODE:
                freq, period, unit = _REPEAT_OF_CODE[codes[0]]
                del timing["code"]
                repeat.update(frequency=freq, period=period, periodUnit=unit)
                timing["repeat"] = repeat
                continue
            plain = (repeat.get("frequency"), repeat.get("period"), repeat.get("periodUnit"))
            if set(repeat) - {"frequency", "period", "periodUnit", "boundsPeriod"}:
                continue
            if plain in _CODE_OF_REPEAT:
                code, system = _CODE_OF_REPEAT[plain]
                for k in ("frequency", "period", "periodUnit"):
                    repeat.pop(k)
                if not repeat:
                    timing.pop("repeat")
                timing["code"] = {"coding": [{"system": system, "code": code}]}
    return out


UNIT_REWRITES: tuple[tuple[str, Callable[[JSON], JSON]], ...] = (
    ("doses mg <-> ug", doses_in_micrograms),
    ("creatinine mg/dL <-> umol/L", creatinine_in_other_unit),
    ("timing.code <-> timing.repeat", timing_in_other_form),
)


def raise_doses(request: JSON, factor: float) -> JSON:
    """Every baclofen dose (drafts, active orders, home medication) times ``factor``."""
    out = copy.deepcopy(request)
    for med in _medications(out):
        for q in _dose_quantities(med):
            if isinstance(q.get("value"), int | float):
                q["value"] = q["value"] * factor
    return out


_CREATININE = ("2160-0", "38483-4", "14682-9", "59826-8")
_CLEARANCE = ("2164-2", *strat.EGFR_LOINCS)
MAX_CREATININE_MG_DL = 20.0  # stay under the pack's plausibility bound (25 mg/dL)


def lower_renal_function(request: JSON, factor: float) -> JSON | None:
    """Creatinines times ``factor``, eGFRs and clearances divided by it; None when that
    would push a creatinine past :data:`MAX_CREATININE_MG_DL` (an implausible value is a
    data-quality card, not a worse kidney) or when there is no renal result to change."""
    out = copy.deepcopy(request)
    crs = _observations(out, _CREATININE)
    clears = _observations(out, _CLEARANCE)
    if not crs and not clears:
        return None
    for obs in crs:
        q = obs.get("valueQuantity") or {}
        mg = q["value"] if q.get("code") == "mg/dL" else q["value"] / strat.UMOL_PER_MG_DL
        if mg * factor > MAX_CREATININE_MG_DL:
            return None
        q["value"] = q["value"] * factor
    for obs in clears:
        obs["valueQuantity"]["value"] = obs["valueQuantity"]["value"] / factor
    return out


def add_interacting_drug(request: JSON, drug: str) -> JSON:
    """The request plus an order for ``drug`` (a draft on order hooks, active otherwise)."""
    from cds.testing import builders as b

    out = copy.deepcopy(request)
    ctx = out.setdefault("context", {})
    order = b.medication_request(
        rid="rx-added-1",
        drug=drug,
        status="draft" if "draftOrders" in ctx else "active",
        dosages=[b.dosage(dose=5, frequency=3)],
        pid=str(ctx.get("patientId", "pat-1")),
    )
    if "draftOrders" in ctx:
        ctx["draftOrders"].setdefault("entry", []).append({"resource": order})
    else:
        meds = (out.get("prefetch") or {}).get("medications")
        if not isinstance(meds, dict) or meds.get("resourceType") != "Bundle":
            return out  # no medication list to add it to: nothing to compare
        meds.setdefault("entry", []).append({"resource": order})
    return out


def shuffled(request: JSON, rng: random.Random) -> JSON:
    """The request with every prefetch Bundle's entries and the draft orders shuffled."""
    out = copy.deepcopy(request)
    for value in (out.get("prefetch") or {}).values():
        if isinstance(value, dict) and isinstance(value.get("entry"), list):
            rng.shuffle(value["entry"])
    drafts = (out.get("context") or {}).get("draftOrders")
    if isinstance(drafts, dict) and isinstance(drafts.get("entry"), list):
        rng.shuffle(drafts["entry"])
    return out


# ---- a FHIR server that serves a request's own prefetch ------------------------------------


def _key_query(url: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    parts = urlsplit(url)
    return parts.path.rstrip("/"), tuple(sorted(parse_qsl(parts.query)))


class PrefetchServer:
    """An ``httpx.MockTransport`` FHIR server answering each prefetch query of the
    request's service with exactly what the request prefetched for that key (a read:
    the resource or 404; a search: a searchset Bundle, empty when the key was null, an
    OperationOutcome or absent). It records which keys were fetched."""

    def __init__(self, request: JSON, now: datetime, packs: Packs, base: str = FHIR_SERVER) -> None:
        svc = service_for(request, packs)
        prefetch = request.get("prefetch") or {}
        context = request.get("context") or {}
        self.base = base.rstrip("/")
        self.routes: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, httpx.Response]] = {}
        self.fetched: list[str] = []
        for key, spec in svc.prefetch.items():
            query = render_template(spec.template, context, now=now)
            if query is None:
                continue
            value = prefetch.get(key)
            is_read = "?" not in query
            usable = isinstance(value, dict) and value.get("resourceType") not in (
                None,
                "OperationOutcome",
            )
            if is_read:
                resp = (
                    httpx.Response(200, json=value, headers=_FHIR_JSON)
                    if usable
                    else httpx.Response(
                        404,
                        json={"resourceType": "OperationOutcome", "issue": []},
                        headers=_FHIR_JSON,
                    )
                )
            else:
                resources = _bundle_resources(value) if usable else []
                resp = httpx.Response(200, json=strat.bundle(resources), headers=_FHIR_JSON)
            self.routes[_key_query(f"{self.base}/{query}")] = (key, resp)

    def handle(self, request: httpx.Request) -> httpx.Response:
        hit = self.routes.get(_key_query(str(request.url)))
        if hit is None:
            return httpx.Response(
                404, json={"resourceType": "OperationOutcome", "issue": []}, headers=_FHIR_JSON
            )
        key, resp = hit
        self.fetched.append(key)
        return httpx.Response(resp.status_code, content=resp.content, headers=resp.headers)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))


_FHIR_JSON = {"content-type": "application/fhir+json"}


def _with_server(request: JSON, drop: Iterable[str] = ()) -> JSON:
    out = copy.deepcopy(request)
    out["fhirServer"] = FHIR_SERVER
    out["fhirAuthorization"] = {
        "access_token": "property-test-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "cds-service",
    }
    for key in drop:
        (out.get("prefetch") or {}).pop(key, None)
    return out


# ---- the invariants ------------------------------------------------------------------------


def _required_key_damaged(request: JSON) -> bool:
    """A required key is absent or failed (or, for the Patient, null): a 412 is right."""
    prefetch = request.get("prefetch") or {}
    for key in strat.REQUIRED_PREFETCH_KEYS:
        value = prefetch.get(key, "absent")
        if value == "absent" or (
            isinstance(value, dict) and value.get("resourceType") == "OperationOutcome"
        ):
            return True
    return prefetch.get("patient") is None


def _fhir_problems(resource: Any) -> list[str]:
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return ["action resource is not a FHIR resource"]
    try:
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    except (ValidationError, KeyError, ValueError, TypeError) as exc:
        return [f"suggested {resource['resourceType']} fails FHIR R4B: {str(exc)[:300]}"]
    return []


def check_valid_cards(request: JSON, packs: Packs, now: datetime) -> None:
    """The service answers (200; a 412 only when a required prefetch key is missing) and
    every card meets the card contract, with R4B-valid resources in its suggestions and
    never two cards for the same rule and order."""
    name = "valid cards"
    with _quiet():
        status, body = call_app(request, packs, now)
    if status != 200:
        if status == 412 and _required_key_damaged(request):
            return
        diag = body if isinstance(body, str) else json.dumps(body)[:400]
        raise InvariantViolation(name, f"HTTP {status} for a valid request: {diag}", request)
    if not isinstance(body, dict) or not isinstance(body.get("cards"), list):
        raise InvariantViolation(name, f"response is not {{'cards': [...]}}: {body!r}", request)
    problems: list[str] = []
    seen_uuids: set[str] = set()
    seen_rules: set[tuple[str, str]] = set()
    for card in body["cards"]:
        what = f"card {card.get('summary', '?')!r}"
        problems += [f"{what}: {p}" for p in contract_problems(card)]
        for s in card.get("suggestions") or []:
            for a in s.get("actions") or []:
                if "resource" in a:
                    problems += [f"{what}: {p}" for p in _fhir_problems(a["resource"])]
        ids = [card.get("uuid")] + [s.get("uuid") for s in card.get("suggestions") or []]
        for u in ids:
            if u in seen_uuids:
                problems.append(f"{what}: uuid {u} used twice")
            seen_uuids.add(str(u))
        ext = card_extension(card)
        for rule in ext.get("ruleIds") or []:
            pair = (str(ext.get("orderId", "")), rule)
            if pair in seen_rules:
                problems.append(f"{what}: rule {rule} on order {pair[0]} in two cards")
            seen_rules.add(pair)
    if problems:
        raise InvariantViolation(name, "\n".join(problems), request)


def check_determinism(request: JSON, packs: Packs, now: datetime) -> None:
    """Twice the same request at the same instant: the same cards; the request unedited."""
    name = "determinism"
    before = copy.deepcopy(request)
    with _quiet():
        first = run_request(request, packs, now)
        if request != before:
            raise InvariantViolation(name, "evaluating the request edited it", before)
        second = run_request(request, packs, now)
    diff = _diff(first, second, "first run", "second run")
    if diff:
        raise InvariantViolation(name, diff, request)


def check_prefetch_equivalence(
    request: JSON, packs: Packs, now: datetime, *, fetch_keys: Iterable[str] | None = None
) -> None:
    """The same data as prefetch or fetched from the FHIR server: the same cards.

    The server is an ``httpx.MockTransport`` serving, for each of the service's prefetch
    queries, exactly what the request prefetched (see :class:`PrefetchServer`); the real
    fallback against a real FHIR server is covered by ``tests/hooks``. ``fetch_keys``: the
    keys to remove from the prefetch and fetch instead (default: all of them).
    """
    name = "prefetch = fetched"
    server = PrefetchServer(request, now, packs)
    keys = list(fetch_keys) if fetch_keys is not None else list(strat.PREFETCH_KEYS)
    with _quiet():
        given = run_request(
            _with_server(request), packs, now, client=server.client(), allowlist=[FHIR_SERVER]
        )
        fetched = run_request(
            _with_server(request, drop=keys),
            packs,
            now,
            client=server.client(),
            allowlist=[FHIR_SERVER],
        )
    diff = _diff(given, fetched, "prefetched", f"fetched {', '.join(sorted(keys))}")
    if diff:
        raise InvariantViolation(name, diff, request)


def check_unit_invariance(request: JSON, packs: Packs, now: datetime) -> None:
    """Doses in mg vs ug/mcg, creatinine in mg/dL vs umol/L, schedules as code vs repeat:
    each rewrite of the request gives the same cards."""
    name = "unit invariance"
    with _quiet():
        base = run_request(request, packs, now)
        for what, rewrite in UNIT_REWRITES:
            other = rewrite(request)
            if other == request:
                continue
            diff = _diff(base, run_request(other, packs, now), "as written", what)
            if diff:
                raise InvariantViolation(name, diff, request)


def _by_order(out: Outcome, category: str) -> dict[str, int]:
    ranks: dict[str, int] = {}
    for c in out.cards:
        if c.category == category:
            ranks[c.order_id] = max(ranks.get(c.order_id, 0), SEVERITY_RANK[c.card["indicator"]])
    return ranks


def _monotone(name: str, request: JSON, steps: list[tuple[str, Outcome]], category: str) -> None:
    """Along a ladder of ever stronger changes, no card of ``category`` is lost or lowered."""
    names = {v: k for k, v in SEVERITY_RANK.items()}
    for (what_b, before), (what_a, after) in itertools.pairwise(steps):
        if before.status != 200 or after.status != 200:
            continue
        b, a = _by_order(before, category), _by_order(after, category)
        for order, rank in b.items():
            if a.get(order, 0) < rank:
                lost = names.get(a.get(order, 0), "no card")
                raise InvariantViolation(
                    name,
                    f"{what_b} -> {what_a}: the {category} card on {order} went from "
                    f"{names[rank]} to {lost}\n" + (_diff(before, after, what_b, what_a) or ""),
                    request,
                )


DOSE_FACTORS = (1.25, 1.5, 2.0, 3.0, 4.0)
RENAL_FACTORS = (1.25, 1.5, 2.0, 3.0, 5.0)


def check_dose_monotonicity(
    request: JSON, packs: Packs, now: datetime, *, factors: Sequence[float] = DOSE_FACTORS
) -> None:
    """Every baclofen dose times each of ``factors`` (a ladder of raises, each > 1): no
    step loses a dose-ceiling card or lowers its severity."""
    with _quiet():
        steps = [("as written", run_request(request, packs, now))]
        for f in sorted(factors):
            steps.append((f"doses x {f:g}", run_request(raise_doses(request, f), packs, now)))
    _monotone("monotonic in dose", request, steps, "dose-ceiling")


def check_renal_monotonicity(
    request: JSON, packs: Packs, now: datetime, *, factors: Sequence[float] = RENAL_FACTORS
) -> None:
    """Creatinine times each of ``factors`` (> 1), eGFR/CrCl divided by it: no step loses
    a renal-adjustment card or lowers its severity. Requests with no renal result are
    skipped, and so are steps that would make a creatinine implausible."""
    with _quiet():
        steps = [("as written", run_request(request, packs, now))]
        for f in sorted(factors):
            worse = lower_renal_function(request, f)
            if worse is None:
                break
            steps.append((f"renal function / {f:g}", run_request(worse, packs, now)))
    _monotone("monotonic in renal function", request, steps, "renal-adjustment")


def _identity(c: BuiltCard) -> tuple[str, str, str]:
    return c.order_id, c.category, c.group


def check_interaction_monotonicity(
    request: JSON, packs: Packs, now: datetime, *, drug: str = "oxycodone"
) -> None:
    """Adding an order for an interacting ``drug`` (a key of ``builders.OTHER_DRUGS``)
    removes no card (by order, category and interacting class)."""
    name = "monotonic in interactions"
    with _quiet():
        before = run_request(request, packs, now)
        after = run_request(add_interacting_drug(request, drug), packs, now)
    if before.status != 200 or after.status != 200:
        return
    kept = {_identity(c) for c in after.cards}
    lost = [c for c in before.cards if _identity(c) not in kept]
    if lost:
        raise InvariantViolation(
            name,
            f"adding {drug} removed: " + "; ".join(_show(card_key(c)) for c in lost),
            request,
        )


def check_suggestions_safe(request: JSON, packs: Packs, now: datetime) -> None:
    """Accepting any suggestion (all its actions, as ``apply_action`` does) and evaluating
    again fires none of the rules behind it, and gives no card of the same category at a
    higher severity on that order.

    Checked on the suggestions the *pack* makes, before the pipeline's own re-check drops
    unsafe ones (``evaluate(recheck=False)``): in production an unsafe suggestion is not
    an alert loop but a card that silently lost its fix, which the author must still know.
    """
    name = "safe suggestions"
    plist = pack_list(packs)
    with _quiet():
        out = run_request(request, plist, now, recheck=False)
        if out.status != 200 or out.hook_input is None:
            return
        for card in out.cards:
            for s in card.suggestions:
                trial = out.hook_input
                for action in s.actions:
                    trial = apply_action(trial, action)
                if trial.hook == "patient-view":
                    trial = replace(trial, hook="order-sign")
                after = evaluate(trial, plist, now=now, recheck=False)
                rank = SEVERITY_RANK[card.card["indicator"]]
                mine = [f for f in after.findings if f.order_id == card.order_id]
                refired = sorted({f.rule_id for f in mine if f.rule_id in s.rule_ids})
                worse = sorted(
                    {
                        f"{f.rule_id} ({f.severity})"
                        for f in mine
                        if f.category == card.category and f.rank > rank
                    }
                )
                if refired or worse:
                    raise InvariantViolation(
                        name,
                        f"accepting '{s.label}' on the {card.category} {card.card['indicator']}"
                        f" card of {card.order_id}"
                        + (f" fires its own rules again: {', '.join(refired)}" if refired else "")
                        + (f"; raises {card.category}: {', '.join(worse)}" if worse else ""),
                        request,
                    )


# Categories whose offered suggestions ``check_no_alert_loops`` accepted (a test reads it to
# prove the generated requests exercised every category, so the property cannot pass empty).
NO_LOOP_EXERCISED: collections.Counter[str] = collections.Counter()


def check_no_alert_loops(request: JSON, packs: Packs, now: datetime) -> None:
    """Accepting any suggestion the service offers (all its actions) and evaluating again
    leaves, on that order, no card above info in the card's category, and no card above info
    that was not there before (or was less severe): "no alert loops", every category.

    Checked on what production offers (the re-check and its repairs included), at the level
    of the cards an EHR would show; cards the fix has nothing to do with (an interaction
    beside a renal fix) may stay. A removed duplicate order is judged on every order.
    """
    name = "no alert loops"
    plist = pack_list(packs)
    with _quiet():
        out = run_request(request, plist, now)
        if out.status != 200 or out.hook_input is None:
            return
        for card in out.cards:
            for s in card.suggestions:
                removes = any(a.get("type") == "delete" for a in s.actions)
                scope = None if removes else card.order_id
                was: dict[tuple[str, str], int] = {}
                for c in out.cards:
                    if scope is None or c.order_id == scope:
                        key = (c.category, c.group)
                        was[key] = max(was.get(key, 0), SEVERITY_RANK[c.card["indicator"]])
                after = evaluate(accepted(out.hook_input, s), plist, now=now)
                NO_LOOP_EXERCISED[card.category] += 1
                bad = []
                for c in after.cards:
                    rank = SEVERITY_RANK[c.card["indicator"]]
                    if rank <= SEVERITY_RANK["info"] or (scope is not None and c.order_id != scope):
                        continue
                    if c.category == card.category and c.order_id == card.order_id:
                        bad.append(
                            f"{c.category} {c.card['indicator']} remains ({c.card['summary']})"
                        )
                    elif rank > was.get((c.category, c.group), 0):
                        bad.append(
                            f"{c.category} {c.card['indicator']} appears ({c.card['summary']})"
                        )
                if bad:
                    raise InvariantViolation(
                        name,
                        f"accepting '{s.label}' on the {card.category} {card.card['indicator']} "
                        f"card of {card.order_id}: " + "; ".join(bad),
                        request,
                    )


def check_order_independence(request: JSON, packs: Packs, now: datetime, *, seed: int = 0) -> None:
    """Prefetch Bundle entries and draft orders shuffled (``random.Random(seed)``): the
    same cards."""
    name = "order independence"
    with _quiet():
        base = run_request(request, packs, now)
        other = run_request(shuffled(request, random.Random(seed)), packs, now)
    diff = _diff(base, other, "as sent", f"shuffled (seed {seed})")
    if diff:
        raise InvariantViolation(name, diff, request)


# ---- describing a request ------------------------------------------------------------------


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
    for r in _bundle_resources(ctx.get("draftOrders")):
        lines.append(f"  draft  {_med_text(r)}")
    for key in ("medications", "medicationStatements"):
        for r in _bundle_resources(prefetch.get(key)):
            lines.append(f"  {key[:10]:<6} {_med_text(r)}")
    for key in ("renal", "weight", "vitals"):
        for r in _bundle_resources(prefetch.get(key)):
            code = next((c.get("code") for c in (r.get("code") or {}).get("coding") or []), "?")
            q = r.get("valueQuantity") or {}
            lines.append(
                f"  {key:<6} {r.get('id')} {code} = {_qty(q)} at {r.get('effectiveDateTime')}"
            )
    for r in _bundle_resources(prefetch.get("conditions")):
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


# ---- running the invariants with hypothesis ------------------------------------------------


@dataclass(frozen=True)
class Invariant:
    """An invariant as the property runner sees it: the check, the requests to try it on,
    and strategies for the check's extra keyword arguments."""

    name: str
    check: Callable[..., None]
    requests: Callable[[datetime], SearchStrategy[JSON]]
    extras: Mapping[str, Callable[[], SearchStrategy[Any]]] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        doc = (self.check.__doc__ or "").strip()
        return doc.split("\n\n")[0].replace("\n", " ")


def _requests(now: datetime) -> SearchStrategy[JSON]:
    return strat.hook_requests(now=now)


def _order_requests(now: datetime) -> SearchStrategy[JSON]:
    return strat.hook_requests(now=now, hooks=("order-sign", "order-select"))


INVARIANTS: tuple[Invariant, ...] = (
    Invariant(
        "valid cards",
        check_valid_cards,
        lambda now: strat.hook_requests(now=now, damage_required=True),
    ),
    Invariant("determinism", check_determinism, _requests),
    Invariant(
        "prefetch = fetched",
        check_prefetch_equivalence,
        _requests,
        {
            "fetch_keys": lambda: (
                st.none() | st.frozensets(st.sampled_from(strat.PREFETCH_KEYS), min_size=1)
            )
        },
    ),
    Invariant("unit invariance", check_unit_invariance, _requests),
    Invariant("monotonic in dose", check_dose_monotonicity, _requests),
    Invariant("monotonic in renal function", check_renal_monotonicity, _requests),
    Invariant(
        "monotonic in interactions",
        check_interaction_monotonicity,
        _requests,
        {
            "drug": lambda: st.sampled_from(
                [d for ds in strat.INTERACTING_DRUGS.values() for d in ds]
            )
        },
    ),
    Invariant("safe suggestions", check_suggestions_safe, _order_requests),
    Invariant(
        "no alert loops", check_no_alert_loops, lambda now: strat.suggestion_requests(now=now)
    ),
    Invariant(
        "order independence",
        check_order_independence,
        _requests,
        {"seed": lambda: st.integers(0, 2**16)},
    ),
)


@dataclass
class PropertyResult:
    invariant: str
    profile: str
    examples: int
    seconds: float
    ok: bool
    message: str = ""
    request: JSON | None = None
    report: list[str] = field(default_factory=list)  # hypothesis' own output


SHRINK_SECONDS = 20.0


def run_property(
    invariant: Invariant,
    packs: Packs,
    *,
    now: datetime = strat.DEFAULT_NOW,
    settings_: settings | None = None,
    requests: SearchStrategy[JSON] | None = None,
    profile: str = "",
    shrink_seconds: float = SHRINK_SECONDS,
    examples: Sequence[tuple[JSON, Mapping[str, Any]]] = (),
) -> PropertyResult:
    """Run one invariant under hypothesis; the result says how many examples ran, how
    long it took, and (on failure) the shrunk request and the violation.

    Shrinking a whole chart can take minutes; after ``shrink_seconds`` from the first
    failure, new candidates are no longer evaluated (they count as passing) while the
    failures already seen still fail, so hypothesis stops early and reports the smallest
    failing request found so far. ``examples``: (request, extra keyword arguments) pairs
    always tried first (known cases, regressions).
    """
    count = 0
    plist = pack_list(packs)
    extras = {k: v() for k, v in invariant.extras.items()}
    failures: dict[str, BaseException] = {}
    first_failure: list[float] = []

    @given(
        request=requests if requests is not None else invariant.requests(now),
        extra=st.fixed_dictionaries(extras),
    )
    def prop(request: JSON, extra: dict[str, Any]) -> None:
        nonlocal count
        key = json.dumps([request, extra], sort_keys=True, default=str)
        if key in failures:
            raise failures[key]
        if first_failure and time.perf_counter() - first_failure[0] > shrink_seconds:
            return
        count += 1
        try:
            invariant.check(request, plist, now, **extra)
        except Exception as exc:
            failures[key] = exc
            if not first_failure:
                first_failure.append(time.perf_counter())
            raise

    for request_, extra_ in examples:
        prop = example(request=request_, extra=dict(extra_))(prop)
    chosen = settings_ or strat.active_settings()
    if chosen.derandomize:  # each invariant its own fixed examples, not all the same ones
        prop = seed(zlib.crc32(invariant.name.encode()))(prop)
    test = chosen(prop)
    report: list[str] = []
    t0 = time.perf_counter()
    try:
        with with_reporter(lambda text: report.append(str(text))):
            test()
    except InvariantViolation as exc:
        return PropertyResult(
            invariant.name,
            profile,
            count,
            time.perf_counter() - t0,
            False,
            str(exc),
            exc.request,
            report,
        )
    except (Exception, HypothesisException) as exc:  # a crash is a failure too
        message = f"{type(exc).__name__}: {exc}"
        violations = [
            e for e in getattr(exc, "exceptions", []) if isinstance(e, InvariantViolation)
        ]
        return PropertyResult(
            invariant.name,
            profile,
            count,
            time.perf_counter() - t0,
            False,
            message[:4000],
            violations[0].request if violations else None,
            report,
        )
    return PropertyResult(invariant.name, profile, count, time.perf_counter() - t0, True)


def _pack_profiles(rules_dir: Path, pack_id: str) -> list[str]:
    import yaml

    data = yaml.safe_load((Path(rules_dir) / pack_id / "pack.yaml").read_text(encoding="utf-8"))
    return sorted((data.get("profiles") or {"US": {}}).keys())


def run_properties(
    rules_dir: Path,
    pack_id: str,
    *,
    profiles: Sequence[str] | None = None,
    settings_: settings | None = None,
    invariants: Sequence[Invariant] | None = None,
    now: datetime = strat.DEFAULT_NOW,
) -> list[PropertyResult]:
    """Every invariant (default: :data:`INVARIANTS`) for every profile of the pack
    (compiled once per profile)."""
    results = []
    for profile in profiles or _pack_profiles(rules_dir, pack_id):
        reg = registry_for(Path(rules_dir), pack_id, profile)
        for inv in invariants if invariants is not None else INVARIANTS:
            results.append(run_property(inv, reg, now=now, settings_=settings_, profile=profile))
    return results


def save_failure(result: PropertyResult, pack_id: str) -> Path | None:
    """Write a failing request where ``cds evaluate`` can replay it; return the path."""
    if result.request is None:
        return None
    folder = Path(tempfile.gettempdir()) / "cds-properties"
    folder.mkdir(parents=True, exist_ok=True)
    slug = "".join(ch if ch.isalnum() else "-" for ch in result.invariant).strip("-")
    path = folder / f"{pack_id}-{result.profile}-{slug}.json"
    path.write_text(json.dumps(result.request, indent=2), encoding="utf-8")
    return path


def run_properties_cli(rules_dir: Path, pack_id: str, console: Any) -> bool:
    """``cds rules test --properties``: run the invariants, print a table, explain failures.

    The hypothesis settings profile comes from ``$CDS_HYPOTHESIS_PROFILE`` (``ci`` by
    default, ``deep`` for many more examples).
    """
    from rich.table import Table

    from cds.errors import PackError

    profile_name = strat.active_settings_name()
    try:
        results = run_properties(rules_dir, pack_id)
    except PackError as exc:
        console.print(f"[red]FAIL[/red] {pack_id}: the pack does not compile: {exc}")
        return False
    failed = [r for r in results if not r.ok]
    table = Table(title=f"{pack_id}: pack invariants (hypothesis profile {profile_name})")
    for col, justify in (
        ("invariant", "left"),
        ("profile", "left"),
        ("examples", "right"),
        ("time", "right"),
        ("result", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in results:
        table.add_row(
            r.invariant,
            r.profile,
            str(r.examples),
            f"{r.seconds:.1f} s",
            "[green]pass[/green]" if r.ok else "[red]FAIL[/red]",
        )
    console.print(table)
    console.print(
        f"{pack_id}: {len(results)} invariant runs, {len(failed)} failed, "
        f"{sum(r.examples for r in results)} examples in "
        f"{sum(r.seconds for r in results):.0f} s"
    )
    for r in failed:
        console.print(f"\n[red]{r.invariant}[/red] ({r.profile}):")
        console.print(r.message, markup=False, highlight=False)
        path = save_failure(r, pack_id)
        if path is not None:
            console.print(
                f"minimal request saved: {path}\nreplay: cds evaluate {path} "
                f"--now {strat.DEFAULT_NOW.isoformat()} --profile {r.profile}",
                markup=False,
                highlight=False,
            )
    return not failed
