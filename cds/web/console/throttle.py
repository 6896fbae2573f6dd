"""Keeping console sign-in from starving the hook API (hardening #1).

Sign-in runs argon2 (~150-300 ms of CPU). Run in the threads that also verify JWTs and
evaluate rules, 64 anonymous connections pushed hook calls from 20 ms to 10 s. Three
bounds, each cheap and checked before any work is done:

* ``RateLimiter``: token buckets, one per client address (``CDS_LOGIN_RATE_PER_CLIENT``
  attempts per minute) and one for everybody (``CDS_LOGIN_RATE_GLOBAL`` per second).
  Checked before the form body is even read; over the limit is a 429 page with
  ``Retry-After``.
* ``HashExecutor``: the only place a password is hashed or verified. Its own small thread
  pool (``CDS_HASH_THREADS``), never anyio's worker threads, and a bounded number of
  attempts in flight (threads + ``CDS_HASH_QUEUE``); when full, the attempt is refused
  with 429 at once instead of queueing behind the others.
* And, for full isolation, the console on its own port and process
  (``cds serve --console-port``): then no console request shares a GIL, a thread or an
  event loop with the hook API at all.

State is per process (a deployment with N instances admits N times the global rate);
that is the point: the limits protect this process's CPU and threads.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; ``take()`` is 0.0 or seconds to wait."""

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._b = _Bucket(burst, clock())

    def take(self) -> float:
        return _take(self._b, self.rate, self.burst, self._clock())


def _take(b: _Bucket, rate: float, burst: float, now: float) -> float:
    b.tokens = min(burst, b.tokens + (now - b.stamp) * rate)
    b.stamp = now
    if b.tokens >= 1.0:
        b.tokens -= 1.0
        return 0.0
    return (1.0 - b.tokens) / rate


class RateLimiter:
    """Per-key buckets (bounded: the least recently used keys are forgotten) plus a global
    one. ``check(key)`` returns 0.0 when the attempt may go ahead, else the seconds after
    which it could; a refused attempt uses no token."""

    def __init__(
        self,
        *,
        per_key_per_minute: int,
        global_per_second: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key_rate = per_key_per_minute / 60.0
        self._key_burst = float(per_key_per_minute)
        self._global_rate = global_per_second
        self._global_burst = max(1.0, 2 * global_per_second)
        self._clock = clock
        self._max_keys = max_keys
        self._keys: OrderedDict[str, _Bucket] = OrderedDict()
        self._global = _Bucket(self._global_burst, clock())
        self._lock = threading.Lock()

    def check(self, key: str) -> float:
        with self._lock:
            now = self._clock()
            bucket = self._keys.get(key)
            if bucket is None:
                bucket = _Bucket(self._key_burst, now)
                self._keys[key] = bucket
                while len(self._keys) > self._max_keys:
                    self._keys.popitem(last=False)
            self._keys.move_to_end(key)
            wait = _take(bucket, self._key_rate, self._key_burst, now)
            if wait:
                return wait
            wait = _take(self._global, self._global_rate, self._global_burst, now)
            if wait:
                bucket.tokens += 1.0  # not this client's fault: give its token back
            return wait


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class Busy(Exception):
    """Every hashing slot is taken: refuse the attempt now (429), do not queue it."""


class HashExecutor:
    """A bounded pool for password hashing, apart from anyio's worker threads."""

    def __init__(self, threads: int, queue: int) -> None:
        self.threads = threads
        self.capacity = threads + queue
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cds-hash")
        self._slots = threading.BoundedSemaphore(self.capacity)
        self._in_flight = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a hashing thread; raise ``Busy`` at once if no slot is free."""
        if not self._slots.acquire(blocking=False):
            raise Busy()
        with self._lock:
            self._in_flight += 1

        def job() -> T:
            try:
                return fn()
            finally:
                with self._lock:
                    self._in_flight -= 1
                self._slots.release()

        try:
            future = self._pool.submit(job)
        except BaseException:
            with self._lock:
                self._in_flight -= 1
            self._slots.release()
            raise
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def client_key(request: Any) -> str:
    client = getattr(request, "client", None)
    return str(client.host) if client is not None and client.host else "unknown"
