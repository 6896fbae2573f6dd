"""The services this CDS service offers, and what each asks the EHR to prefetch.

One medication-safety service per hook runs every loaded pack (one pack per drug).
Why not one service per pack: an EHR integrator registers, configures and monitors each
CDS service separately (its URL, its prefetch, its JWT audience, its place in the order
workflow), and every service is one more HTTP call at order-sign; one service per hook is
one registration and one call however many drugs are covered, and it lets the packs agree
on one card where two drugs with packs interact (owned by one pack) instead of two.

Each pack declares the prefetch it needs (``pack.yaml`` ``prefetch:``); a service asks for
the union. Observation keys are built from the ValueSets the rules read, so the codes
fetched are exactly the codes used. Only the Patient and the medications are required:
without them no rule can run (412). A pack may keep the ids an EHR was registered with
(``service_aliases``): a call to an alias is the service it names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cds.engine.pack import CompiledPack
from cds.errors import PackError
from cds.hooks.prefetch import PrefetchKey

SERVICE_IDS = {
    "order-select": "medication-safety-order-select",
    "order-sign": "medication-safety-order-sign",
    "patient-view": "medication-safety-patient-view",
}
_TITLES = {
    "order-select": "Medication safety (order select)",
    "order-sign": "Medication safety (order sign)",
    "patient-view": "Medication regimen review (chart open)",
}
_DOES = {
    "order-select": (
        "Checks the selected draft orders of {drugs}: route, dose ceilings, titration speed, "
        "renal dose adjustment; and the regimen after signing for withdrawal risk, side "
        "effects and interactions."
    ),
    "order-sign": (
        "Checks every draft order of {drugs} before signing, including stops and reductions "
        "of a chronic regimen (withdrawal risk) with a taper suggestion."
    ),
    "patient-view": (
        "Reviews the active regimen of {drugs} against new renal results, overdue pump "
        "refills and observations such as respiratory rate and sedation scores."
    ),
}


@dataclass(frozen=True)
class ServiceDef:
    id: str
    hook: str
    title: str
    description: str
    prefetch: dict[str, PrefetchKey]

    def discovery(self, version: str) -> dict[str, Any]:
        types = sorted({_resource_type(k.template) for k in self.prefetch.values()} - {""})
        return {
            "version": version,
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": {k: v.template for k, v in self.prefetch.items()},
            "usageRequirements": (
                "Send a JWT signed by a registered issuer (ES384 or RS384). Prefetch as listed "
                "or grant fhirAuthorization with read access to " + ", ".join(types) + ". "
                "Cards cite the rule pack and version that produced them."
            ),
        }


def _resource_type(template: str) -> str:
    head = template.split("?", 1)[0].split("/", 1)[0]
    return head if head[:1].isupper() else ""


def _observation_template(codes: list[str], since_days: int | None, count: int) -> str:
    date = f"&date=ge{{{{today() - {since_days} days}}}}" if since_days is not None else ""
    return (
        f"Observation?patient={{{{context.patientId}}}}&code={','.join(codes)}{date}"
        f"&_sort=-date&_count={count}"
    )


def merged_prefetch(packs: Sequence[CompiledPack]) -> dict[str, PrefetchKey]:
    """The union of the packs' prefetch keys (``PackError`` when two packs declare one key
    differently: a search must be the same; observation keys merge their ValueSets)."""
    searches: dict[str, tuple[str, str, bool]] = {}  # key -> (template, pack, required)
    observed: dict[str, dict[str, Any]] = {}
    for pack in packs:
        for key, spec in pack.prefetch.items():
            if spec.search is not None:
                if key in observed or (key in searches and searches[key][0] != spec.search):
                    other = searches.get(key, ("", "another pack", False))[1]
                    raise PackError(
                        f"prefetch key {key!r} is declared differently by {pack.id} and {other}"
                    )
                required = spec.required or searches.get(key, ("", "", False))[2]
                searches[key] = (spec.search, pack.id, required)
                continue
            if key in searches:
                raise PackError(f"prefetch key {key!r} is a search in one pack, not in {pack.id}")
            entry = observed.setdefault(
                key, {"codes": {}, "since": spec.since_days, "count": 0, "required": False}
            )
            for vs_id in spec.observations:
                vs = pack.drug.term.vs(vs_id)
                for system, code in sorted(vs.codes):
                    entry["codes"][f"{system}|{code}"] = None
            since = entry["since"]
            entry["since"] = (
                None if since is None or spec.since_days is None else max(since, spec.since_days)
            )
            entry["count"] = max(entry["count"], spec.count)
            entry["required"] = entry["required"] or spec.required
    out = {k: PrefetchKey(t, required=r) for k, (t, _, r) in searches.items()}
    for key, e in observed.items():
        out[key] = PrefetchKey(
            _observation_template(list(e["codes"]), e["since"], e["count"]),
            required=e["required"],
        )
    return out


def services_for(packs: Sequence[CompiledPack]) -> dict[str, ServiceDef]:
    """The three services (one per hook) for the loaded ``packs``, by id."""
    prefetch = merged_prefetch(packs)
    drugs = " and ".join(p.drug.name for p in packs) or "the loaded packs"
    return {
        sid: ServiceDef(sid, hook, _TITLES[hook], _DOES[hook].format(drugs=drugs), prefetch)
        for hook, sid in SERVICE_IDS.items()
    }


def service_aliases(packs: Sequence[CompiledPack]) -> dict[str, str]:
    """Service ids the packs keep for existing EHR registrations -> the service id."""
    out: dict[str, str] = {}
    for pack in packs:
        for alias, hook in pack.service_aliases.items():
            out[alias] = SERVICE_IDS[hook]
    return out


@dataclass(frozen=True)
class Catalog:
    """The services of one set of packs, and the ids an EHR may call them by."""

    services: dict[str, ServiceDef]
    aliases: dict[str, str]

    def get(self, service_id: str) -> ServiceDef | None:
        return self.services.get(self.aliases.get(service_id, service_id))


_CATALOGS: dict[tuple[str, ...], Catalog] = {}


def catalog(packs: Sequence[CompiledPack]) -> Catalog:
    """The catalog of ``packs`` (cached by their digests: a reload builds a new one)."""
    key = tuple(f"{p.id}:{p.digest}" for p in packs)
    hit = _CATALOGS.get(key)
    if hit is None:
        if len(_CATALOGS) > 32:
            _CATALOGS.clear()
        hit = _CATALOGS[key] = Catalog(services_for(packs), service_aliases(packs))
    return hit


def discovery_document(packs: Sequence[CompiledPack]) -> dict[str, Any]:
    """Discovery; each service carries ``version`` (CDS Hooks 3.0): the pack versions."""
    version = "+".join(f"{p.id}-{p.version}" for p in packs)
    return {"services": [s.discovery(version) for s in services_for(packs).values()]}
