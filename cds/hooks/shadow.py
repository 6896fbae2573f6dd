"""Shadow packs and kept requests: the work a hook call leaves for after its answer.

Two settings ask for it. ``CDS_KEEP_REQUESTS_DAYS`` keeps each call's input (what
``cds rules replay`` runs again); ``CDS_SHADOW_PACKS=<pack>=/path/to/pack`` evaluates a
pack version on every live call as if it replaced the live one, stores its would-be cards
apart (``shadow_evaluations``, ``shadow_cards``), and never returns them to the EHR.

**Execution model: a background queue to a separate process (the sidecar).** The hook
route computes and audits its answer exactly as without shadow packs; then
:func:`hand_off` puts a message on a bounded queue (``CDS_SIDECAR_QUEUE``) without
waiting, and returns. Nothing else is added to the live path:

- the live answer is never waited on the shadow: a full queue drops the message (counted
  and logged, at most once a minute); the measured cost of the hand-off is in the README;
- the shadow runs in another process, at a lower CPU priority (``nice`` 10), so it shares
  neither the GIL nor the engine lock (durable_rules runs under one process-wide lock)
  with the hook API, and a crash in it (the C engine can take a process down) cannot take
  the service with it: a watchdog restarts it, with back-off;
- every error of a shadow evaluation is contained there: the evaluation is stored with
  status ``error`` (the exception type only: a message may quote patient data) or
  ``timeout`` (the ``CDS_EVALUATION_BUDGET_SECONDS`` budget applies to it too);
- a shadow pack that does not compile is logged and skipped; the live packs never see it.

Calls queued when the service stops, or dropped by a full queue, are neither kept nor
shadowed: both features are for review, and a review over most calls is still a review.

The sidecar writes with its own database connection, one short transaction per batch of
calls (at most ``BATCH_MAX``), and deletes kept requests past their retention hourly. An
app given its own sessionmaker (tests, ``cds evaluate``) runs the same worker on a thread
instead of a process.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cds.hooks.compare import SAME, CardView, compare, views_of
from cds.hooks.stored import StoredCall, evaluate_stored, substitute

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from cds.engine.pack import CompiledPack
    from cds.engine.registry import PackRegistry
    from cds.hooks.request import HookCall
    from cds.settings import Settings

__all__ = [
    "Sidecar",
    "SidecarConfig",
    "SidecarWorker",
    "hand_off",
    "purge_kept_requests",
    "start_sidecar",
]

log = logging.getLogger("cds.shadow")
STOP = "stop"
BATCH_MAX = 50  # calls per sidecar transaction
PURGE_EVERY_S = 3600.0
RELOAD_EVERY_S = 10.0  # at most this often when the live packs' digests change


@dataclass(frozen=True)
class SidecarConfig:
    """What the sidecar needs (picklable: it crosses to the sidecar process)."""

    database_url: str
    rules_dir: str
    pack_ids: tuple[str, ...]
    profile: str
    shadow: tuple[tuple[str, str], ...]  # (pack id, folder)
    keep_days: int
    budget_seconds: float
    purge_every_s: float = PURGE_EVERY_S

    @classmethod
    def from_settings(cls, settings: Settings) -> SidecarConfig | None:
        """None when neither setting asks for a sidecar."""
        shadow = settings.shadow_pack_dirs
        if settings.keep_requests_days <= 0 and not shadow:
            return None
        from cds.paths import data_dir

        return cls(
            database_url=settings.database_url,
            rules_dir=str(settings.rules_dir or data_dir("rules")),
            pack_ids=tuple(settings.pack_ids),
            profile=settings.profile,
            shadow=tuple((pid, str(folder)) for pid, folder in shadow.items()),
            keep_days=settings.keep_requests_days,
            budget_seconds=settings.evaluation_budget_seconds,
        )


# ---- the live side ------------------------------------------------------------------------


def hand_off(
    sidecar: Sidecar | None,
    *,
    invocation_id: str,
    service_id: str,
    call: HookCall,
    resources: list[dict[str, Any]],
    received: datetime,
    packs: Sequence[CompiledPack],
    cards: Sequence[Any],
    unavailable: Sequence[str] = (),
) -> None:
    """Queue a hook call for the sidecar, after its answer is computed and audited.

    Never raises and never waits: the hook call's answer does not depend on it.
    """
    if sidecar is None:
        return
    try:
        sidecar.submit(
            {
                "invocation_id": invocation_id,
                "service_id": service_id,
                "hook": call.hook,
                "hook_instance": call.hook_instance,
                "received_at": received,
                "context": call.context,
                "resources": resources,
                "unavailable": sorted(unavailable),
                "live_packs": [(p.id, p.version, p.digest) for p in packs],
                "live": [v.as_dict() for v in views_of(cards)],
            }
        )
    except Exception as exc:  # noqa: BLE001 - the live answer matters more than this
        sidecar.failed += 1
        log.warning("could not queue a call for the sidecar (%s)", type(exc).__name__)


class Sidecar:
    """The live side of the sidecar: a bounded queue, the worker process and its watchdog."""

    def __init__(
        self,
        config: SidecarConfig,
        *,
        queue_size: int = 1000,
        maker: sessionmaker[Session] | None = None,
        registry: PackRegistry | None = None,
    ) -> None:
        self.config = config
        self.queue_size = queue_size
        self.mode = "thread" if maker is not None else "process"
        self._maker = maker
        self._registry = registry
        self.submitted = self.dropped = self.failed = self.restarts = 0
        self._queue: Any = None
        self._proc: Any = None
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._stopping = threading.Event()
        self._dropped_logged_at = 0.0
        self.worker: SidecarWorker | None = None  # thread mode: the worker itself

    # lifecycle

    def start(self) -> Sidecar:
        if self.mode == "thread":
            assert self._maker is not None
            self._queue = queue.Queue(self.queue_size)
            self.worker = SidecarWorker(self.config, self._maker, registry=self._registry)
            self._thread = threading.Thread(
                target=serve, args=(self.worker, self._queue.get), name="cds-sidecar", daemon=True
            )
            self._thread.start()
            return self
        self._spawn()
        self._watchdog = threading.Thread(
            target=self._watch, name="cds-sidecar-watchdog", daemon=True
        )
        self._watchdog.start()
        return self

    def _spawn(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # never fork a process with threads
        q = ctx.Queue(self.queue_size)
        proc = ctx.Process(
            target=process_main,
            args=(self.config, q, os.getpid()),
            name="cds-sidecar",
            daemon=True,
        )
        proc.start()
        self._queue, self._proc = q, proc

    def _watch(self) -> None:
        """Restart a sidecar process that died (back-off 1 s doubling to 60 s; reset once
        a process has lived a minute)."""
        backoff, started = 1.0, time.monotonic()
        while not self._stopping.wait(1.0):
            proc = self._proc
            if proc.is_alive():
                if time.monotonic() - started > 60:
                    backoff = 1.0
                continue
            log.error(
                "sidecar process exited (status %s); restarting in %.0f s (queued calls lost)",
                proc.exitcode,
                backoff,
            )
            if self._stopping.wait(backoff):
                return
            old = self._queue
            self._spawn()
            started = time.monotonic()
            self.restarts += 1
            backoff = min(backoff * 2, 60.0)
            with contextlib.suppress(Exception):
                old.close()
                old.cancel_join_thread()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def alive(self) -> bool:
        if self.mode == "thread":
            return self._thread is not None and self._thread.is_alive()
        return self._proc is not None and self._proc.is_alive()

    def submit(self, message: dict[str, Any]) -> bool:
        """Queue ``message``; False (dropped, counted) when the queue is full."""
        q = self._queue
        if q is None or self._stopping.is_set():
            return False
        try:
            q.put_nowait(message)
        except queue.Full:
            self.dropped += 1
            now = time.monotonic()
            if now - self._dropped_logged_at > 60:
                self._dropped_logged_at = now
                log.warning(
                    "sidecar queue full (%d calls): %d calls so far neither kept nor shadowed",
                    self.queue_size,
                    self.dropped,
                )
            return False
        self.submitted += 1
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Let the worker finish what is queued (up to ``timeout``), then stop it."""
        self._stopping.set()
        q = self._queue
        if self.mode == "thread":
            with contextlib.suppress(queue.Full):
                q.put(STOP, timeout=timeout)
            if self._thread is not None:
                self._thread.join(timeout)
            return
        proc = self._proc
        if proc is None:
            return
        with contextlib.suppress(Exception):
            q.put(STOP, timeout=timeout)
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join(2)
        with contextlib.suppress(Exception):
            q.close()
            q.cancel_join_thread()
        if self._watchdog is not None:
            self._watchdog.join(2)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Thread mode (tests): wait until everything queued has been handled."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.worker is not None and self.worker.handled >= self.submitted:
                return True
            time.sleep(0.01)
        return False


