"""Replay cache for JWT ``jti`` values.

The CDS Hooks spec asks us to refuse a token whose ``jti`` we have already accepted within its
lifetime. One process can remember that in memory; several workers (uvicorn ``--workers``,
several pods) must share it, hence Redis. Keys are SHA-256 digests so that nothing derived
from the token in a reversible way is stored, and every entry is bounded in size.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import redis

from cds.errors import StoreUnavailable

log = logging.getLogger("cds.auth")

REDIS_PREFIX = "cds:jti:"


def _digest(key: str) -> str:
    """Fixed-size, non-reversible form of a replay key (no token material is kept)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@runtime_checkable
class ReplayCache(Protocol):
    """Remembers keys for a while; shared by every worker that verifies tokens."""

    def seen(self, key: str, ttl_seconds: float) -> bool:
        """Atomically record ``key`` for ``ttl_seconds``; True if it was already there.

        True means a replay: the caller must refuse the token.
        """
        ...


class MemoryReplayCache:
    """In-process replay cache: correct for one worker process only.

    A min-heap of expiry times mirrors the dict, so expired entries are purged in order at
    every call (amortised O(log n)). When ``max_entries`` live entries exist the ones closest
    to expiry are evicted with a warning: bounded memory beats an unbounded dict an attacker
    can grow, and those entries are the ones whose replay window is nearly over anyway.
    """

    def __init__(
        self, max_entries: int = 1_000_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._expiry)

    def _purge(self, now: float) -> None:
        # Invariant: every dict entry has exactly one heap entry with the same expiry.
        while self._heap and self._heap[0][0] <= now:
            _, key = heapq.heappop(self._heap)
            del self._expiry[key]

    def seen(self, key: str, ttl_seconds: float) -> bool:
        digest = _digest(key)
        with self._lock:
            now = self._clock()
            self._purge(now)
            if digest in self._expiry:  # purged above, so present means still live
                return True
            if len(self._expiry) >= self._max:
                _, evicted = heapq.heappop(self._heap)
                del self._expiry[evicted]
                log.warning(
                    "replay cache full (%d entries): evicted the entry closest to expiry",
                    self._max,
                )
            expiry = now + max(ttl_seconds, 0.0)
            self._expiry[digest] = expiry
            heapq.heappush(self._heap, (expiry, digest))
            return False


class RedisReplayCache:
    """Replay cache shared by all workers through Redis ``SET key 1 NX EX ttl``.

    ``SET NX`` is atomic on the server, so two workers racing on the same ``jti`` cannot both
    win. If Redis cannot be reached the check cannot be made, so we fail closed with
    ``StoreUnavailable`` (503) rather than accept a token that might be a replay.
    """

    def __init__(self, url: str, *, socket_timeout: float = 1.0) -> None:
        self._redis = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout
        )

    @staticmethod
    def redis_key(key: str) -> str:
        """The Redis key for a replay key (public so tests and operators can inspect it)."""
        return REDIS_PREFIX + _digest(key)

    def seen(self, key: str, ttl_seconds: float) -> bool:
        ttl = max(1, math.ceil(ttl_seconds))  # EX takes whole seconds; round up, never 0
        try:
            created = self._redis.set(self.redis_key(key), b"1", nx=True, ex=ttl)
        except redis.RedisError as exc:
            log.error("replay cache unavailable: %s", type(exc).__name__)
            raise StoreUnavailable("replay cache unavailable") from None
        return not created

    def close(self) -> None:
        self._redis.close()


def make_replay_cache(redis_url: str | None) -> ReplayCache:
    """Redis when a URL is configured (required with several workers), else in-memory."""
    if redis_url:
        return RedisReplayCache(redis_url)
    return MemoryReplayCache()
