"""Why a second worker adds little on this machine: every process's CPU during the load.

``cds serve --workers N`` (PostgreSQL, auth off) takes the typical order-sign from wrk for
``--duration`` seconds at each connection count; meanwhile the CPU time of each process
that shares the two cores is read from ``/proc``: the server (each worker apart), wrk
(``getrusage`` of the waited child), the PostgreSQL backends serving the benchmark's
database (their pids from ``pg_stat_activity``) and the whole machine (``/proc/stat``),
so what the neighbours took is the rest. With the cores' capacity known, the table says
how much CPU each party used per second and per request, and what throughput the
server's own CPU per request would allow on the cores it actually got.

    python -m bench.scaling [--workers 1,2] [--conns 16,64] [--duration 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS,
    children,
    cpu_seconds,
    free_port,
    machine,
    migrate,
    pg_db,
    start_cds,
)
from bench.gen_requests import SERVICE

TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of all cores since boot, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]
    return (sum(f) - idle) / TICK, sum(f) / TICK


def pg_backends(url: str) -> list[int]:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as c:
        rows = c.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,))
        return [int(r[0]) for r in rows]


def pids_cpu(pids: list[int]) -> float:
    total = 0.0
    for p in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += cpu_seconds(p)
    return total


def run_cell(server: Any, url: str, body: Path, conns: int, seconds: float) -> dict[str, Any]:
    from bench.http_bench import run_wrk

    path = f"/cds-services/{SERVICE['order-sign-typical']}"
    run_wrk(server.port, path, body, conns, 2, None)  # warm-up; pool connections open
    workers = children(server.proc.pid)
    backends = pg_backends(url)
    srv = {p: cpu_seconds(p) for p in [server.proc.pid, *workers]}
    pg0 = pids_cpu(backends)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, all0 = machine_busy_seconds()
    t0 = time.monotonic()
    r = run_wrk(server.port, path, body, conns, seconds, None)
    wall = time.monotonic() - t0
    busy1, all1 = machine_busy_seconds()
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    per_worker = {p: cpu_seconds(p) - c for p, c in srv.items()}
    pg = pids_cpu(backends) - pg0
    wrk = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    server_cpu = sum(per_worker.values())
    busy = busy1 - busy0
    cores = (all1 - all0) / wall  # capacity seen (2 on this machine)
    n = max(1, r["requests"])
    return {
        "conns": conns,
        "rps": r["rps"],
        "p99_ms": r["p99_ms"],
        "cores": round(cores, 2),
        "cores_busy": round(busy / wall, 2),
        "server_cores": round(server_cpu / wall, 2),
        "per_worker_cores": [round(v / wall, 2) for v in per_worker.values()],
        "wrk_cores": round(wrk / wall, 2),
        "postgres_cores": round(pg / wall, 2),
        "others_cores": round((busy - server_cpu - wrk - pg) / wall, 2),
        "server_ms_per_req": round(server_cpu * 1000 / n, 2),
        "wrk_ms_per_req": round(wrk * 1000 / n, 3),
        "postgres_ms_per_req": round(pg * 1000 / n, 3),
        # what the server's own CPU per request allows on every core of the machine
        "rps_if_all_cores": round(cores * 1000 / (server_cpu * 1000 / n), 0),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "non2xx": r["non2xx"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--conns", default="16,64")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS / "scaling.json")
    args = ap.parse_args()
    from bench.common import ensure_requests

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cds-scaling-") as tmp:
        body = ensure_requests(Path(tmp) / "requests", wall_clock=True)["order-sign-typical"]
        for rep in range(args.repeat):
            for w in [int(x) for x in args.workers.split(",")]:
                with pg_db() as url:
                    migrate(url)
                    env = {"CDS_DATABASE_URL": url, "CDS_AUTH": "off", "CDS_CONSOLE": "off"}
                    server = start_cds(
                        port=free_port(), workers=w, env=env, log=Path(tmp) / f"cds-{w}.log"
                    )
                    try:
                        for c in [int(x) for x in args.conns.split(",")]:
                            row = {
                                "workers": w,
                                "rep": rep,
                                **run_cell(server, url, body, c, args.duration),
                            }
                            rows.append(row)
                            print(json.dumps(row), flush=True)
                    finally:
                        server.stop()
    report = {
        "machine": machine(),
        "command": "python -m bench.scaling " + " ".join(sys.argv[1:]),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(table(rows))


def table(rows: list[dict[str, Any]]) -> str:
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["workers"], r["conns"]), []).append(r)
    cols = (
        "rps",
        "p99_ms",
        "server_cores",
        "wrk_cores",
        "postgres_cores",
        "others_cores",
        "server_ms_per_req",
        "rps_if_all_cores",
    )
    out = [
        "| workers | conns | req/s | p99 ms | server cores | wrk cores | PostgreSQL cores "
        "| neighbours' cores | server CPU ms/req | req/s if the server had both cores |",
        "|---:|---:|" + "---:|" * len(cols),
    ]
    for (w, c), rs in sorted(groups.items()):
        vals = [statistics.median(r[k] for r in rs) for k in cols]
        out.append(f"| {w} | {c} | " + " | ".join(f"{v:g}" for v in vals) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