def purge_kept_requests(maker: sessionmaker[Session], keep_days: int) -> int:
    """Delete kept requests past ``keep_days`` (0: all); never raises (start-up, hourly)."""
    from cds.store.requests import purge_requests

    try:
        n = purge_requests(maker=maker, keep_days=keep_days, now=datetime.now(UTC))
    except Exception as exc:  # noqa: BLE001 - retention must never stop the service
        log.warning("could not purge kept hook requests (%s)", type(exc).__name__)
        return 0
    if n:
        log.info("purged %d kept hook requests (CDS_KEEP_REQUESTS_DAYS=%d)", n, keep_days)
    return n


def start_sidecar(
    settings: Settings,
    maker: sessionmaker[Session],
    *,
    in_process: bool,
    registry: PackRegistry | None = None,
) -> Sidecar | None:
    """At start-up: purge kept requests past retention, then start the sidecar if asked."""
    purge_kept_requests(maker, settings.keep_requests_days)
    if settings.console == "only":
        return None  # no hook calls here
    config = SidecarConfig.from_settings(settings)
    if config is None:
        return None
    sidecar = Sidecar(
        config,
        queue_size=settings.sidecar_queue,
        maker=maker if in_process else None,
        registry=registry if in_process else None,
    )
    sidecar.start()
    log.info(
        "sidecar started (%s): keep requests %d days, shadow packs: %s",
        sidecar.mode,
        config.keep_days,
        ", ".join(f"{p}={d}" for p, d in config.shadow) or "none",
    )
    return sidecar


