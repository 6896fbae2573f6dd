"""Where every millisecond of a hook call's server CPU goes, on real uvicorn.

``cds serve``'s own uvicorn configuration (``cds.cli._run_uvicorn``) runs an instrumented
copy of the app (``app`` below, a uvicorn factory): every stage of a call is a *region*
whose CPU time is read with the thread's own CPU clock (``CLOCK_THREAD_CPUTIME_ID``) on
entry and exit, charged exclusively to the innermost region of that thread (a region
inside ``recheck`` is charged to ``recheck``). Coroutines are timed step by step, so their
time waiting for a thread or the network is not counted and concurrent calls do not
pollute each other. The server's CPU per request comes from ``/proc`` as in
``http_bench`` (the whole process), and per thread (``/proc/self/task``): the event-loop
thread, the worker threads the calls ran on, and the others. What no region covers is
shown as a residual per thread (uvloop's own work on the loop thread; the wake-ups of the
thread hop on the worker threads), so the table says how much is measured, not inferred.

Regions (per request, ms of CPU):

==================  ===================================================================
uvicorn             HTTP parsing (``data_received``), ``receive``/``send`` (the response
                    bytes and their write), ``run_asgi`` and uvicorn's proxy-headers layer
asgi                Starlette/FastAPI (middleware stack, routing, dependencies) and our
                    middlewares: everything of the app outside the handler
handler             the hook handler's own code on the event loop (outside the stages)
hop                 the thread hop, loop side: ``anyio.to_thread.run_sync`` and the
                    result hand-back callback
jwt                 ``TokenVerifier.verify`` (ES384 signature, claims, replay cache)
json                decoding the body
validate            CDS Hooks request validation and the Patient's FHIR check
prefetch            prefetch resolution (templates, flattening; no fetch here)
facts, engine       the clinical facts and the durable_rules session of the request
recheck             the suggestion re-check (and the "as offered" check): all of its
                    facts, engine and planning
cards               the pipeline outside those: findings -> cards, planning suggestions
audit               the audit record and its commit
encode              the response body
thread              the worker-thread side of the call outside the stages (the budget
                    checks, the audit record's fields)
gc                  the garbage collector (``gc.callbacks``), whichever stage triggered it
==================  ===================================================================

    python -m bench.account [--duration 10] [--db sqlite,postgresql] [--auth off,jwt]
        [--conns 1,16] [--repeat 3] [--out bench/results/account.json]

Each configuration starts a fresh server and database; bare and an uninstrumented
``cds serve`` run in the same pass, so the table shows what the instrumentation costs.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from pathlib import Path
from typing import Any

_clock = time.thread_time_ns

#: A region whose nested regions are charged to it.
ABSORB = frozenset({"recheck", "audit", "jwt", "gc"})
LOOP_REGIONS = ("uvicorn", "asgi", "handler", "hop", "json", "validate", "prefetch", "encode")
STAGE_ORDER = (
    "uvicorn",
    "asgi",
    "handler",
    "hop",
    "jwt",
    "json",
    "validate",
    "prefetch",
    "facts",
    "engine",
    "cards",
    "recheck",
    "audit",
    "encode",
    "thread",
    "gc",
)


# ----------------------------------------------------------------- the server side


class _Data:
    """One thread's counters (read by ``snapshot`` from the loop thread)."""

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.last = 0
        self.totals: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        self.reads = 0
        self.tid = threading.get_native_id()


class _Local(threading.local):
    def __init__(self) -> None:
        self.d = _Data()
        with _REG_LOCK:
            _ALL.append(self.d)


_REG_LOCK = threading.Lock()
_ALL: list[_Data] = []
_TL = _Local()
_WORKER_TIDS: set[int] = set()
_LOOP_TID: list[int] = []


def _enter(name: str) -> None:
    now = _clock()
    tl = _TL.d
    st = tl.stack
    if st:
        top = st[-1]
        tl.totals[top] = tl.totals.get(top, 0) + now - tl.last
        if top in ABSORB:
            name = top
    st.append(name)
    tl.counts[name] = tl.counts.get(name, 0) + 1
    tl.reads += 1
    tl.last = now


def _exit() -> None:
    now = _clock()
    tl = _TL.d
    name = tl.stack.pop()
    tl.totals[name] = tl.totals.get(name, 0) + now - tl.last
    tl.reads += 1
    tl.last = now


