"""Latency and throughput over real HTTP: ``cds serve`` against the bare FastAPI baseline.

For each database (SQLite file, PostgreSQL), worker count and auth mode (``CDS_AUTH=off``
and ``CDS_AUTH=jwt`` with a TestIssuer), a fresh migrated database and a fresh ``cds serve``
(uvicorn, production settings) on 127.0.0.1; wrk (one thread, a separate process) drives
1, 16 and 64 connections with the typical order-sign request, then the other kinds at 16.
The bare endpoint (``bench/bare_app.py``) takes the same load in the same run, so the
report gives ours/bare. JWT: tokens are minted ahead (one per request, each with its own
``jti``) and cycled by ``bench/wrk_hook.lua``; the count comes from the ``off`` run of the
same configuration (jwt is never faster), times 1.5.

Two server-side figures: the handler's own time, read back from the audit store
(``Invocation.duration_ms``: from the handler's start to the audit write; it leaves out the
JWT check, which runs before, and the write itself, whose timing the service measures after
the row is saved), and the server's CPU time per request (all its processes, from /proc),
which noisy neighbours on the machine disturb far less than throughput.

With several workers the replay cache is Redis (``CDS_REDIS_URL``), as a deployment must.

    python -m bench.http_bench [--duration 10] [--db sqlite,postgresql] [--workers 1,2]
        [--conns 1,16,64] [--scale-workers 1,2,4] [--out bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    HERE,
    RESULTS,
    Server,
    ensure_requests,
    free_port,
    have,
    machine,
    migrate,
    percentile,
    pg_db,
    sqlite_db,
    start_bare,
    start_cds,
    tree_cpu_seconds,
)
from bench.gen_requests import SERVICE
from bench.loadgen import Target, run_load

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
LUA = HERE / "wrk_hook.lua"


def mint_tokens(issuer: Any, aud: str, n: int, path: Path) -> Path:
    path.write_text("\n".join(issuer.token(aud, lifetime=1800) for _ in range(n)) + "\n")
    return path


def run_wrk(
    port: int, path: str, body: Path, conns: int, seconds: float, tokens: Path | None
) -> dict[str, Any]:
    env = dict(
        os.environ,
        BENCH_BODY=str(body),
        BENCH_PATH=path,
        BENCH_TOKENS=str(tokens or ""),
        BENCH_THREADS="1",
    )
    cmd = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "30s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}{path}",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")
    r = json.loads(line[5:])
    secs = r["duration_us"] / 1e6
    errors = r["errors_connect"] + r["errors_read"] + r["errors_write"] + r["errors_timeout"]
    return {
        "requests": r["requests"],
        "rps": round(r["requests"] / secs, 1),
        "p50_ms": r["p50_us"] / 1000,
        "p95_ms": r["p95_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "max_ms": r["max_us"] / 1000,
        "non2xx": r["non2xx"],
        "socket_errors": errors,
        "tokens_exhausted": r["tokens_exhausted"],
    }


def _loadgen_child(
    port: int, path: str, body: bytes, conns: int, seconds: float, tokens: list[str] | None
) -> dict[str, Any]:
    it = iter(tokens) if tokens else None
    token_for = (lambda _p: next(it)) if it is not None else None  # noqa: E731
    return run_load(
        port, [Target(path, body)], connections=conns, seconds=seconds, token_for=token_for
    )


def run_python(
    port: int, path: str, body: Path, conns: int, seconds: float, tokens: Path | None
) -> dict[str, Any]:
    toks = tokens.read_text().split() if tokens else None
    with ProcessPoolExecutor(1) as pool:
        r = pool.submit(
            _loadgen_child, port, path, body.read_bytes(), conns, seconds, toks
        ).result()
    return {
        "requests": r["requests"],
        "rps": r["rps"],
        "p50_ms": r["p50_ms"],
        "p95_ms": r["p95_ms"],
        "p99_ms": r["p99_ms"],
        "max_ms": r["max_ms"],
        "non2xx": r["non2xx"],
        "socket_errors": sum(r["errors"].values()),
        "tokens_exhausted": 0,
    }


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.paths = ensure_requests(work / "requests", wall_clock=True)
        self.rows: list[dict[str, Any]] = []
        self.tool = "wrk" if have("wrk") and not args.python_loadgen else "python-loadgen"
        from cds.testing.issuer import TestIssuer

        self.issuer = TestIssuer(work / "issuer")
        self.est_rps: dict[tuple[Any, ...], float] = {}

    def load(
        self, server: Server, kind: str, conns: int, seconds: float, auth: str, est: float | None
    ) -> dict[str, Any]:
        path = f"/cds-services/{SERVICE[kind]}"
        tokens = None
        if auth == "jwt":
            n = int((est or 200) * seconds * 1.5) + 100
            tokens = mint_tokens(self.issuer, server.base + path, n, self.work / "tokens.txt")
        runner = run_wrk if self.tool == "wrk" else run_python
        return runner(server.port, path, self.paths[kind], conns, seconds, tokens)

    def measure(
        self, server: Server, label: dict[str, Any], kind: str, conns: int, db_url: str | None
    ) -> dict[str, Any]:
        auth = label.get("auth", "off")
        key = (label.get("target"), label.get("db"), label.get("workers"), kind, conns)
        est = self.est_rps.get(key)
        self.load(server, kind, conns, self.args.warmup, auth, est)  # warm-up, not counted
        started = datetime.now(UTC)
        cpu0 = tree_cpu_seconds(server.proc.pid)
        r = self.load(server, kind, conns, self.args.duration, auth, est)
        cpu = tree_cpu_seconds(server.proc.pid) - cpu0
        r["server_cpu_ms_per_req"] = round(cpu * 1000 / max(1, r["requests"]), 2)
        if auth == "off":
            self.est_rps[key] = r["rps"]
        row = {
            **label,
            "kind": kind,
            "conns": conns,
            **r,
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        if db_url:
            row.update(server_side(db_url, started))
        self.rows.append(row)
        print(json.dumps(row), flush=True)
        return row

    def cds(self, db: str, workers: int, auth: str) -> None:
        with database(db, self.work) as url:
            env = {"CDS_DATABASE_URL": url, "CDS_AUTH": auth, "CDS_PACKS": "baclofen"}
            if auth == "jwt":
                env["CDS_TRUSTED_ISSUERS"] = str(self.issuer.issuers_path)
            if workers > 1 or self.args.redis_always:
                env["CDS_REDIS_URL"] = REDIS_URL
            server = start_cds(
                port=free_port(),
                workers=workers,
                env=env,
                log=self.work / f"cds-{db}-{workers}-{auth}.log",
            )
            label = {
                "target": "cds",
                "db": db,
                "workers": workers,
                "auth": auth,
                "replay_cache": "redis" if "CDS_REDIS_URL" in env else "memory",
            }
            try:
                for conns in self.args.conns:
                    self.measure(server, label, "order-sign-typical", conns, url)
                if workers in self.args.kind_workers:
                    for kind in ("order-select", "patient-view", "order-sign-heavy"):
                        self.measure(server, label, kind, 16, url)
            finally:
                server.stop()

    def bare(self, workers: int) -> None:
        server = start_bare(
            port=free_port(), workers=workers, log=self.work / f"bare-{workers}.log"
        )
        try:
            for conns in self.args.conns:
                self.measure(
                    server,
                    {
                        "target": "bare",
                        "db": "-",
                        "workers": workers,
                        "auth": "off",
                        "replay_cache": "-",
                    },
                    "order-sign-typical",
                    conns,
                    None,
                )
        finally:
            server.stop()


@contextmanager
def database(db: str, work: Path) -> Iterator[str]:
    if db == "postgresql":
        with pg_db() as url:
            migrate(url)
            yield url
    else:
        url = sqlite_db(work / "sqlite")
        migrate(url)
        yield url


def server_side(db_url: str, since: datetime) -> dict[str, Any]:
    """Handler time of each invocation since ``since`` (duration_ms, + timings.store if any)."""
    from sqlalchemy import select

    from cds.store.db import make_engine, make_sessionmaker
    from cds.store.models import Invocation

    engine = make_engine(db_url)
    try:
        with make_sessionmaker(engine)() as s:
            rows = s.execute(
                select(Invocation.received_at, Invocation.duration_ms, Invocation.timings)
            ).all()
    finally:
        engine.dispose()
    vals = []
    for at, dur, timings in rows:
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        if at >= since:
            vals.append(float(dur) + float((timings or {}).get("store", 0.0)))
    return {
        "server_n": len(vals),
        "server_p50_ms": round(percentile(vals, 50), 2),
        "server_p99_ms": round(percentile(vals, 99), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--auth", default="off,jwt")
    ap.add_argument("--conns", default="1,16,64")
    ap.add_argument(
        "--kind-workers",
        default="1",
        help="worker counts for which the other request kinds run (at 16)",
    )
    ap.add_argument(
        "--scale-workers",
        default="4",
        help="extra worker counts (PostgreSQL, 64 connections, typical)",
    )
    ap.add_argument("--no-bare", action="store_true")
    ap.add_argument("--redis-always", action="store_true")
    ap.add_argument("--python-loadgen", action="store_true", help="not wrk")
    ap.add_argument("--out", type=Path, default=RESULTS / "http.json")
    args = ap.parse_args()
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    args.conns, args.kind_workers = ints(args.conns), ints(args.kind_workers)
    workers, scale = ints(args.workers), ints(args.scale_workers)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cds-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        for w in workers:
            if not args.no_bare:
                bench.bare(w)
            for db in args.db.split(","):
                for auth in args.auth.split(","):
                    bench.cds(db, w, auth)
        if scale:
            saved = args.conns, args.kind_workers
            args.conns, args.kind_workers = [64], []
            for w in scale:
                if not args.no_bare:
                    bench.bare(w)
                for auth in args.auth.split(","):
                    bench.cds("postgresql" if "postgresql" in args.db else "sqlite", w, auth)
            args.conns, args.kind_workers = saved
        report = {
            "machine": machine(),
            "tool": bench.tool,
            "duration_s": args.duration,
            "command": "python -m bench.http_bench " + " ".join(sys.argv[1:]),
            "elapsed_s": round(time.monotonic() - t0),
            "rows": bench.rows,
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    from bench.report import http_tables

    print(http_tables(report))


if __name__ == "__main__":
    main()
