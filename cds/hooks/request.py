"""CDS Hooks request validation: what must hold before any clinical work starts.

Tolerant where real EHRs differ (extra fields, a Bundle without ``entry``, a draft with
no medication yet), strict where the spec is (hook matches the service, a UUID
``hookInstance``, the context fields of each hook, selections among the draft orders).
Every failure is a ``MalformedRequest`` whose message names the field.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cds.clinical.extract import HookInput
from cds.errors import MalformedRequest

CONTEXT_REQUIRED = {
    "patient-view": ("userId", "patientId"),
    "order-select": ("userId", "patientId", "selections", "draftOrders"),
    "order-sign": ("userId", "patientId", "draftOrders"),
}


@dataclass(frozen=True)
class HookCall:
    """A validated hook request (the raw parts the later stages need)."""

    hook: str
    hook_instance: str
    context: dict[str, Any]
    prefetch: dict[str, Any] | None
    fhir_server: str | None
    access_token: str | None
    draft_orders: list[dict[str, Any]]
    selections: list[str] | None

    @property
    def patient_id(self) -> str:
        return str(self.context["patientId"])

    @property
    def encounter_id(self) -> str | None:
        e = self.context.get("encounterId")
        return str(e) if isinstance(e, str) and e else None

    def pipeline_input(
        self, resources: list[dict[str, Any]], unavailable: list[str] | None = None
    ) -> HookInput:
        """What the clinical layer needs: this call plus the resolved prefetch resources
        (and the prefetch keys that could not be obtained)."""
        return HookInput(
            unavailable=list(unavailable or []),
            hook=self.hook,
            patient_id=self.patient_id,
            encounter_id=self.encounter_id,
            draft_orders=self.draft_orders,
            selections=self.selections,
            resources=resources,
        )

    @property
    def user_id(self) -> str | None:
        u = self.context.get("userId")
        return str(u) if isinstance(u, str) else None


_URL_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f\\]")


def _is_http_url(url: str) -> bool:
    if _URL_UNSAFE.search(url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _require_str(obj: dict[str, Any], key: str, where: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str) or not v.strip():
        raise MalformedRequest(
            f"{where}.{key} is required and must be a non-empty string",
            expression=[f"{where}.{key}"],
        )
    return v


def parse_hook_call(body: Any, *, expected_hook: str) -> HookCall:
    """Validate ``body`` (decoded JSON) as a call of ``expected_hook``."""
    if not isinstance(body, dict):
        raise MalformedRequest("the request body must be a JSON object")
    hook = _require_str(body, "hook", "request")
    if hook != expected_hook:
        raise MalformedRequest(
            f"hook {hook!r} does not match this service, which answers {expected_hook!r}",
            expression=["hook"],
        )
    instance = _require_str(body, "hookInstance", "request")
    try:
        uuid.UUID(instance)
    except ValueError:
        raise MalformedRequest("hookInstance must be a UUID", expression=["hookInstance"]) from None
    context = body.get("context")
    if not isinstance(context, dict):
        raise MalformedRequest("context is required and must be an object", expression=["context"])
    for key in CONTEXT_REQUIRED[hook]:
        if key not in context or context[key] is None:
            raise MalformedRequest(
                f"context.{key} is required for {hook}", expression=[f"context.{key}"]
            )
    _require_str(context, "patientId", "context")
    _require_str(context, "userId", "context")
    if (
        "encounterId" in context
        and context["encounterId"] is not None
        and not isinstance(context["encounterId"], str)
    ):
        raise MalformedRequest(
            "context.encounterId must be a string", expression=["context.encounterId"]
        )

    drafts: list[dict[str, Any]] = []
    if "draftOrders" in context:
        bundle = context["draftOrders"]
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise MalformedRequest(
                "context.draftOrders must be a FHIR Bundle", expression=["context.draftOrders"]
            )
        entries = bundle.get("entry") or []
        if not isinstance(entries, list):
            raise MalformedRequest(
                "context.draftOrders.entry must be an array",
                expression=["context.draftOrders.entry"],
            )
        for i, e in enumerate(entries):
            res = e.get("resource") if isinstance(e, dict) else None
            if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
                raise MalformedRequest(
                    f"context.draftOrders.entry[{i}] has no resource",
                    expression=[f"context.draftOrders.entry[{i}]"],
                )
            drafts.append(res)

    selections: list[str] | None = None
    if hook == "order-select":
        sel = context["selections"]
        if not isinstance(sel, list) or not all(isinstance(s, str) for s in sel):
            raise MalformedRequest(
                "context.selections must be an array of strings", expression=["context.selections"]
            )
        known = {f"{d.get('resourceType')}/{d.get('id')}" for d in drafts}
        missing = [s for s in sel if s not in known]
        if missing:
            raise MalformedRequest(
                f"context.selections names orders not in draftOrders: {', '.join(missing[:5])}",
                expression=["context.selections"],
            )
        selections = list(sel)

    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        raise MalformedRequest("prefetch must be an object", expression=["prefetch"])
    fhir_server = body.get("fhirServer")
    if fhir_server is not None and not isinstance(fhir_server, str):
        raise MalformedRequest("fhirServer must be a URL string", expression=["fhirServer"])
    if fhir_server and not _is_http_url(fhir_server):
        raise MalformedRequest(
            "fhirServer must be an absolute http(s) URL without spaces or control characters",
            expression=["fhirServer"],
        )
    token: str | None = None
    auth = body.get("fhirAuthorization")
    if auth is not None:
        if not isinstance(auth, dict):
            raise MalformedRequest(
                "fhirAuthorization must be an object", expression=["fhirAuthorization"]
            )
        t = auth.get("access_token")
        if t is not None and not isinstance(t, str):
            raise MalformedRequest(
                "fhirAuthorization.access_token must be a string",
                expression=["fhirAuthorization.access_token"],
            )
        token = t
    ext = body.get("extension")
    if ext is not None and not isinstance(ext, dict):
        raise MalformedRequest("extension must be an object", expression=["extension"])
    return HookCall(
        hook=hook,
        hook_instance=instance,
        context=context,
        prefetch=prefetch,
        fhir_server=fhir_server or None,
        access_token=token,
        draft_orders=drafts,
        selections=selections,
    )


def require_patient(resources: list[dict[str, Any]], patient_id: str) -> None:
    """The Patient of ``context.patientId`` must be there (412) and be valid FHIR R4 (422).

    Everything else may be partial (the rules say so in data-quality cards), but without a
    readable Patient no age, sex or weight rule can be trusted.
    """
    from fhir.resources.R4B.patient import Patient
    from pydantic import ValidationError

    from cds.errors import InvalidFhir, PrefetchUnavailable

    patients = [r for r in resources if r.get("resourceType") == "Patient"]
    if not patients:
        raise PrefetchUnavailable(
            "required prefetch 'patient' could not be obtained: no Patient resource",
            expression=["prefetch.patient"],
        )
    mine = [p for p in patients if p.get("id") == patient_id]
    if not mine:
        raise InvalidFhir(
            f"the Patient resource is not context.patientId ({patient_id[:64]})",
            expression=["prefetch.patient.id"],
        )
    try:
        Patient.model_validate(mine[0])
    except (ValidationError, ValueError, TypeError) as exc:
        where = "prefetch.patient"
        if isinstance(exc, ValidationError) and exc.errors():
            loc = ".".join(str(p) for p in exc.errors()[0].get("loc", ()))
            where = f"prefetch.patient.{loc}" if loc else where
        raise InvalidFhir(
            f"the Patient is not valid FHIR R4 ({where})", expression=[where]
        ) from None
