"""Running a request the way ``POST /cds-services/{id}`` does, in process.

The invariants compare what the service answers to two related requests; this module is
how they ask: :func:`run_request` (request validation, prefetch resolution or fetch,
``cds.hooks.pipeline.evaluate``) and :func:`call_app` (the real FastAPI app, so a crash
shows as the 500 an EHR would get). Compiled packs are cached per (rules folder, pack,
profile) by :func:`registry_for`: compiling takes ~0.5 s, evaluating a request a few ms.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any, cast

import httpx

from cds.cards import BuiltCard
from cds.clinical.extract import HookInput
from cds.engine.pack import CompiledPack
from cds.engine.registry import PackRegistry
from cds.errors import RequestError
from cds.hooks.pipeline import Evaluation, evaluate
from cds.hooks.prefetch import resolve_prefetch
from cds.hooks.request import parse_hook_call, require_patient
from cds.hooks.services import SERVICE_IDS, ServiceDef, catalog
from cds.settings import Settings
from cds.store.db import make_memory_sessionmaker
from cds.testing.formulary import PackDrug, pack_drug

# Imported here, not on first use, for a second reason beyond speed: hypothesis draws some
# values from constants in the modules loaded so far, so a module first imported in the
# middle of a run would change the (derandomised) examples of every invariant after it.
from cds.web.app import create_app

JSON = dict[str, Any]
Packs = PackRegistry | CompiledPack | Sequence[CompiledPack]

__all__ = [
    "Outcome",
    "Packs",
    "call_app",
    "drugs_of",
    "hook_input",
    "pack_list",
    "quiet",
    "registry_for",
    "run_request",
    "service_for",
]


def pack_list(packs: Packs) -> list[CompiledPack]:
    if isinstance(packs, PackRegistry):
        return packs.packs()
    if isinstance(packs, CompiledPack):
        return [packs]
    return list(packs)


def drugs_of(packs: Packs) -> list[PackDrug]:
    """The drugs of ``packs``, as the kit generates and recognises them."""
    return [pack_drug(p) for p in pack_list(packs)]


def service_for(request: Any, packs: Packs) -> ServiceDef:
    """The service (of ``packs``) a request's hook calls (order-sign when unclear)."""
    hook = str(request.get("hook")) if isinstance(request, dict) else ""
    svc = catalog(pack_list(packs)).get(SERVICE_IDS.get(hook, SERVICE_IDS["order-sign"]))
    assert svc is not None
    return svc


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


_LOOPS = threading.local()


def _run(coro: Any, *, fresh_loop: bool) -> Any:
    """Run ``coro`` to completion. The property kit calls this thousands of times:
    ``asyncio.run`` builds a loop and installs a SIGINT handler each time (whose failed
    enum lookup formats the task, its arguments included: ~1 ms a call), so a call with
    no client of its own reuses one loop per thread. A given client is tied to the
    caller's loop arrangement, so it keeps ``asyncio.run``."""
    if fresh_loop:
        return asyncio.run(coro)
    loop = getattr(_LOOPS, "loop", None)
    if loop is None or loop.is_closed():
        loop = _LOOPS.loop = asyncio.new_event_loop()
    return loop.run_until_complete(coro)


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
    resolved = _run(
        resolve_prefetch(
            keys=svc.prefetch,
            prefetch=call.prefetch,
            context=call.context,
            fhir_server=call.fhir_server,
            access_token=call.access_token,
            allowlist=list(allowlist),
            now=now,
            client=client,
        ),
        fresh_loop=client is not None,
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
        with quiet():
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
def quiet() -> Iterator[None]:
    """Silence the service's own warnings (dev-mode banner, dropped suggestions) while
    thousands of examples run; the invariants report what matters."""
    logger = logging.getLogger("cds")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
