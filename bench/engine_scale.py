"""Engine scale: evaluations per second and memory over many evaluations in one process.

Each evaluation is one durable_rules session (its own sid: assert the facts, collect the
findings, delete the state), exactly as a hook call runs it. The facts of the request mix
(typical order-sign, order-select, patient-view, heavy) are extracted once and evaluated in
turn, so the figure is the engine's own cost. RSS is read from /proc at checkpoints; memory
must be flat (growth between the 10% checkpoint and the end under 5%).

``--pipeline`` evaluates the whole pipeline instead (facts, engine, cards with the
suggestion re-check), which is what a hook call costs without HTTP, JWT and the store.

    python -m bench.engine_scale -n 1000000          # the report's run (minutes)
    python -m bench.engine_scale -n 20000            # the smoke
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine, rss_kib
from bench.gen_requests import FIXED_NOW, KINDS, build
from cds.clinical.extract import HookInput, extract_facts
from cds.engine.registry import PackRegistry
from cds.hooks.fetch import FetchLimits
from cds.hooks.pipeline import evaluate
from cds.hooks.prefetch import resolve_prefetch
from cds.hooks.request import parse_hook_call
from cds.hooks.services import SERVICE_IDS, catalog
from cds.paths import data_dir


def hook_input(req: dict[str, Any], now: datetime, registry: PackRegistry) -> HookInput:
    """The pipeline's input for a request, through the same validation and prefetch code."""
    svc = catalog(registry.packs()).get(SERVICE_IDS[req["hook"]])
    assert svc is not None
    call = parse_hook_call(req, expected_hook=svc.hook)
    resolved = asyncio.run(
        resolve_prefetch(
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
    )
    return call.pipeline_input(resolved.resources)


def run(n: int, pipeline: bool, kinds: tuple[str, ...]) -> dict[str, Any]:
    now = FIXED_NOW  # the committed requests are relative to it
    registry = PackRegistry(rules_dir=data_dir("rules"), pack_ids=["baclofen"], profile="US")
    registry.load()
    pack = registry.packs()[0]
    inputs = [hook_input(build(k, now), now, registry) for k in kinds]
    facts = [extract_facts(i, now=now, params=pack.clinical, drug=pack.drug) for i in inputs]
    findings_per_kind = [len(pack.evaluate(f)) for f in facts]
    checkpoints = sorted(
        {max(1, n // 100), n // 10, n // 5, n // 2, n} | {n * k // 10 for k in range(1, 11)}
    )
    gc.collect()
    rows: list[dict[str, Any]] = [
        {"evaluations": 0, "rss_kib": rss_kib(os.getpid()), "seconds": 0.0}
    ]
    t_start = time.perf_counter()
    cpu_start = time.process_time()
    window_t, window_i = t_start, 0
    k = len(kinds)
    for i in range(1, n + 1):
        j = i % k
        if pipeline:
            evaluate(inputs[j], [pack], now=now)
        else:
            pack.evaluate(facts[j])
        if i in checkpoints:
            t = time.perf_counter()
            rows.append(
                {
                    "evaluations": i,
                    "rss_kib": rss_kib(os.getpid()),
                    "seconds": round(t - t_start, 2),
                    "per_second_window": round((i - window_i) / (t - window_t), 1),
                }
            )
            window_t, window_i = t, i
            print(
                f"{i:>9,} evaluations  {rows[-1]['rss_kib'] / 1024:8.1f} MiB  "
                f"{rows[-1]['per_second_window']:>9,.0f}/s",
                flush=True,
            )
    total = time.perf_counter() - t_start
    cpu_total = time.process_time() - cpu_start
    tenth = next(r for r in rows if r["evaluations"] == n // 10)
    growth = (rows[-1]["rss_kib"] - tenth["rss_kib"]) / tenth["rss_kib"] * 100
    return {
        "machine": machine(),
        "n": n,
        "mode": "pipeline" if pipeline else "engine",
        "kinds": list(kinds),
        "findings_per_kind": findings_per_kind,
        "per_second": round(n / total, 1),
        "per_cpu_second": round(n / cpu_total, 1),
        "seconds": round(total, 1),
        "rss_growth_pct_from_10pct": round(growth, 2),
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--pipeline", action="store_true", help="the whole pipeline, not the engine")
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--max-growth",
        type=float,
        default=None,
        help="exit 1 when RSS grows more than this %% after the 10%% checkpoint",
    )
    args = ap.parse_args()
    report = run(args.n, args.pipeline, tuple(args.kinds.split(",")))
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"engine-scale-{report['mode']}-{args.n}.json"
    (args.out / name).write_text(json.dumps(report, indent=2))
    print(
        f"{report['mode']}: {report['per_second']:,.0f} evaluations/s over {args.n:,} "
        f"({report['per_cpu_second']:,.0f} per CPU second); "
        f"RSS {report['rows'][-1]['rss_kib'] / 1024:.1f} MiB; growth after 10%: "
        f"{report['rss_growth_pct_from_10pct']:+.2f}%"
    )
    if args.max_growth is not None and report["rss_growth_pct_from_10pct"] > args.max_growth:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
