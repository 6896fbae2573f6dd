"""Soak: N minutes at 16 connections against ``cds serve``; errors must be 0, RSS flat.

The request mix (typical order-sign, order-select, patient-view, and one heavy request in
every 20) runs through a real ``cds serve`` on 127.0.0.1 with JWT auth (a fresh token per
request, minted in the load generator's own process). The server's RSS (all its processes)
is sampled every few seconds; "flat" compares the mean of the last quarter with the mean
of the second quarter (after warm-up). Exit status 1 when there were errors or the growth
exceeds ``--max-rss-growth`` percent.

    python -m bench.soak --minutes 30               # the report's run
    python -m bench.soak --seconds 30               # CI (bench/smoke.sh)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS,
    ensure_requests,
    free_port,
    machine,
    migrate,
    pg_db,
    sqlite_db,
    start_cds,
    tree_rss_kib,
)
from bench.gen_requests import SERVICE
from bench.loadgen import JwtMinter, Target, run_load

MIX = (
    ["order-sign-typical"] * 8 + ["order-select"] * 6 + ["patient-view"] * 5 + ["order-sign-heavy"]
)


def _load_child(
    port: int, targets: list[Target], conns: int, seconds: float, minter: JwtMinter | None, out: Any
) -> None:
    out.put(run_load(port, targets, connections=conns, seconds=seconds, token_for=minter))


def soak(
    url: str,
    seconds: float,
    conns: int,
    workers: int,
    auth: str,
    work: Path,
    sample_every: float,
    out: Path,
) -> dict[str, Any]:
    from cds.testing.issuer import TestIssuer

    paths = ensure_requests(work / "requests", wall_clock=True)
    issuer = TestIssuer(work / "issuer")
    env = {"CDS_DATABASE_URL": url, "CDS_AUTH": auth}
    if auth == "jwt":
        env["CDS_TRUSTED_ISSUERS"] = str(issuer.issuers_path)
    server = start_cds(port=free_port(), workers=workers, env=env, log=work / "soak.log")
    targets = [Target(f"/cds-services/{SERVICE[k]}", paths[k].read_bytes()) for k in MIX]
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            samples.append((round(time.monotonic() - t0, 1), tree_rss_kib(server.proc.pid)))
            stop.wait(sample_every)

    try:
        minter = JwtMinter.of(issuer, server.base) if auth == "jwt" else None
        queue: Any = mp.get_context("spawn").Queue()
        child = mp.get_context("spawn").Process(
            target=_load_child, args=(server.port, targets, conns, seconds, minter, queue)
        )
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        child.start()
        result = queue.get(timeout=seconds + 300)
        child.join(30)
        stop.set()
        sampler.join(5)
        alive = server.proc.poll() is None
    finally:
        stop.set()
        server.stop()
        keep = out / "soak-server.log"
        keep.parent.mkdir(parents=True, exist_ok=True)
        keep.write_bytes(server.log.read_bytes()[-200_000:])  # the server's own account
    rss = [kib for _, kib in samples]
    q = max(1, len(rss) // 4)
    second_q = sum(rss[q : 2 * q]) / max(1, len(rss[q : 2 * q]))
    last_q = sum(rss[-q:]) / q
    growth = (last_q - second_q) / second_q * 100 if second_q else 0.0
    errors = result["non2xx"] + sum(result["errors"].values()) + (0 if alive else 1)
    return {
        "machine": machine(),
        "seconds": seconds,
        "conns": conns,
        "workers": workers,
        "auth": auth,
        "db": url.split(":")[0],
        "load": result,
        "errors": errors,
        "server_alive": alive,
        "rss_mib_start": round(rss[0] / 1024, 1) if rss else 0,
        "rss_mib_q2": round(second_q / 1024, 1),
        "rss_mib_end": round(last_q / 1024, 1),
        "rss_growth_pct": round(growth, 2),
        "rss_samples": samples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--auth", choices=("jwt", "off"), default="jwt")
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--max-rss-growth", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    seconds = args.minutes * 60 if args.minutes else args.seconds
    every = max(1.0, min(10.0, seconds / 60))
    with tempfile.TemporaryDirectory(prefix="cds-soak-") as tmp:
        work = Path(tmp)
        if args.db == "postgresql":
            with pg_db() as url:
                migrate(url)
                report = soak(
                    url, seconds, args.conns, args.workers, args.auth, work, every, args.out
                )
        else:
            url = sqlite_db(work / "db")
            migrate(url)
            report = soak(url, seconds, args.conns, args.workers, args.auth, work, every, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"soak-{args.db}-{int(seconds)}s.json").write_text(json.dumps(report, indent=2))
    load = report["load"]
    print(
        f"soak {seconds:.0f} s, {args.conns} connections, {args.workers} worker(s), "
        f"auth={args.auth}, {args.db}: {load['requests']} requests ({load['rps']}/s), "
        f"p50 {load['p50_ms']} ms, p99 {load['p99_ms']} ms; errors {report['errors']} "
        f"(statuses {load['statuses']}, socket {load['errors']}); server RSS "
        f"{report['rss_mib_start']} -> {report['rss_mib_q2']} (2nd quarter) -> "
        f"{report['rss_mib_end']} MiB (last quarter): {report['rss_growth_pct']:+.2f}%"
    )
    if load["bad_samples"]:
        print("bad answers:", *load["bad_samples"], sep="\n  ")
    if report["errors"] or report["rss_growth_pct"] > args.max_rss_growth:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