# ---- the sidecar side ---------------------------------------------------------------------


@dataclass
class _Outcome:
    evaluation: dict[str, Any]
    cards: list[dict[str, Any]] = field(default_factory=list)


class SidecarWorker:
    """Keeps requests and evaluates the shadow packs, a batch of calls at a time."""

    def __init__(
        self,
        config: SidecarConfig,
        maker: sessionmaker[Session],
        *,
        registry: PackRegistry | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        from cds.engine.registry import PackRegistry

        self.config = config
        self.maker = maker
        self.clock = clock
        self.handled = 0
        self.lost = 0  # calls whose rows could not be written
        self._own_registry = registry is None
        if registry is None:
            registry = PackRegistry(
                rules_dir=Path(config.rules_dir),
                pack_ids=list(config.pack_ids),
                profile=config.profile,
            )
            registry.load()
        self.live = registry
        self.shadow: dict[str, CompiledPack] = {}
        self.shadow_errors: dict[str, str] = {}
        self._load_shadow()
        self._purged_at = time.monotonic() if config.keep_days >= 0 else 0.0
        self._reloaded_at = 0.0

    def _load_shadow(self) -> None:
        from cds.engine.pack import compile_pack
        from cds.errors import PackError

        self.shadow, self.shadow_errors = {}, {}
        for pid, folder in self.config.shadow:
            try:
                pack = compile_pack(Path(folder), self.config.profile, self.live.runtime)
                if pack.id != pid:
                    raise PackError(f"the pack in {folder} is {pack.id!r}, not {pid!r}")
            except Exception as exc:  # noqa: BLE001 - a broken shadow never touches the live
                self.shadow_errors[pid] = str(exc)[:500]
                log.error("shadow pack %s (%s) not loaded: %s", pid, folder, str(exc)[:500])
                continue
            self.shadow[pid] = pack
            log.info("shadow pack %s %s loaded from %s", pid, pack.version, folder)
            live = next((p for p in self.live.packs() if p.id == pid), None)
            if live is not None and live.version == pack.version and live.digest != pack.digest:
                log.warning(
                    "shadow pack %s has the live version %s but other content: give the "
                    "shadow copy its own version, or the rules page cannot tell them apart",
                    pid,
                    pack.version,
                )

    def _sync_live(self, live_packs: list[tuple[str, str, str]]) -> None:
        """Reload when the service reloaded its packs (their digests differ from ours)."""
        mine = {p.id: p.digest for p in self.live.packs()}
        if all(mine.get(pid) == digest for pid, _ver, digest in live_packs):
            return
        now = time.monotonic()
        if not self._own_registry or now - self._reloaded_at < RELOAD_EVERY_S:
            return
        self._reloaded_at = now
        self.live.reload()
        self._load_shadow()  # a reload (SIGHUP, cds rules reload) reloads the shadows too

    def handle(self, batch: list[dict[str, Any]]) -> None:
        """Keep and shadow-evaluate ``batch``; write it all in one transaction."""
        from cds.store.requests import KeptRequest, keep_requests
        from cds.store.shadow import record_shadow

        kept: list[KeptRequest] = []
        outcomes: list[_Outcome] = []
        for msg in batch:
            try:
                call = StoredCall(
                    invocation_id=str(msg["invocation_id"]),
                    service_id=str(msg["service_id"]),
                    hook=str(msg["hook"]),
                    hook_instance=str(msg["hook_instance"]),
                    received_at=msg["received_at"],
                    context=msg["context"],
                    resources=msg["resources"],
                    unavailable=list(msg.get("unavailable") or []),
                )
                if self.config.keep_days > 0:
                    kept.append(
                        KeptRequest(
                            invocation_id=call.invocation_id,
                            received_at=call.received_at,
                            service_id=call.service_id,
                            hook=call.hook,
                            pack_version="+".join(v for _p, v, _d in msg["live_packs"]) or None,
                            doc=call.to_doc(),
                        )
                    )
                if self.shadow:
                    self._sync_live(msg["live_packs"])
                    live_views = [CardView.from_dict(d) for d in msg["live"]]
                    live_versions = {p: v for p, v, _d in msg["live_packs"]}
                    for pack in self.shadow.values():
                        outcomes.append(self._shadow(call, pack, live_views, live_versions))
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the rest
                log.error("sidecar could not handle a call (%s)", type(exc).__name__)
        try:
            from cds.store.db import write_lock

            with write_lock(self.maker), self.maker.begin() as s:
                keep_requests(session=s, requests=kept, stored_at=self.clock())
                for o in outcomes:
                    record_shadow(session=s, evaluation=o.evaluation, cards=o.cards)
        except Exception as exc:  # noqa: BLE001 - the store may be down: count, go on
            self.lost += len(batch)
            log.error(
                "sidecar could not store %d calls (%s); they are neither kept nor shadowed",
                len(batch),
                type(exc).__name__,
            )
        self.handled += len(batch)

    def _shadow(
        self,
        call: StoredCall,
        pack: CompiledPack,
        live_views: list[CardView],
        live_versions: dict[str, str],
    ) -> _Outcome:
        from cds.budget import time_budget
        from cds.errors import EvaluationTimeout

        t0 = time.perf_counter()
        status, error = "ok", None
        changes = []
        cards_json: dict[str, dict[str, Any]] = {}
        try:
            budget = self.config.budget_seconds
            with time_budget(time.monotonic() + budget, budget):
                result = evaluate_stored(call, substitute(self.live.packs(), pack))
            cards_json = {str(c.card["uuid"]): c.card for c in result.cards}
            changes = compare(live_views, views_of(result.cards))
        except EvaluationTimeout:
            status, error = "timeout", "EvaluationTimeout"
        except Exception as exc:  # noqa: BLE001 - contained: stored as an error
            status, error = "error", type(exc).__name__[:128]
            # No message: it may quote patient data. The type and the code location suffice.
            log.error(
                "shadow pack %s %s failed on invocation %s (%s):\n%s",
                pack.id,
                pack.version,
                call.invocation_id,
                error,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
        rows = []
        for ch in changes:
            view = ch.after or ch.before
            assert view is not None
            if view.pack_id != pack.id and ch.kind == SAME:
                continue  # another pack's card, unchanged
            a, b = ch.after, ch.before
            rows.append(
                {
                    "created_at": call.received_at,
                    "pack_id": pack.id,
                    "pack_version": pack.version,
                    "change": ch.kind,
                    "rule_id": ch.rule_id[:128],
                    "order_id": view.order_id[:512],
                    "category": view.category[:32],
                    "grp": view.group[:128],
                    "card_uuid": a.card_id if a else None,
                    "indicator": a.indicator if a else None,
                    "primary_rule": a.primary_rule if a else None,
                    "rule_ids": list(a.rule_ids) if a else None,
                    "summary": a.summary[:200] if a else None,
                    "card_json": cards_json.get(a.card_id) if a else None,
                    "live_card_id": b.card_id or None if b else None,
                    "live_indicator": b.indicator if b else None,
                    "live_rule": b.primary_rule if b else None,
                }
            )
        mine = [r for r in rows if r["pack_id"] == pack.id]
        evaluation = {
            "invocation_id": call.invocation_id,
            "received_at": call.received_at,
            "evaluated_at": self.clock(),
            "service_id": call.service_id[:64],
            "hook": call.hook[:32],
            "pack_id": pack.id,
            "pack_version": pack.version,
            "pack_digest": pack.digest[:64],
            "live_version": live_versions.get(pack.id),
            "status": status,
            "error": error,
            "duration_ms": round((time.perf_counter() - t0) * 1000, 3),
            "card_count": sum(1 for c in changes if c.after and c.after.pack_id == pack.id),
            "live_card_count": sum(1 for v in live_views if v.pack_id == pack.id),
            "changed": sum(1 for c in changes if c.kind != SAME),
        }
        return _Outcome(evaluation, mine if status == "ok" else [])

    def idle(self) -> None:
        """Between batches: delete kept requests past retention (hourly)."""
        now = time.monotonic()
        if now - self._purged_at >= self.config.purge_every_s:
            self._purged_at = now
            purge_kept_requests(self.maker, self.config.keep_days)


def serve(
    worker: SidecarWorker,
    get: Callable[..., Any],
    *,
    alive: Callable[[], bool] = lambda: True,
) -> None:
    """The sidecar loop: batches of queued calls until ``STOP`` (or ``alive()`` is False)."""
    while True:
        try:
            msg = get(timeout=1.0)
        except queue.Empty:
            if not alive():
                return
            worker.idle()
            continue
        if msg == STOP:
            return
        batch = [msg]
        stop = False
        while len(batch) < BATCH_MAX:
            try:
                nxt = get(timeout=0)
            except queue.Empty:
                break
            if nxt == STOP:
                stop = True
                break
            batch.append(nxt)
        worker.handle(batch)
        if stop:
            return
        worker.idle()


def process_main(config: SidecarConfig, q: Any, parent_pid: int) -> None:
    """The sidecar process: lower CPU priority, its own database engine, the loop."""
    with contextlib.suppress(OSError):
        os.nice(10)
    # The parent stops us (a STOP message after the queue, then SIGKILL past a timeout), or
    # dies (noticed within a second): Ctrl-C or a SIGTERM to the process group must not
    # kill the sidecar before the service has stopped sending it calls.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from cds.store.db import make_engine, make_sessionmaker

    engine = make_engine(config.database_url)
    try:
        worker = SidecarWorker(config, make_sessionmaker(engine))
        serve(worker, q.get, alive=lambda: os.getppid() == parent_pid)
    finally:
        engine.dispose()
