"""Hook latency under an anonymous console sign-in flood (hardening #1).

The finding: console sign-in ran argon2 (~150 ms of CPU) in the same four worker threads
as JWT checks and rule evaluation, with no rate limit; 64 anonymous connections pushed
hook calls from 0.02 s to 10 s, past an EHR's timeout. This script measures, in one run
and on one machine, the hook API's latency (one EHR connection, a closed loop of typical
order-sign calls, each with a freshly minted ES384 JWT) while idle and while a separate
process floods the console's sign-in form from ``--conns`` connections (each attempt: GET
the form for its CSRF cookie, POST a random username and password; a random
``X-Forwarded-For`` per attempt, trusted from 127.0.0.1, so the flood looks like many
clients and only the global limit can stop it: the worst case).

Configurations, each a fresh ``cds serve`` (JWT on, SQLite by default):

- ``limits-off``: one listener, rate limits disabled and a 4-thread hashing pool with a
  deep queue: the closest the current code comes to the unlimited sign-in of the finding
  (hashing still never runs on the hook API's threads);
- ``defaults``: one listener, default limits (10 attempts/min per client, 5/s in all,
  one hashing thread, 4 waiting);
- ``separate-port``: ``cds serve --console-port``: the console in its own process.

Figures are measured and reported (``--out``), never asserted. Talks only to 127.0.0.1.

    python -m bench.signin_flood [--duration 15] [--conns 64] [--db sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import re
import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    RESULTS,
    ensure_requests,
    free_port,
    machine,
    percentile,
    sqlite_db,
    start_cds,
    tree_cpu_seconds,
)
from bench.gen_requests import SERVICE
from bench.loadgen import JwtMinter

CONFIGS: dict[str, tuple[dict[str, str], bool]] = {
    "limits-off": (
        {
            "CDS_LOGIN_RATE_PER_CLIENT": "1000000",
            "CDS_LOGIN_RATE_GLOBAL": "1000000",
            "CDS_HASH_THREADS": "4",
            "CDS_HASH_QUEUE": "100000",
        },
        False,
    ),
    "defaults": ({}, False),
    "separate-port": ({}, True),
}
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


# ------------------------------------------------------------------ the flood (own process)


async def _flood(base: str, conns: int, seconds: float) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    rng = random.Random(7)

    async def one(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop:
            ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            t0 = time.perf_counter()
            try:
                page = await client.get(f"{base}/review/login", headers={"X-Forwarded-For": ip})
                match = _TOKEN.search(page.text)
                form = {
                    "username": f"guess-{rng.randrange(10**9)}",
                    "password": "not the password",
                    "csrf_token": match.group(1) if match else "",
                }
                resp = await client.post(
                    f"{base}/review/login", data=form, headers={"X-Forwarded-For": ip}
                )
                statuses[str(resp.status_code)] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [httpx.AsyncClient(timeout=30, limits=limits) for _ in range(conns)]
    try:
        await asyncio.gather(*(one(c) for c in clients))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    return {
        "attempts": sum(statuses.values()),
        "attempts_per_s": round(sum(statuses.values()) / seconds, 1),
        "statuses": dict(statuses),
        "attempt_p50_ms": round(percentile(latencies, 50) * 1000, 1),
    }


def _flood_child(base: str, conns: int, seconds: float, queue: Any) -> None:
    queue.put(asyncio.run(_flood(base, conns, seconds)))


# ------------------------------------------------------------------ the EHR (this process)


def _hook_load(
    base: str, body: bytes, path: str, minter: JwtMinter, seconds: float
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    stop = time.monotonic() + seconds
    with httpx.Client(timeout=60) as client:
        while time.monotonic() < stop:
            headers = {
                "Authorization": f"Bearer {minter(path)}",
                "Content-Type": "application/json",
            }
            t0 = time.perf_counter()
            resp = client.post(base + path, content=body, headers=headers)
            latencies.append(time.perf_counter() - t0)
            statuses[resp.status_code] += 1
    ms = [x * 1000 for x in latencies]
    return {
        "calls": len(ms),
        "statuses": {str(k): v for k, v in statuses.items()},
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1) if ms else 0.0,
    }


def run_config(
    name: str, args: argparse.Namespace, work: Path, body: bytes, path: str
) -> list[dict[str, Any]]:
    from cds.testing.issuer import TestIssuer

    env_extra, separate = CONFIGS[name]
    issuer = TestIssuer(work / f"issuer-{name}")
    port = free_port()
    console_port = free_port() if separate else None
    db_url = sqlite_db(work / name) if args.db == "sqlite" else args.pg_url
    env = {
        "CDS_DATABASE_URL": db_url,
        "CDS_AUTH": "jwt",
        "CDS_TRUSTED_ISSUERS": str(issuer.issuers_path),
        "CDS_SESSION_SECRET": "bench-session-secret-0123456789abcdef",
        "CDS_SECURE_COOKIES": "false",
        **env_extra,
    }
    extra = ["--console-port", str(console_port)] if console_port else []
    server = start_cds(
        port=port, workers=1, env=env, log=work / f"cds-{name}.log", extra_args=extra
    )
    base = server.base
    console = f"http://127.0.0.1:{console_port}" if console_port else base
    minter = JwtMinter.of(issuer, base)
    rows = []
    try:
        if console_port:  # wait for the console process too
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{console}/review/login", timeout=2)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.3)
        _hook_load(base, body, path, minter, 2.0)  # warm-up, not counted
        for phase in ("idle", "flood"):
            queue: Any = mp.get_context("spawn").Queue()
            child = None
            if phase == "flood":
                child = mp.get_context("spawn").Process(
                    target=_flood_child, args=(console, args.conns, args.duration + 2, queue)
                )
                child.start()
                time.sleep(2.0)  # let the flood build up before measuring
            cpu0 = tree_cpu_seconds(server.proc.pid)
            hook = _hook_load(base, body, path, minter, args.duration)
            cpu = tree_cpu_seconds(server.proc.pid) - cpu0
            flood = queue.get(timeout=args.duration + 120) if child else None
            if child:
                child.join(30)
            row = {
                "config": name,
                "phase": phase,
                "conns": args.conns if child else 0,
                "hook": hook,
                "flood": flood,
                "server_cpu_s": round(cpu, 2),
                "loadavg_1m": round(os.getloadavg()[0], 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        server.stop()
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| config | phase | hook calls | p50 ms | p95 ms | p99 ms | max ms | "
        "sign-in attempts/s | sign-in answers |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        h, f = r["hook"], r["flood"] or {}
        answers = ", ".join(f"{k}: {v}" for k, v in sorted((f.get("statuses") or {}).items()))
        lines.append(
            f"| {r['config']} | {r['phase']} | {h['calls']} | {h['p50_ms']} | {h['p95_ms']} | "
            f"{h['p99_ms']} | {h['max_ms']} | {f.get('attempts_per_s', '')} | {answers} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    ap.add_argument("--conns", type=int, default=64, help="flood connections")
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--out", type=Path, default=RESULTS / "signin-flood.json")
    args = ap.parse_args()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"cds-signin-flood-{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    path = f"/cds-services/{SERVICE['order-sign-typical']}"
    body = ensure_requests(work / "requests", wall_clock=True)["order-sign-typical"].read_bytes()
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        if args.db == "postgresql":
            from bench.common import migrate, pg_db

            args.pg_url = stack.enter_context(pg_db())
            migrate(args.pg_url)
        for name in args.configs.split(","):
            rows += run_config(name, args, work, body, path)
    report = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}}
    report["rows"] = rows
    report["finished"] = datetime.now(UTC).isoformat()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
