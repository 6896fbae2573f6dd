"""What shadow packs and kept requests cost the live hook call.

Two measurements:

1. **the hand-off** (``cds.hooks.shadow.hand_off``), in process: the time the hook route
   spends queueing a call for the sidecar (the only step added to the live path), and the
   time the queue's feeder thread then spends pickling it (GIL time taken from the same
   process, off the request's own path), for the typical and the heavy (1.2 MB) order-sign;
2. **end to end over HTTP**: ``cds serve`` (one worker, SQLite, ``CDS_AUTH=off``) answering
   the typical order-sign sequentially, without the sidecar and with
   ``CDS_KEEP_REQUESTS_DAYS=7`` plus a shadow copy of the baclofen pack: client-side
   latency percentiles, interleaved in rounds so that a noisy neighbour hits both alike.

    .venv/bin/python -m bench.shadow_cost [--calls 300] [--rounds 3] [--database postgresql]
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import shutil
import tempfile
import time
from pathlib import Path
from statistics import mean
from typing import Any

import httpx

from bench.common import (
    RESULTS,
    ensure_requests,
    free_port,
    load_request,
    machine,
    migrate,
    percentile,
    sqlite_db,
    start_cds,
)


def _ms(values: list[float]) -> dict[str, float]:
    return {
        "mean": round(mean(values), 4),
        "p50": round(percentile(values, 50), 4),
        "p95": round(percentile(values, 95), 4),
        "p99": round(percentile(values, 99), 4),
        "max": round(max(values), 4),
    }


def _flatten(prefetch: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for value in prefetch.values():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle":
            out += [e["resource"] for e in value.get("entry", [])]
        elif isinstance(value, dict):
            out.append(value)
    return out


def hand_off_cost(n: int) -> dict[str, Any]:
    from datetime import UTC, datetime

    from cds.engine.registry import PackRegistry
    from cds.hooks.request import parse_hook_call
    from cds.hooks.shadow import Sidecar, SidecarConfig, hand_off
    from cds.hooks.stored import StoredCall, evaluate_stored
    from cds.paths import data_dir

    registry = PackRegistry(rules_dir=data_dir("rules"), pack_ids=["baclofen"], profile="US")
    registry.load()
    packs = registry.packs()
    out: dict[str, Any] = {}
    folder = Path(tempfile.mkdtemp(prefix="shadow-cost-"))
    url = sqlite_db(folder)
    migrate(url)
    config = SidecarConfig(
        database_url=url,
        rules_dir=str(data_dir("rules")),
        pack_ids=("baclofen",),
        profile="US",
        shadow=(),
        keep_days=0,  # the sidecar drains the queue; nothing is written
        budget_seconds=5,
    )
    sidecar = Sidecar(config, queue_size=100_000).start()
    try:
        for kind, path in ensure_requests().items():
            if not kind.startswith("order-sign"):
                continue
            body = load_request(path)
            call = parse_hook_call(body, expected_hook="order-sign")
            resources = _flatten(body["prefetch"])
            stored = StoredCall(
                "x", "s", call.hook, call.hook_instance, datetime.now(UTC), call.context, resources
            )
            cards = evaluate_stored(stored, packs).cards
            kwargs = {
                "invocation_id": "x",
                "service_id": "medication-safety-order-sign",
                "call": call,
                "resources": resources,
                "received": datetime.now(UTC),
                "packs": packs,
                "cards": cards,
            }
            times, pickles = [], []
            runs = n if kind == "order-sign-typical" else max(50, n // 20)
            for _ in range(runs):
                t0 = time.perf_counter()
                hand_off(sidecar, **kwargs)  # type: ignore[arg-type]
                times.append((time.perf_counter() - t0) * 1000)
            message = {"resources": resources, "context": call.context}
            for _ in range(min(runs, 200)):
                t0 = time.perf_counter()
                pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
                pickles.append((time.perf_counter() - t0) * 1000)
            out[kind] = {
                "resources": len(resources),
                "body_bytes": len(json.dumps(body)),
                "hand_off_ms": _ms(times),
                "feeder_pickle_ms": _ms(pickles),
            }
    finally:
        sidecar.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return out


CONFIGS: dict[str, dict[str, str]] = {
    "off": {},
    "keep": {"CDS_KEEP_REQUESTS_DAYS": "7"},
    "shadow": {"CDS_SHADOW_PACKS": "baclofen={shadow}"},
    "keep+shadow": {"CDS_KEEP_REQUESTS_DAYS": "7", "CDS_SHADOW_PACKS": "baclofen={shadow}"},
}


def http_cost(calls: int, rounds: int, database: str, configs: list[str]) -> dict[str, Any]:
    from contextlib import ExitStack

    from bench.common import REPO, cpu_seconds, pg_db, tree_cpu_seconds

    folder = Path(tempfile.mkdtemp(prefix="shadow-http-"))
    body = load_request(ensure_requests(folder, wall_clock=True)["order-sign-typical"])
    shadow = folder / "baclofen-shadow"
    shutil.copytree(REPO / "rules" / "baclofen", shadow)
    yaml_path = shadow / "pack.yaml"
    text = yaml_path.read_text().replace("oral_daily_ceiling_mg: 80 ", "oral_daily_ceiling_mg: 60 ")
    yaml_path.write_text(re.sub(r"(?m)^version: .*$", "version: 99.0.0", text, count=1))
    lat: dict[str, list[float]] = {k: [] for k in configs}
    cpu: dict[str, dict[str, float]] = {k: {"api": 0.0, "all": 0.0} for k in configs}
    try:
        for r in range(rounds):
            for name in configs:
                extra = {k: v.format(shadow=shadow) for k, v in CONFIGS[name].items()}
                with ExitStack() as stack:
                    if database == "postgresql":
                        url = stack.enter_context(pg_db())
                    else:
                        url = sqlite_db(folder / f"{name}-{r}")
                    migrate(url)
                    env = {"CDS_DATABASE_URL": url, "CDS_AUTH": "off", **extra}
                    server = start_cds(
                        port=free_port(), workers=1, env=env, log=folder / f"{name}-{r}.log"
                    )
                    try:
                        with httpx.Client(base_url=server.base, timeout=30) as client:
                            path = "/cds-services/medication-safety-order-sign"
                            for _ in range(30):  # warm-up
                                client.post(path, json=body)
                            time.sleep(3 if extra else 0.5)  # the sidecar drains the warm-up
                            api0 = cpu_seconds(server.proc.pid)
                            all0 = tree_cpu_seconds(server.proc.pid)
                            for _ in range(calls):
                                t0 = time.perf_counter()
                                resp = client.post(path, json=body)
                                lat[name].append((time.perf_counter() - t0) * 1000)
                                assert resp.status_code == 200
                            time.sleep(3 if extra else 0.0)  # the sidecar finishes
                            cpu[name]["api"] += cpu_seconds(server.proc.pid) - api0
                            cpu[name]["all"] += tree_cpu_seconds(server.proc.pid) - all0
                    finally:
                        server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    n = calls * rounds
    return {
        "database": database,
        "calls_per_config": n,
        "latency_ms": {k: _ms(v) for k, v in lat.items()},
        "cpu_ms_per_call": {
            k: {
                "hook_api_process": round(v["api"] / n * 1000, 2),
                "with_sidecar": round(v["all"] / n * 1000, 2),
            }
            for k, v in cpu.items()
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--out", type=Path, default=RESULTS / "shadow-cost.json")
    args = ap.parse_args()
    result = {
        "machine": machine(),
        "hand_off": hand_off_cost(2000),
        "http": http_cost(args.calls, args.rounds, args.database, args.configs.split(",")),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