def region(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        _enter(name)
        try:
            return fn(*args, **kwargs)
        finally:
            _exit()

    timed.__wrapped__ = fn  # type: ignore[attr-defined]
    return timed


class Timed:
    """An awaitable timing each step of ``coro`` as ``name`` on the thread that runs it."""

    __slots__ = ("coro", "name")

    def __init__(self, name: str, coro: Awaitable[Any]) -> None:
        self.name, self.coro = name, coro

    def __await__(self) -> Generator[Any, Any, Any]:
        it = self.coro.__await__()
        value: Any = None
        error: BaseException | None = None
        while True:
            _enter(self.name)
            try:
                y = it.throw(error) if error is not None else it.send(value)
            except StopIteration as stop:
                _exit()
                return stop.value
            except BaseException:
                _exit()
                raise
            _exit()
            try:
                value, error = (yield y), None
            except BaseException as exc:  # noqa: BLE001 - handed to the coroutine
                value, error = None, exc


def async_region(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        return Timed(name, fn(*args, **kwargs))

    timed.__wrapped__ = fn  # type: ignore[attr-defined]
    return timed


def coro_region(name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """As ``async_region``, for a caller that needs a real coroutine (``create_task``)."""

    async def timed(*args: Any, **kwargs: Any) -> Any:
        return await Timed(name, fn(*args, **kwargs))

    timed.__wrapped__ = fn  # type: ignore[attr-defined]
    return timed


def _named_region(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    return region(name, fn)


def _patch(obj: Any, attr: str, wrap: Callable[[Any], Any]) -> None:
    """Wrap ``obj.attr`` if it exists (the list below outlives refactors of the app)."""
    if hasattr(obj, attr):
        setattr(obj, attr, wrap(getattr(obj, attr)))


def install() -> None:
    """Put the regions in place (before the app is built)."""
    import anyio.to_thread
    from anyio._backends import _asyncio as anyio_asyncio
    from uvicorn.protocols.http import h11_impl, httptools_impl

    import cds.engine.pack as pack
    import cds.hooks.pipeline as pipeline
    import cds.store.audit as audit
    import cds.web.errors as errors
    import cds.web.hooks_api as api

    for mod in (h11_impl, httptools_impl):
        proto = getattr(mod, "H11Protocol", None) or mod.HttpToolsProtocol
        _patch(proto, "data_received", lambda f: region("uvicorn", f))
        cycle = mod.RequestResponseCycle
        for attr in ("send", "receive"):
            _patch(cycle, attr, lambda f: async_region("uvicorn", f))
        _patch(cycle, "run_asgi", lambda f: coro_region("uvicorn", f))
    _patch(anyio_asyncio.WorkerThread, "_report_result", lambda f: region("hop", f))

    orig_run_sync = anyio.to_thread.run_sync

    def run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def in_thread(*a: Any) -> Any:
            _WORKER_TIDS.add(threading.get_native_id())
            _enter("thread")
            try:
                return func(*a)
            finally:
                _exit()

        return Timed("hop", orig_run_sync(in_thread, *args, **kwargs))

    anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]

    for attr, name in (
        ("decode_body", "json"),
        ("decode_json", "json"),
        ("parse_hook_call", "validate"),
        ("require_patient", "validate"),
        ("evaluate", "cards"),
        ("issued_cards", "audit"),
        ("save_invocation", "audit"),
        ("audit_invocation", "audit"),
        ("encode_cards", "encode"),
    ):
        _patch(api, attr, functools.partial(_named_region, name))
    _patch(api, "resolve_prefetch", lambda f: async_region("prefetch", f))
    _patch(errors.SafeJSONResponse, "render", lambda f: region("encode", f))
    _patch(pipeline, "extract_facts", lambda f: region("facts", f))
    _patch(pipeline, "_apply_offers", lambda f: region("recheck", f))
    _patch(pipeline._Planner, "_trial", lambda f: region("recheck", f))
    _patch(pipeline, "trial_findings", lambda f: region("recheck", f))
    _patch(pack.CompiledPack, "evaluate", lambda f: region("engine", f))
    if hasattr(audit, "AuditWriter"):
        _patch(audit.AuditWriter, "save", lambda f: region("audit", f))

    def collecting(phase: str, info: dict[str, Any]) -> None:  # the garbage collector
        if phase == "start":
            _enter("gc")
        else:
            _exit()

    gc.callbacks.append(collecting)


class _Accounting:
    """The ASGI app uvicorn calls: the real app, timed as ``asgi``; ``/__account`` answers
    the counters (GET) without touching the app."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state = app.state  # lifespan and tests reach the real app's state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not _LOOP_TID:
            _LOOP_TID.append(threading.get_native_id())
        if scope["type"] == "http" and scope["path"] == "/__account":
            body = json.dumps(snapshot()).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await Timed("asgi", self.app(scope, receive, send))


def _thread_cpu_ns() -> dict[int, int]:
    tick = 1e9 / os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            f = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = int((int(f[11]) + int(f[12])) * tick)
        except (OSError, IndexError, ValueError):
            continue
    return out


def _clock_cost_ns() -> float:
    n = 20_000
    t0 = time.perf_counter_ns()
    for _ in range(n):
        _clock()
    return (time.perf_counter_ns() - t0) / n


_CLOCK_NS: list[float] = []


def snapshot() -> dict[str, Any]:
    if not _CLOCK_NS:
        _CLOCK_NS.append(_clock_cost_ns())
    totals: dict[str, dict[str, int]] = {"loop": {}, "worker": {}, "other": {}}
    counts: dict[str, int] = {}
    reads = 0
    loop = _LOOP_TID[0] if _LOOP_TID else -1
    with _REG_LOCK:
        locals_ = list(_ALL)
    for tl in locals_:
        kind = "loop" if tl.tid == loop else "worker" if tl.tid in _WORKER_TIDS else "other"
        for k, v in list(tl.totals.items()):
            totals[kind][k] = totals[kind].get(k, 0) + v
        for k, v in list(tl.counts.items()):
            counts[k] = counts.get(k, 0) + v
        reads += tl.reads
    threads: dict[str, int] = {"loop": 0, "worker": 0, "other": 0}
    for tid, ns in _thread_cpu_ns().items():
        kind = "loop" if tid == loop else "worker" if tid in _WORKER_TIDS else "other"
        threads[kind] += ns
    return {
        "regions": totals,
        "counts": counts,
        "clock_reads": reads,
        "clock_ns": _CLOCK_NS[0],
        "threads": threads,
        "process_ns": int(time.process_time_ns()),
    }


def _routes(routes: Any) -> Any:
    """Every route, through included routers (FastAPI nests them)."""
    for r in routes:
        if hasattr(r, "dependant"):
            yield r
        inner = getattr(r, "original_router", None) or getattr(r, "router", None)
        if inner is not None and hasattr(inner, "routes"):
            yield from _routes(inner.routes)


def app() -> Any:
    """uvicorn factory: the production app, instrumented."""
    import cds.web.factory as factory
    from cds.settings import Settings
    from cds.web.app import create_app

    install()
    real = create_app(Settings())
    if hasattr(factory, "tune_gc"):  # absent from an older checkout (--before)
        factory.tune_gc()
    for route in _routes(real.routes):  # the hook handler's own code, apart from FastAPI's
        if getattr(route, "path", "") == "/cds-services/{service_id}":
            # FastAPI builds the served route from ``endpoint`` at the first request
            # (reading its signature through ``__wrapped__``)
            timed = functools.wraps(route.endpoint)(coro_region("handler", route.endpoint))
            route.endpoint = route.dependant.call = timed
    if real.state.verifier is not None:
        v = real.state.verifier
        v.verify = region("jwt", v.verify)
    return _Accounting(real)


def serve(port: int) -> None:
    """``cds serve``'s own uvicorn set-up (``cds.cli._run_uvicorn``), its factory swapped
    for the instrumented one."""
    import cds.web.factory as factory
    from cds.cli import _run_uvicorn
    from cds.settings import Settings

    factory.app = app  # type: ignore[assignment]
    _run_uvicorn(Settings(), host="127.0.0.1", port=port, workers=1)


def mixed_checkout(before: Path, work: Path) -> Path:
    """A folder whose ``cds`` (and packs, migrations) are ``before``'s and whose ``bench``
    is this one: today's instrumentation over an older version of the service."""
    mix = work / "before"
    mix.mkdir()
    for entry in before.iterdir():
        if entry.name not in ("bench", ".venv", ".git"):
            (mix / entry.name).symlink_to(entry.resolve())
    (mix / "bench").symlink_to(Path(__file__).resolve().parent)
    return mix


# ----------------------------------------------------------------- the driver


def _delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    regions: dict[str, dict[str, int]] = {}
    for kind in ("loop", "worker", "other"):
        ra, rb = a["regions"][kind], b["regions"][kind]
        regions[kind] = {k: rb.get(k, 0) - ra.get(k, 0) for k in rb}
    return {
        "regions": regions,
        "counts": {k: v - a["counts"].get(k, 0) for k, v in b["counts"].items()},
        "clock_reads": b["clock_reads"] - a["clock_reads"],
        "clock_ns": b["clock_ns"],
        "threads": {k: b["threads"][k] - a["threads"].get(k, 0) for k in b["threads"]},
        "process_ns": b["process_ns"] - a["process_ns"],
    }


def breakdown(d: dict[str, Any], requests: int, proc_cpu_s: float) -> dict[str, Any]:
    """ms of CPU per request for each region and residual; the share measured."""
    per = lambda ns: ns / 1e6 / max(1, requests)  # noqa: E731
    rows: dict[str, float] = {}
    for kind in ("loop", "worker", "other"):
        for k, v in d["regions"][kind].items():
            rows[k] = rows.get(k, 0.0) + per(v)
    measured = sum(rows.values())
    loop_in = sum(d["regions"]["loop"].values())
    worker_in = sum(d["regions"]["worker"].values())
    total = proc_cpu_s * 1000 / max(1, requests)  # /proc, as http_bench reports it
    window = per(d["process_ns"])  # the same window as the regions (the share's base)
    residual = {
        "loop thread outside regions (uvloop, epoll, task switching)": per(
            d["threads"]["loop"] - loop_in
        ),
        "worker threads outside regions (thread hop: wake-up, queue)": per(
            d["threads"]["worker"] - worker_in
        ),
        "other threads": per(d["threads"]["other"] - sum(d["regions"]["other"].values())),
    }
    instrumentation = d["clock_reads"] * d["clock_ns"] / 1e6 / max(1, requests)
    return {
        "requests": requests,
        "server_cpu_ms_per_req": round(total, 3),
        "stages_ms": {k: round(rows.get(k, 0.0), 4) for k in STAGE_ORDER if k in rows}
        | {k: round(v, 4) for k, v in rows.items() if k not in STAGE_ORDER},
        "residual_ms": {k: round(v, 4) for k, v in residual.items()},
        "measured_ms": round(measured, 3),
        "process_cpu_ms_per_req": round(window, 3),
        "measured_share": round(measured / window, 4) if window else 0.0,
        "instrumentation_ms": round(instrumentation, 4),
        "clock_reads_per_req": round(d["clock_reads"] / max(1, requests), 1),
        "calls_per_req": {
            k: round(v / max(1, requests), 2) for k, v in sorted(d["counts"].items())
        },
    }


def _get(base: str) -> dict[str, Any]:
    import httpx

    r = httpx.get(base + "/__account", timeout=10)
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


def start_account(port: int, env: dict[str, str], log: Path, repo: Path | None = None) -> Any:
    from bench.common import REPO, _start, python

    if env.get("CDS_AUTH") == "jwt":
        env = {"CDS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", **env}
    cmd = [python(), "-m", "bench.account", "--serve", str(port)]
    return _start(cmd, port, env, log, "/cds-services", None, 90, 1, repo=repo or REPO)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.common import free_port, machine, start_bare, start_cds, tree_cpu_seconds
    from bench.http_bench import REDIS_URL, Bench, database
    from bench.report import _valid  # noqa: F401 - same validity rule as the HTTP report

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cds-account-") as tmp:
        work = Path(tmp)
        bench = Bench(
            argparse.Namespace(
                python_loadgen=args.python_loadgen, warmup=args.warmup, duration=args.duration
            ),
            work,
        )

        def measure(server: Any, label: dict[str, Any], conns: int, instrumented: bool) -> None:
            auth = label["auth"]
            key = (label["target"], label["db"], 1, args.kind, conns)
            est = bench.est_rps.get(key) or bench.est_rps.get(
                ("cds", label["db"], 1, args.kind, conns)
            )
            bench.load(server, args.kind, conns, args.warmup, auth, est)
            before = _get(server.base) if instrumented else None
            cpu0 = tree_cpu_seconds(server.proc.pid)
            r = bench.load(server, args.kind, conns, args.duration, auth, est)
            cpu = tree_cpu_seconds(server.proc.pid) - cpu0
            after = _get(server.base) if instrumented else None
            if auth == "off":
                bench.est_rps[key] = r["rps"]
            row = {
                **label,
                "kind": args.kind,
                "conns": conns,
                **r,
                "server_cpu_ms_per_req": round(cpu * 1000 / max(1, r["requests"]), 3),
                "loadavg_1m": round(os.getloadavg()[0], 2),
            }
            if before is not None and after is not None:
                row["account"] = breakdown(_delta(before, after), r["requests"], cpu)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "account"}), flush=True)
            if "account" in row:
                print(table([row]), flush=True)

        from bench.common import REPO

        variants = [("cds (instrumented)", True, REPO)]
        if args.plain:
            variants.append(("cds", False, REPO))
        if args.before:
            mix = mixed_checkout(args.before, work)
            variants.insert(0, ("before (instrumented)", True, mix))
            if args.plain:
                variants.insert(1, ("before", False, mix))
        for rep in range(args.repeat):
            if not args.no_bare:
                server = start_bare(port=free_port(), workers=1, log=work / "bare.log")
                try:
                    for conns in args.conns:
                        measure(
                            server,
                            {"target": "bare", "db": "-", "auth": "off", "rep": rep},
                            conns,
                            False,
                        )
                finally:
                    server.stop()
            for db in args.db:
                for auth in args.auth:
                    for name, instrumented, repo in variants:
                        with database(db, work) as url:
                            env = {
                                "CDS_DATABASE_URL": url,
                                "CDS_AUTH": auth,
                                "CDS_PACKS": "baclofen",
                                "CDS_CONSOLE": "off",
                            }
                            if auth == "jwt":
                                env["CDS_TRUSTED_ISSUERS"] = str(bench.issuer.issuers_path)
                            if args.redis:
                                env["CDS_REDIS_URL"] = REDIS_URL
                            port = free_port()
                            log = work / f"cds-{db}-{auth}-{name}.log".replace(" ", "_")
                            server = (
                                start_account(port, env, log, repo)
                                if instrumented
                                else start_cds(port=port, workers=1, env=env, log=log, repo=repo)
                            )
                            label = {"target": name, "db": db, "auth": auth, "rep": rep}
                            try:
                                for conns in args.conns:
                                    measure(server, label, conns, instrumented)
                            finally:
                                server.stop()
        return {
            "machine": machine(),
            "tool": bench.tool,
            "duration_s": args.duration,
            "command": "python -m bench.account " + " ".join(sys.argv[1:]),
            "rows": rows,
        }


