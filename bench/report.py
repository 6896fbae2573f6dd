"""Markdown tables from the benchmark JSON (``bench/results/*.json``).

python -m bench.report bench/results/http.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _bare(rows: list[dict[str, Any]], workers: int, conns: int) -> dict[str, Any] | None:
    return next(
        (
            r
            for r in rows
            if r["target"] == "bare" and r["workers"] == workers and r["conns"] == conns
        ),
        None,
    )


def _valid(r: dict[str, Any]) -> str:
    bad = r.get("non2xx", 0) + r.get("socket_errors", 0) + r.get("tokens_exhausted", 0)
    return "" if not bad else f" ⚠{bad}"


def http_tables(report: dict[str, Any]) -> str:
    rows = report["rows"]
    m = report["machine"]
    out = [
        f"{m['date']}, {m['nproc']} cores, {m['cpu']}, Python {m['python']}; load: "
        f"{report['tool']}, {report['duration_s']:g} s per cell; `{report['command']}`",
        "",
    ]
    out += [
        "| target | db | workers | auth (replay cache) | conns | req/s | p50 ms | p95 ms "
        "| p99 ms | handler p50 / p99 ms | server CPU ms/req | ours/bare |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    typical = [r for r in rows if r["kind"] == "order-sign-typical"]
    for r in sorted(
        typical, key=lambda r: (r["workers"], r["target"] != "bare", r["db"], r["auth"], r["conns"])
    ):
        bare = _bare(rows, r["workers"], r["conns"])
        ratio = (
            f"{r['rps'] / bare['rps'] * 100:.1f}%"
            if bare and r["target"] == "cds" and bare["rps"]
            else ""
        )
        if ratio and bare and bare.get("server_cpu_ms_per_req") and r.get("server_cpu_ms_per_req"):
            ratio += (
                f" (CPU {bare['server_cpu_ms_per_req'] / r['server_cpu_ms_per_req'] * 100:.1f}%)"
            )
        server = (
            f"{r['server_p50_ms']:.1f} / {r['server_p99_ms']:.1f}" if "server_p50_ms" in r else ""
        )
        auth = r["auth"] + (f" ({r['replay_cache']})" if r["auth"] == "jwt" else "")
        out.append(
            f"| {r['target']} | {r['db']} | {r['workers']} | {auth} | {r['conns']} | "
            f"{r['rps']:.0f}{_valid(r)} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {server} | {r.get('server_cpu_ms_per_req', 0):.2f} | {ratio} |"
        )
    others = [r for r in rows if r["kind"] != "order-sign-typical"]
    if others:
        out += [
            "",
            "Other request kinds, 16 connections:",
            "",
            "| kind | db | workers | auth | req/s | p50 ms | p95 ms | p99 ms "
            "| handler p50 / p99 ms | server CPU ms/req |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sorted(others, key=lambda r: (r["kind"], r["db"], r["workers"], r["auth"])):
            out.append(
                f"| {r['kind']} | {r['db']} | {r['workers']} | {r['auth']} | "
                f"{r['rps']:.0f}{_valid(r)} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                f"{r['p99_ms']:.1f} | {r.get('server_p50_ms', 0):.1f} / "
                f"{r.get('server_p99_ms', 0):.1f} | {r.get('server_cpu_ms_per_req', 0):.2f} |"
            )
    return "\n".join(out)


def main() -> None:
    for p in sys.argv[1:]:
        print(http_tables(json.loads(Path(p).read_text())))


if __name__ == "__main__":
    main()
