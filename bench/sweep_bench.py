"""Sweep throughput and memory: patients per second per core, both engines, N patients.

    python -m bench.sweep_bench --patients 10000,100000 --engines duckdb,spark

For each size a synthetic export is generated once (``cds.testing.population``: every
patient-view scenario, ~21% of patients with a card; cached under ``--cache``), then each
engine runs ``run_sweep`` in a fresh process against a fresh SQLite store, at the fixed
instant 2026-11-20T12:00:00Z. Measured from outside that process: wall time, CPU time of
the whole process tree (the pool workers, or the JVM and its Python workers: the larger of
the reaped children's rusage and the per-process CPU sampled from /proc, since the JVM is
not always reaped by the driver), and the peak of the summed RSS of the tree
(sampled every 0.2 s from /proc). Nothing is asserted on timing; ``--max-seconds`` only
stops a run that would not finish.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


_TICK = os.sysconf("SC_CLK_TCK")


def _tree(root: int) -> dict[int, tuple[int, float]]:
    """pid -> (VmRSS KiB, CPU seconds so far) for ``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    info: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/status") as fh:
                kib = next((int(x.split()[1]) for x in fh if x.startswith("VmRSS:")), 0)
        except (OSError, IndexError, StopIteration):
            continue
        ppid = int(fields[1])
        cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
        children.setdefault(ppid, []).append(int(entry))
        info[int(entry)] = (kib, cpu)
    out: dict[int, tuple[int, float]] = {}
    stack = [root]
    while stack:
        pid = stack.pop()
        if pid in info:
            out[pid] = info[pid]
        stack.extend(children.get(pid, []))
    return out


def export_for(n: int, cache: Path) -> Path:
    from cds.testing.population import generate, write_export

    folder = cache / f"export-{n}"
    done = folder / ".complete"
    if not done.exists():
        t0 = time.monotonic()
        counts = write_export(folder, generate(n, now=NOW, seed=42))
        done.write_text(json.dumps(counts))
        print(f"generated {n:,} patients in {time.monotonic() - t0:.0f} s: {counts}", flush=True)
    return folder


def measure(engine: str, export: Path, workers: int, max_seconds: float) -> dict[str, Any]:
    """Run one sweep in a child process; wall, tree CPU and peak tree RSS."""
    db = export.parent / f"bench-{engine}-{export.name}.db"
    db.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.sweep_bench", "--run", engine, "--export", str(export),
           "--db", f"sqlite:///{db}", "--workers", str(workers)]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    peak = 0
    cpu_seen: dict[int, float] = {}  # the JVM is not always reaped: sample its CPU too
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            tree = _tree(proc.pid)
            peak = max(peak, sum(kib for kib, _ in tree.values()))
            for pid, (_, cpu) in tree.items():
                cpu_seen[pid] = max(cpu_seen.get(pid, 0.0), cpu)
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, _ = proc.communicate(timeout=max_seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        stop.set()
        return {"engine": engine, "error": f"did not finish in {max_seconds:.0f} s"}
    stop.set()
    sampler.join()
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu = max(reaped, sum(cpu_seen.values()))
    db.unlink(missing_ok=True)
    if proc.returncode != 0:
        return {"engine": engine, "error": f"exit {proc.returncode}"}
    report = json.loads(out.strip().splitlines()[-1])
    n = report["patients"]
    return {
        "engine": engine,
        "patients": n,
        "workers": workers,
        "wall_s": round(wall, 1),
        "sweep_s": round(report["duration_s"], 1),
        "cpu_s": round(cpu, 1),
        "patients_per_s": round(n / wall, 1),
        "patients_per_s_per_core": round(n / wall / workers, 1),
        "patients_per_cpu_s": round(n / cpu, 1) if cpu else None,
        "peak_rss_mib": round(peak / 1024, 1),
        "alerts": report["alerts_new"],
        "resources": report["resources"],
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def run_one(engine: str, export: Path, db_url: str, workers: int) -> None:
    """The child: one sweep, its report as the last stdout line (JSON)."""
    from cds.batch.run import SweepOptions, run_sweep
    from cds.store.db import make_engine, make_sessionmaker, upgrade

    upgrade(db_url)
    maker = make_sessionmaker(make_engine(db_url))
    opts = SweepOptions(
        export_dir=export,
        rules_dir=REPO / "rules",
        pack_ids=["baclofen"],
        profile="US",
        as_of=NOW,
        engine=engine,
        workers=workers,
        batch_size=500,
        spark_master=f"local[{workers}]",
    )
    report = run_sweep(opts, maker=maker)
    if engine == "spark":
        from cds.batch.spark import stop_sessions

        stop_sessions()  # the JVM exits now, so its CPU time is counted
    print(
        json.dumps(
            {
                "patients": report.patients,
                "alerts_new": report.alerts_new,
                "resources": report.resources,
                "duration_s": report.duration_s,
            }
        ),
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patients", default="10000", help="comma-separated sizes")
    ap.add_argument("--engines", default="duckdb,spark")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/cds-sweep-bench"))
    ap.add_argument("--out", type=Path, help="append results (JSON lines)")
    ap.add_argument("--max-seconds", type=float, default=3600)
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--export", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run:
        run_one(args.run, args.export, args.db, args.workers)
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    failed = False
    for n in (int(x) for x in args.patients.split(",")):
        export = export_for(n, args.cache)
        for engine in args.engines.split(","):
            result = measure(engine, export, args.workers, args.max_seconds)
            result["size"] = n
            result["at"] = datetime.now(UTC).isoformat(timespec="seconds")
            print(json.dumps(result), flush=True)
            failed = failed or "error" in result
            if args.out:
                with args.out.open("a") as fh:
                    fh.write(json.dumps(result) + "\n")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