def _median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (target, db, auth, conns): the median over repeats of each figure."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["target"], r["db"], r["auth"], r["conns"]), []).append(r)
    out = []
    for rs in groups.values():
        m = dict(rs[0])
        for k in ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_req"):
            m[k] = statistics.median(r[k] for r in rs)
        m["reps"] = len(rs)
        accs = [r["account"] for r in rs if "account" in r]
        if accs:
            a = dict(accs[0])
            a["stages_ms"] = {
                k: statistics.median(x["stages_ms"].get(k, 0.0) for x in accs)
                for k in accs[0]["stages_ms"]
            }
            a["residual_ms"] = {
                k: statistics.median(x["residual_ms"][k] for x in accs)
                for k in accs[0]["residual_ms"]
            }
            for k in (
                "server_cpu_ms_per_req",
                "process_cpu_ms_per_req",
                "measured_ms",
                "measured_share",
            ):
                a[k] = statistics.median(x[k] for x in accs)
            a["instrumentation_ms"] = statistics.median(x["instrumentation_ms"] for x in accs)
            m["account"] = a
        out.append(m)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    acc = [r for r in rows if "account" in r]
    if not acc:
        return ""
    head = "| ms of server CPU per request | " + " | ".join(
        f"{r['target'].split(' ')[0]} {r['db']} {r['auth']} {r['conns']}c" for r in acc
    )
    lines = [head + " |", "|---|" + "---:|" * len(acc)]
    stages = list(dict.fromkeys(k for r in acc for k in r["account"]["stages_ms"]))
    for k in stages:
        lines.append(
            f"| {k} | "
            + " | ".join(f"{r['account']['stages_ms'].get(k, 0):.3f}" for r in acc)
            + " |"
        )
    lines.append(
        "| **measured stages** | "
        + " | ".join(f"**{r['account']['measured_ms']:.3f}**" for r in acc)
        + " |"
    )
    for k in acc[0]["account"]["residual_ms"]:
        lines.append(
            f"| residual: {k} | "
            + " | ".join(f"{r['account']['residual_ms'][k]:.3f}" for r in acc)
            + " |"
        )
    lines.append(
        "| **server CPU (/proc)** | "
        + " | ".join(f"**{r['account']['server_cpu_ms_per_req']:.3f}**" for r in acc)
        + " |"
    )
    lines.append(
        "| process CPU in the accounting window | "
        + " | ".join(f"{r['account']['process_cpu_ms_per_req']:.3f}" for r in acc)
        + " |"
    )
    lines.append(
        "| measured share | "
        + " | ".join(f"{r['account']['measured_share'] * 100:.1f}%" for r in acc)
        + " |"
    )
    lines.append(
        "| of which the clocks themselves | "
        + " | ".join(f"{r['account']['instrumentation_ms']:.3f}" for r in acc)
        + " |"
    )
    return "\n".join(lines)


