"""A small closed-loop HTTP/1.1 load generator (asyncio, keep-alive), run in its own process.

Used by the soak (``bench/soak.py``) and by ``bench/http_bench.py`` when wrk is missing.
Each of ``connections`` clients sends its next request as soon as the previous answer is
read. With JWT auth every request gets a freshly minted token (a new ``jti``): minting
(~0.5 ms, ES384) happens in this process, never in the server's. Only 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.common import percentile


@dataclass
class Target:
    path: str
    body: bytes


@dataclass
class Stats:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    bad_samples: list[str] = field(default_factory=list)

    def summary(self, seconds: float) -> dict[str, Any]:
        n = len(self.latencies_ms)
        non2xx = sum(c for s, c in self.statuses.items() if not 200 <= s < 300)
        return {
            "requests": n,
            "seconds": round(seconds, 2),
            "rps": round(n / seconds, 1),
            "p50_ms": round(percentile(self.latencies_ms, 50), 2),
            "p95_ms": round(percentile(self.latencies_ms, 95), 2),
            "p99_ms": round(percentile(self.latencies_ms, 99), 2),
            "max_ms": round(max(self.latencies_ms, default=0.0), 2),
            "non2xx": non2xx,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "bad_samples": self.bad_samples[:5],
        }


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return status, b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _client(
    port: int,
    targets: Iterator[Target],
    token_for: Callable[[str], str] | None,
    deadline: float,
    stats: Stats,
    record: bool,
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.monotonic() < deadline:
        if writer is None:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError as exc:
                stats.errors[f"connect:{type(exc).__name__}"] += 1
                await asyncio.sleep(0.2)
                continue
        assert reader is not None
        t = next(targets)
        auth = f"Authorization: Bearer {token_for(t.path)}\r\n" if token_for else ""
        head = (
            f"POST {t.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(t.body)}\r\n"
            f"{auth}\r\n"
        ).encode()
        t0 = time.perf_counter()
        try:
            writer.write(head + t.body)
            await writer.drain()
            status, body = await asyncio.wait_for(_read_response(reader), timeout=30)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            stats.errors[type(exc).__name__] += 1
            writer.close()
            writer = None
            continue
        if record:
            stats.latencies_ms.append((time.perf_counter() - t0) * 1000)
            stats.statuses[status] += 1
            if not 200 <= status < 300 and len(stats.bad_samples) < 5:
                stats.bad_samples.append(f"{status} {body[:300]!r}")
    if writer is not None:
        writer.close()


async def _run(
    port: int,
    targets: list[Target],
    connections: int,
    seconds: float,
    token_for: Callable[[str], str] | None,
    warmup: float,
) -> dict[str, Any]:
    if warmup > 0:
        cyc = itertools.cycle(targets)
        end = time.monotonic() + warmup
        await asyncio.gather(
            *(_client(port, cyc, token_for, end, Stats(), False) for _ in range(connections))
        )
    stats = Stats()
    cyc = itertools.cycle(targets)
    t0 = time.monotonic()
    await asyncio.gather(
        *(_client(port, cyc, token_for, t0 + seconds, stats, True) for _ in range(connections))
    )
    return stats.summary(time.monotonic() - t0)


def run_load(
    port: int,
    targets: list[Target],
    *,
    connections: int,
    seconds: float,
    token_for: Callable[[str], str] | None = None,
    warmup: float = 0.0,
) -> dict[str, Any]:
    """Drive ``targets`` in turn for ``seconds``; latency percentiles, rps and statuses."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_run(port, targets, connections, seconds, token_for, warmup))


@dataclass
class JwtMinter:
    """Mints EHR tokens like ``TestIssuer.token`` from its private JWK (picklable, so a
    load-generator process can mint its own): a fresh ``jti`` each, ``aud`` the URL called.
    """

    jwk: dict[str, Any]
    iss: str
    alg: str
    base: str
    lifetime: int = 300  # as TestIssuer: the replay cache keeps each jti this long
    _key: Any = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_key": None}

    @classmethod
    def of(cls, issuer: Any, base: str) -> JwtMinter:
        return cls(issuer.key.as_dict(private=True), issuer.iss, issuer.alg, base)

    def __call__(self, path: str) -> str:
        import uuid

        from joserfc import jwt
        from joserfc.jwk import ECKey, RSAKey

        if self._key is None:
            self._key = (ECKey if self.jwk.get("kty") == "EC" else RSAKey).import_key(self.jwk)
        now = int(time.time())
        claims = {
            "iss": self.iss,
            "sub": "ehr-client",
            "aud": self.base + path,
            "iat": now,
            "exp": now + self.lifetime,
            "jti": str(uuid.uuid4()),
        }
        header = {"alg": self.alg, "typ": "JWT", "kid": self.jwk.get("kid")}
        token: str = jwt.encode(header, claims, self._key, algorithms=[self.alg])
        return token
