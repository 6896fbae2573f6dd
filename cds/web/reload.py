"""Pack reload across workers and instances: a Redis channel, or SIGHUP without Redis.

``cds rules reload`` calls :func:`publish_reload`; every worker of every instance runs a
:class:`RedisReloadListener` (a daemon thread) subscribed to :data:`CHANNEL` and, on a
message, calls ``registry.reload()``, which compiles the new pack versions first and keeps
serving the old one wherever the new one is broken. The listener logs the results and never
lets an error escape: a Redis outage is retried with backoff, and once subscribed again it
reloads once in case a message went by while it was away.

Without Redis (one process), SIGHUP reloads that process's packs. With Redis, SIGHUP
publishes instead, so one signal reloads every instance alike. (With ``--workers N``
uvicorn's supervisor handles SIGHUP itself by restarting the workers, which also loads the
packs afresh.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

log = logging.getLogger("cds.packs")

CHANNEL = "cds:packs:reload"


class Reloadable(Protocol):
    def reload(self) -> list[Any]: ...


def publish_reload(redis_url: str, *, channel: str = CHANNEL) -> int:
    """Ask every subscribed worker to reload its packs; returns how many received it."""
    client = redis.Redis.from_url(redis_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        message = json.dumps(
            {"action": "reload", "from": f"{socket.gethostname()}:{os.getpid()}", "at": time.time()}
        )
        receivers = int(client.publish(channel, message))
    finally:
        client.close()
    log.info("pack reload published on %s (%d receivers)", channel, receivers)
    return receivers


def reload_packs(registry: Reloadable, reason: str) -> list[Any]:
    """Reload and log each pack's outcome; never raises (a worker must not die of it)."""
    try:
        results = registry.reload()
    except Exception:  # noqa: BLE001 - a reload failure must not kill the worker
        log.exception("pack reload (%s) failed; still serving the previous packs", reason)
        return []
    for r in results:
        if getattr(r, "ok", False):
            log.info(
                "pack reload (%s): %s version %s%s",
                reason,
                r.pack_id,
                r.version,
                " (changed)" if r.changed else " (unchanged)",
            )
        else:
            log.error(
                "pack reload (%s): %s FAILED, still serving %s: %s",
                reason,
                getattr(r, "pack_id", "?"),
                getattr(r, "version", None),
                getattr(r, "error", None),
            )
    return results


@dataclass
class RedisReloadListener:
    """A daemon thread subscribed to the reload channel; ``on_reload`` runs in it."""

    redis_url: str
    on_reload: Callable[[], object]
    channel: str = CHANNEL
    poll_seconds: float = 0.5
    max_backoff_seconds: float = 10.0
    subscribed: threading.Event = field(default_factory=threading.Event)
    reloads: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RedisReloadListener:
        self._thread = threading.Thread(target=self._run, name="cds-pack-reload", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff, first = 0.25, True
        while not self._stop.is_set():
            client: Any = None
            pubsub: Any = None
            try:
                client = redis.Redis.from_url(
                    self.redis_url,
                    socket_connect_timeout=3,
                    socket_timeout=max(5.0, 4 * self.poll_seconds),
                    health_check_interval=15,
                )
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                self.subscribed.set()
                if not first:  # a message may have gone by while we were away
                    log.info("reload channel subscribed again; reloading to catch up")
                    self._fire()
                first, backoff = False, 0.25
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=self.poll_seconds)
                    if msg is None or msg.get("type") != "message":
                        continue
                    while pubsub.get_message(timeout=0) is not None:  # coalesce a burst
                        pass
                    self._fire()
            except Exception as exc:  # noqa: BLE001 - retry forever, never crash the worker
                self.subscribed.clear()
                if not self._stop.is_set():
                    log.warning(
                        "reload channel unavailable (%s); retrying in %.1f s",
                        type(exc).__name__,
                        backoff,
                    )
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff_seconds)
            finally:
                for closable in (pubsub, client):
                    try:
                        if closable is not None:
                            closable.close()
                    except Exception:  # noqa: BLE001, S110 - closing a dead connection
                        pass
        self.subscribed.clear()

    def _fire(self) -> None:
        self.reloads += 1
        try:
            self.on_reload()
        except Exception:  # noqa: BLE001
            log.exception("pack reload handler failed")


@dataclass
class ReloadControl:
    """What the app's lifespan started; ``stop()`` undoes it."""

    listener: RedisReloadListener | None = None
    loop: asyncio.AbstractEventLoop | None = None
    sighup: bool = False

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        if self.sighup and self.loop is not None:
            with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
                self.loop.remove_signal_handler(signal.SIGHUP)


def start_reload(registry: Reloadable, redis_url: str | None) -> ReloadControl:
    """Subscribe to the reload channel (with Redis) and route SIGHUP; call from the lifespan."""
    control = ReloadControl()

    def reload_now(reason: str) -> None:
        reload_packs(registry, reason)

    if redis_url:
        control.listener = RedisReloadListener(
            redis_url, lambda: reload_now("redis message")
        ).start()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return control

    def on_sighup() -> None:
        if redis_url:
            work: Callable[[], object] = lambda: _publish_quietly(redis_url)  # noqa: E731
        else:
            work = lambda: reload_now("SIGHUP")  # noqa: E731
        loop.run_in_executor(None, work)

    try:  # only possible in the main thread (uvicorn); not under TestClient's portal thread
        loop.add_signal_handler(signal.SIGHUP, on_sighup)
        control.loop, control.sighup = loop, True
    except (RuntimeError, ValueError, NotImplementedError, AttributeError):
        pass
    return control


def _publish_quietly(redis_url: str) -> None:
    try:
        publish_reload(redis_url)
    except redis.RedisError as exc:
        log.error("SIGHUP: could not publish the pack reload (%s)", type(exc).__name__)
