"""A hook call as it was evaluated, kept to be evaluated again (replay, shadow packs).

What is kept is what the pipeline read: the hook, ``hookInstance``, the ``context`` (with
its draft orders), the resolved prefetch resources (those the EHR sent plus those the
service fetched), the prefetch keys that could not be obtained (the clinical layer says so
in a data-quality card), and the instant the call was received. Never ``fhirAuthorization``
(a token) nor ``fhirServer``: a stored call is evaluated again without fetching anything.

:func:`evaluate_stored` takes the hook route's own steps from the validated call on:
``parse_hook_call``, ``require_patient``, ``HookCall.pipeline_input`` and
``cds.hooks.pipeline.evaluate`` at the recorded instant. There is no second implementation
of any rule: a replay or a shadow pack sees exactly what the hook call saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cds.engine.pack import CompiledPack
from cds.hooks.pipeline import Evaluation, evaluate
from cds.hooks.request import parse_hook_call, require_patient

__all__ = ["FORMAT", "StoredCall", "evaluate_stored", "substitute"]

FORMAT = 1  # the "v" of a stored call's JSON


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class StoredCall:
    invocation_id: str
    service_id: str
    hook: str
    hook_instance: str
    received_at: datetime
    context: dict[str, Any]
    resources: list[dict[str, Any]]
    unavailable: list[str] = field(default_factory=list)  # prefetch keys not obtained

    def to_doc(self) -> dict[str, Any]:
        """The JSON kept in ``hook_requests.body``."""
        return {
            "v": FORMAT,
            "hook": self.hook,
            "hookInstance": self.hook_instance,
            "service": self.service_id,
            "receivedAt": _utc(self.received_at).isoformat(),
            "context": self.context,
            "resources": self.resources,
            "unavailable": self.unavailable,
        }

    @classmethod
    def from_doc(cls, invocation_id: str, doc: dict[str, Any]) -> StoredCall:
        if doc.get("v") != FORMAT:
            raise ValueError(f"stored call format {doc.get('v')!r} is not {FORMAT}")
        resources = doc.get("resources")
        context = doc.get("context")
        if not isinstance(resources, list) or not isinstance(context, dict):
            raise ValueError("a stored call has a context object and a resources list")
        return cls(
            invocation_id=invocation_id,
            service_id=str(doc.get("service", "")),
            hook=str(doc["hook"]),
            hook_instance=str(doc["hookInstance"]),
            received_at=_utc(datetime.fromisoformat(str(doc["receivedAt"]))),
            context=context,
            resources=[r for r in resources if isinstance(r, dict)],
            unavailable=[str(k) for k in doc.get("unavailable") or []],
        )


def evaluate_stored(
    call: StoredCall, packs: Sequence[CompiledPack], *, recheck: bool = True
) -> Evaluation:
    """The cards ``packs`` give this call at its own instant (the hook route's steps).

    Raises what the hook route would raise for it (``RequestError`` subclasses).
    """
    hook_call = parse_hook_call(
        {"hook": call.hook, "hookInstance": call.hook_instance, "context": call.context},
        expected_hook=call.hook,
    )
    require_patient(call.resources, hook_call.patient_id)
    inp = hook_call.pipeline_input(call.resources, call.unavailable)
    return evaluate(inp, packs, now=_utc(call.received_at), recheck=recheck)


def substitute(packs: Sequence[CompiledPack], version: CompiledPack) -> list[CompiledPack]:
    """``packs`` with ``version`` in place of the pack of the same id (added if none)."""
    out = [version if p.id == version.id else p for p in packs]
    if not any(p.id == version.id for p in packs):
        out.append(version)
    return out
