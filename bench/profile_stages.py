"""In-process profile: time per stage for each request kind, and a cProfile of the typical one.

Stages, as ``POST /cds-services/{id}`` runs them (``cds.web.hooks_api``):
``json`` (decode the body), ``parse`` (CDS Hooks validation), ``prefetch`` (template check;
no fetch: the requests carry every key), ``facts``, ``engine``, ``cards`` (these three are
``Evaluation.timings`` from the pipeline), ``store`` (the audit transaction, SQLite file or
PostgreSQL), ``encode`` (the response JSON). ``app`` is the whole call through the ASGI app
(no JWT, no network), so ``app - sum(stages)`` is the framework's share.

Every call runs inside ONE event-loop task, as under uvicorn: a fresh loop per call, or
one ``run_until_complete`` per call, ends the task that anyio ties its worker threads to,
so each call paid a thread start that production never pays (the earlier harness did:
its ``app`` column was ~5 ms above the stages' sum for the typical request). The app is
built as ``cds serve`` builds it (``create_app`` with its lifespan, ``tune_gc``).

    python -m bench.profile_stages [-n 200] [--db sqlite|postgresql] [--out bench/results]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import RESULTS, ensure_requests, machine, migrate, percentile, pg_db
from bench.gen_requests import FIXED_NOW, KINDS, SERVICE
from cds.engine.registry import PackRegistry
from cds.hooks.audit import issued_cards
from cds.hooks.fetch import FetchLimits
from cds.hooks.pipeline import evaluate
from cds.hooks.prefetch import resolve_prefetch
from cds.hooks.request import parse_hook_call
from cds.hooks.services import catalog
from cds.paths import data_dir
from cds.settings import Settings
from cds.store.audit import InvocationRecord, save_invocation
from cds.store.db import make_engine, make_sessionmaker
from cds.web.app import create_app
from cds.web.errors import SafeJSONResponse
from cds.web.hooks_api import decode_body

STAGES = ("json", "parse", "prefetch", "facts", "engine", "cards", "store", "encode")


async def one_call(
    raw: bytes, service_id: str, registry: PackRegistry, maker: Any, now: datetime
) -> dict[str, float]:
    """The handler's stages in order, timed (ms)."""
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    body = decode_body(raw)  # as the hook route does (orjson and the JSON limits)
    t["json"] = (time.perf_counter() - t0) * 1000
    svc = catalog(registry.packs()).get(service_id)
    assert svc is not None
    t0 = time.perf_counter()
    call = parse_hook_call(body, expected_hook=svc.hook)
    t["parse"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    resolved = await resolve_prefetch(
        keys=svc.prefetch,
        prefetch=call.prefetch,
        context=call.context,
        fhir_server=None,
        access_token=None,
        allowlist=[],
        now=now,
        limits=FetchLimits(),
        client=None,
    )
    t["prefetch"] = (time.perf_counter() - t0) * 1000
    inp = call.pipeline_input(resolved.resources)
    packs = registry.packs()
    result = evaluate(inp, packs, now=now)
    t.update({k: result.timings.get(k, 0.0) for k in ("facts", "engine", "cards")})
    record = InvocationRecord(
        id=str(uuid.uuid4()),
        hook_instance=call.hook_instance,
        service_id=svc.id,
        hook=call.hook,
        patient_ref=f"Patient/{call.patient_id}",
        user_ref=call.user_id,
        encounter_ref=None,
        issuer=None,
        tenant=None,
        received_at=now,
        evaluated_at=now,
        duration_ms=0.0,
        timings=dict(result.timings),
        pack_id=packs[0].id,
        pack_version=packs[0].version,
        fetched_keys=[],
    )
    issued = issued_cards(result)  # exactly what the hook route stores
    t0 = time.perf_counter()
    save_invocation(maker=maker, invocation=record, cards=issued)
    t["store"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    SafeJSONResponse({"cards": [c.card for c in result.cards]})  # as the hook route does
    t["encode"] = (time.perf_counter() - t0) * 1000
    t["n_cards"] = float(len(result.cards))
    return t


def app_caller(app: Any) -> Callable[[str, bytes], Awaitable[tuple[float, float]]]:
    """A coroutine function timing one whole call through the ASGI app (ms)."""
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b")

    async def call(service_id: str, raw: bytes) -> tuple[float, float]:
        """(wall ms, process CPU ms): calls run one at a time, so the process's CPU in
        the meantime (every thread) is the call's, whatever the neighbours do."""
        c0 = time.process_time()
        t0 = time.perf_counter()
        r = await client.post(
            f"/cds-services/{service_id}",
            content=raw,
            headers={"content-type": "application/json"},
        )
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {r.text[:300]}")
        return (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000

    return call


def summarise(samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    out = {}
    for k in (*STAGES, "total", "app", "app_cpu"):
        vals = [s[k] for s in samples if k in s]
        out[k] = {
            "p50": round(percentile(vals, 50), 3),
            "p95": round(percentile(vals, 95), 3),
            "p99": round(percentile(vals, 99), 3),
        }
    return out


def run(n: int, db_url: str, out: Path, profile_n: int) -> dict[str, Any]:
    return asyncio.run(_run(n, db_url, out, profile_n))


async def _run(n: int, db_url: str, out: Path, profile_n: int) -> dict[str, Any]:
    from cds.web.factory import tune_gc

    paths = ensure_requests()
    now = FIXED_NOW  # the committed requests are relative to it
    registry = PackRegistry(rules_dir=data_dir("rules"), pack_ids=["baclofen"], profile="US")
    registry.load()
    maker = make_sessionmaker(make_engine(db_url))
    app = create_app(Settings(auth="off", database_url=db_url), registry=registry)
    tune_gc()
    report: dict[str, Any] = {"machine": machine(), "n": n, "db": db_url.split(":")[0], "kinds": {}}
    async with app.router.lifespan_context(app):
        call_app = app_caller(app)
        for kind in KINDS:
            raw = paths[kind].read_bytes()
            sid = SERVICE[kind]
            reps = max(20, n // 10) if kind == "order-sign-heavy" else n
            for _ in range(5):  # warm-up
                await one_call(raw, sid, registry, maker, now)
                await call_app(sid, raw)
            samples = []
            for _ in range(reps):
                s = await one_call(raw, sid, registry, maker, now)
                s["total"] = sum(s[k] for k in STAGES)
                s["app"], s["app_cpu"] = await call_app(sid, raw)
                samples.append(s)
            report["kinds"][kind] = {
                "reps": reps,
                "bytes": len(raw),
                "n_cards": int(samples[0]["n_cards"]),
                **summarise(samples),
            }
    # cProfile of the typical request's stages (the app runs them in a worker thread, which
    # cProfile would not see through the ASGI app)
    raw = paths["order-sign-typical"].read_bytes()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(profile_n):
        await one_call(raw, "medication-safety-order-sign", registry, maker, now)
    prof.disable()
    for sort in ("cumulative", "tottime"):
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats(sort).print_stats(40)
        (out / f"profile-typical-{sort}.txt").write_text(buf.getvalue())
    return report


def table(report: dict[str, Any]) -> str:
    lines = [
        "| kind | n cards | "
        + " | ".join(STAGES)
        + " | sum | app (whole call) | app CPU (all threads) |",
        "|---|---:|" + "---:|" * (len(STAGES) + 3),
    ]
    for kind, r in report["kinds"].items():
        cells = [f"{r[k]['p50']:.2f}" for k in (*STAGES, "total", "app", "app_cpu")]
        lines.append(f"| {kind} | {r['n_cards']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "p99 (ms): "
        + "; ".join(
            f"{kind} whole call {r['app']['p99']:.1f} (CPU {r['app_cpu']['p99']:.1f})"
            for kind, r in report["kinds"].items()
        )
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=200, help="calls per request kind")
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--profile-n", type=int, default=200)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.db == "postgresql":
        with pg_db() as url:
            migrate(url)
            report = run(args.n, url, args.out, args.profile_n)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/profile.db"
            migrate(url)
            report = run(args.n, url, args.out, args.profile_n)
    (args.out / f"stages-{args.db}.json").write_text(json.dumps(report, indent=2))
    print(f"{report['machine']}  db={args.db}  n={args.n}  (p50 per stage, ms)")
    print(table(report))


if __name__ == "__main__":
    main()