def summary(report: dict[str, Any]) -> str:
    rows = _median_rows(report["rows"])
    out = [table(rows), ""]
    out.append(
        "| target | db | auth | conns | req/s | p50 ms | p99 ms | server CPU ms/req | reps |"
    )
    out.append("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        out.append(
            f"| {r['target']} | {r['db']} | {r['auth']} | {r['conns']} | {r['rps']:.0f} | "
            f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['server_cpu_ms_per_req']:.3f} | "
            f"{r['reps']} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--auth", default="off,jwt")
    ap.add_argument("--conns", default="1,16")
    ap.add_argument("--kind", default="order-sign-typical")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-bare", action="store_true")
    ap.add_argument("--plain", action="store_true", help="also an uninstrumented cds serve")
    ap.add_argument("--redis", action="store_true", help="JWT replay cache in Redis")
    ap.add_argument("--python-loadgen", action="store_true")
    ap.add_argument(
        "--before",
        type=Path,
        help="another checkout (e.g. a git worktree of main) measured alternately in the same run",
    )
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless every stage was seen and the stages cover 90%% of the CPU (CI)",
    )
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    args.db = [x for x in args.db.split(",") if x]
    args.auth = [x for x in args.auth.split(",") if x]
    args.conns = [int(x) for x in args.conns.split(",") if x]
    report = run(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    print(summary(report))
    if args.check:
        problems = check(report)
        for p in problems:
            print(f"bench.account: {p}", file=sys.stderr)
        sys.exit(1 if problems else 0)


#: The stages every typical order-sign goes through (``jwt`` only with auth on).
REQUIRED = (
    "uvicorn",
    "asgi",
    "handler",
    "hop",
    "json",
    "validate",
    "prefetch",
    "facts",
    "engine",
    "cards",
    "recheck",
    "audit",
    "encode",
)


def check(report: dict[str, Any]) -> list[str]:
    """What makes the accounting wrong, not slow: a stage no region saw any more (a
    function renamed under the instrumentation), or less than 90% of the CPU measured."""
    out = []
    for r in report["rows"]:
        acc = r.get("account")
        if acc is None:
            continue
        where = f"{r['target']} {r['db']} {r['auth']} {r['conns']}c"
        missing = [k for k in REQUIRED if not acc["calls_per_req"].get(k)]
        if r["auth"] == "jwt" and not acc["calls_per_req"].get("jwt"):
            missing.append("jwt")
        if missing:
            out.append(f"{where}: no time measured in {', '.join(missing)}")
        if acc["measured_share"] < 0.9:
            out.append(f"{where}: only {acc['measured_share']:.0%} of the CPU measured")
    return out


if __name__ == "__main__":
    main()
