"""JWT verification against real keys, a real local JWKS server and the real Redis."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from cds.errors import AuthenticationFailed, ConfigError, StoreUnavailable
from cds.web.auth import (
    JwksCache,
    Principal,
    TokenVerifier,
    TrustedIssuer,
    audience_for,
    load_trusted_issuers,
)
from cds.web.replay import (
    MemoryReplayCache,
    RedisReplayCache,
    ReplayCache,
    make_replay_cache,
)

AUD = "https://cds.example.org/cds-services/baclofen-renal"
FILE_ISS = "https://ehr.example.org/file"
URL_ISS = "https://ehr.example.org/url"
TENANT_ISS = "https://ehr.example.org/tenant"
REDIS_URL = "redis://127.0.0.1:6379/0"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: dict[str, Any]) -> str:
    return b64(json.dumps(obj).encode())


def public_jwks(*keys: ECKey | RSAKey) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def es_key() -> ECKey:
    return ECKey.generate_key("P-384", parameters={"kid": "es-1"})


@pytest.fixture(scope="module")
def rs_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "rs-1"})


class JwksServer:
    """A real HTTP server on 127.0.0.1 serving a JWKS that tests can swap, counting GETs."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                owner.requests += 1
                body = json.dumps(owner.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/jwks.json"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def jwks_server(es_key: ECKey) -> Iterator[JwksServer]:
    server = JwksServer()
    server.jwks = public_jwks(es_key)
    yield server
    server.close()


@pytest.fixture
def issuers(
    tmp_path: Path, es_key: ECKey, rs_key: RSAKey, jwks_server: JwksServer
) -> list[TrustedIssuer]:
    jwks_file = tmp_path / "ehr-jwks.json"
    jwks_file.write_text(json.dumps(public_jwks(es_key, rs_key)))
    config = tmp_path / "issuers.json"
    config.write_text(
        json.dumps(
            [
                {"iss": FILE_ISS, "jwks_file": "ehr-jwks.json"},
                {"iss": URL_ISS, "jwks_url": jwks_server.url},
                {"iss": TENANT_ISS, "jwks_file": str(jwks_file), "tenant": "north"},
            ]
        )
    )
    return load_trusted_issuers(config)


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def jwks_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def jwks_cache(jwks_clock: FakeClock) -> Iterator[JwksCache]:
    cache = JwksCache(clock=jwks_clock)
    yield cache
    cache.close()


@pytest.fixture
def verifier(issuers: list[TrustedIssuer], jwks_cache: JwksCache) -> TokenVerifier:
    return TokenVerifier(issuers, jwks_cache, MemoryReplayCache())


MakeToken = Callable[..., str]


@pytest.fixture
def make_token(es_key: ECKey) -> MakeToken:
    def make(
        key: ECKey | RSAKey | None = None,
        *,
        alg: str = "ES384",
        header: dict[str, Any] | None = None,
        drop: tuple[str, ...] = (),
        **claims: Any,
    ) -> str:
        key = key or es_key
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": FILE_ISS,
            "sub": "ehr-client",
            "aud": AUD,
            "iat": now,
            "exp": now + 300,
            "jti": str(uuid.uuid4()),
        }
        body.update(claims)
        for name in drop:
            body.pop(name)
        hdr = {"alg": alg, "kid": key.kid, **(header or {})}
        return jwt.encode(hdr, body, key, algorithms=[alg])

    return make


def bearer(token: str) -> str:
    return f"Bearer {token}"


def refused(verifier: TokenVerifier, header: str | None, reason_part: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        verifier.verify(header, AUD)
    assert reason_part in info.value.reason
    assert str(info.value) == "authentication failed"


# --------------------------------------------------------------------------- happy paths


def test_valid_es384(verifier: TokenVerifier, make_token: MakeToken) -> None:
    token = make_token()
    principal = verifier.verify(bearer(token), AUD)
    assert isinstance(principal, Principal)
    assert principal.iss == FILE_ISS
    assert principal.sub == "ehr-client"
    assert principal.tenant is None
    assert principal.exp > time.time()


def test_valid_rs384(verifier: TokenVerifier, make_token: MakeToken, rs_key: RSAKey) -> None:
    principal = verifier.verify(bearer(make_token(rs_key, alg="RS384")), AUD)
    assert principal.iss == FILE_ISS


def test_aud_list_containing_audience(verifier: TokenVerifier, make_token: MakeToken) -> None:
    token = make_token(aud=["https://other.example.org", AUD])
    assert verifier.verify(bearer(token), AUD).iss == FILE_ISS


def test_lowercase_bearer_scheme_accepted(verifier: TokenVerifier, make_token: MakeToken) -> None:
    assert verifier.verify("bearer " + make_token(), AUD).iss == FILE_ISS


def test_tenant_from_token_matches_config(verifier: TokenVerifier, make_token: MakeToken) -> None:
    principal = verifier.verify(bearer(make_token(iss=TENANT_ISS, tenant="north")), AUD)
    assert principal.tenant == "north"


# --------------------------------------------------------------------------- refusals


def test_expired(verifier: TokenVerifier, make_token: MakeToken) -> None:
    now = int(time.time())
    refused(verifier, bearer(make_token(iat=now - 600, exp=now - 60)), "expired")


def test_expired_within_leeway_accepted(verifier: TokenVerifier, make_token: MakeToken) -> None:
    now = int(time.time())
    verifier.verify(bearer(make_token(iat=now - 600, exp=now - 10)), AUD)


def test_iat_in_future(verifier: TokenVerifier, make_token: MakeToken) -> None:
    now = int(time.time())
    refused(verifier, bearer(make_token(iat=now + 120, exp=now + 400)), "iat")


def test_lifetime_too_long(verifier: TokenVerifier, make_token: MakeToken) -> None:
    now = int(time.time())
    refused(verifier, bearer(make_token(iat=now, exp=now + 7200)), "lifetime")


def test_missing_exp(verifier: TokenVerifier, make_token: MakeToken) -> None:
    refused(verifier, bearer(make_token(drop=("exp",))), "exp missing")


def test_nan_exp_refused(verifier: TokenVerifier, make_token: MakeToken) -> None:
    refused(verifier, bearer(make_token(exp=float("nan"))), "exp missing")


def test_wrong_aud(verifier: TokenVerifier, make_token: MakeToken) -> None:
    refused(verifier, bearer(make_token(aud=AUD + "-other")), "aud")


def test_aud_prefix_is_not_enough(verifier: TokenVerifier, make_token: MakeToken) -> None:
    refused(verifier, bearer(make_token(aud="https://cds.example.org")), "aud")


def test_unknown_iss(verifier: TokenVerifier, make_token: MakeToken) -> None:
    refused(verifier, bearer(make_token(iss="https://evil.example.org")), "trusted issuer")


def test_bad_signature_other_key_same_kid(verifier: TokenVerifier, make_token: MakeToken) -> None:
    impostor = ECKey.generate_key("P-384", parameters={"kid": "es-1"})
    refused(verifier, bearer(make_token(impostor)), "bad signature")


def test_tampered_payload(verifier: TokenVerifier, make_token: MakeToken) -> None:
    header, _, signature = make_token().split(".")
    now = int(time.time())
    forged = b64json(
        {"iss": FILE_ISS, "aud": AUD, "iat": now, "exp": now + 300, "jti": "x", "sub": "admin"}
    )
    refused(verifier, bearer(f"{header}.{forged}.{signature}"), "bad signature")


def test_alg_none(verifier: TokenVerifier) -> None:
    now = int(time.time())
    header = b64json({"alg": "none", "typ": "JWT", "kid": "es-1"})
    payload = b64json({"iss": FILE_ISS, "aud": AUD, "iat": now, "exp": now + 60, "jti": "n"})
    refused(verifier, bearer(f"{header}.{payload}."), "alg none")


def test_hs256_with_public_key_as_secret(verifier: TokenVerifier, rs_key: RSAKey) -> None:
    """The classic confusion attack: HMAC keyed with the (public) RSA key bytes."""
    now = int(time.time())
    header = b64json({"alg": "HS256", "typ": "JWT", "kid": "rs-1"})
    payload = b64json({"iss": FILE_ISS, "aud": AUD, "iat": now, "exp": now + 60, "jti": "h"})
    secret = rs_key.as_pem(private=False)
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    refused(verifier, bearer(f"{header}.{payload}.{b64(mac)}"), "HMAC")


def test_other_asymmetric_alg_refused(
    verifier: TokenVerifier, make_token: MakeToken, rs_key: RSAKey
) -> None:
    refused(verifier, bearer(make_token(rs_key, alg="RS256")), "not allowed")


def test_alg_key_type_mismatch(verifier: TokenVerifier, rs_key: RSAKey) -> None:
    """An ES384 header naming the RSA key's kid finds no usable key."""
    now = int(time.time())
    header = b64json({"alg": "ES384", "typ": "JWT", "kid": rs_key.kid})
    payload = b64json({"iss": FILE_ISS, "aud": AUD, "iat": now, "exp": now + 60, "jti": "m"})
    refused(verifier, bearer(f"{header}.{payload}.{b64(b'x' * 96)}"), "no ES384 key")


def test_typ_not_jwt(verifier: TokenVerifier, make_token: MakeToken) -> None:
    refused(verifier, bearer(make_token(header={"typ": "at+jwt"})), "typ")


def test_replayed_jti(verifier: TokenVerifier, make_token: MakeToken) -> None:
    token = make_token()
    verifier.verify(bearer(token), AUD)
    refused(verifier, bearer(token), "replayed")


def test_rejected_token_does_not_burn_its_jti(
    verifier: TokenVerifier, make_token: MakeToken
) -> None:
    refused(verifier, bearer(make_token(jti="j-1", aud="https://wrong")), "aud")
    verifier.verify(bearer(make_token(jti="j-1")), AUD)


def test_missing_jti(verifier: TokenVerifier, make_token: MakeToken) -> None:
    refused(verifier, bearer(make_token(drop=("jti",))), "jti missing")


def test_missing_token(verifier: TokenVerifier) -> None:
    refused(verifier, None, "no Authorization")
    refused(verifier, "", "no Authorization")
    refused(verifier, "Bearer ", "empty Bearer token")
    refused(verifier, "Bearer    ", "empty Bearer token")


def test_not_bearer_scheme(verifier: TokenVerifier, make_token: MakeToken) -> None:
    refused(verifier, "Basic " + make_token(), "not Bearer")
    refused(verifier, make_token(), "not Bearer")


@pytest.mark.parametrize(
    "garbage",
    ["garbage", "a.b.c", "a.b", "....", "eyJhbGciOiJFUzM4NCJ9.!!!.xx", "x" * 20_000],
)
def test_garbage_token(verifier: TokenVerifier, garbage: str) -> None:
    with pytest.raises(AuthenticationFailed):
        verifier.verify(bearer(garbage), AUD)


def test_tenant_mismatch(verifier: TokenVerifier, make_token: MakeToken) -> None:
    refused(verifier, bearer(make_token(iss=TENANT_ISS, tenant="south")), "tenant")
    refused(verifier, bearer(make_token(iss=TENANT_ISS)), "tenant")


def test_missing_sub_refused(verifier: TokenVerifier, make_token: MakeToken) -> None:
    """Hardening #18: the CDS Hooks spec requires ``sub``."""
    refused(verifier, bearer(make_token(drop=("sub",))), "sub missing")
    refused(verifier, bearer(make_token(sub="")), "sub missing")
    refused(verifier, bearer(make_token(sub=42)), "sub missing")


def test_tenant_claim_of_issuer_without_tenant_is_not_trusted(
    verifier: TokenVerifier, make_token: MakeToken
) -> None:
    """Hardening #15: an issuer configured without a tenant cannot claim one."""
    principal = verifier.verify(bearer(make_token(tenant="someone-else")), AUD)
    assert principal.iss == FILE_ISS and principal.tenant is None


def test_unknown_kid(verifier: TokenVerifier, make_token: MakeToken) -> None:
    stranger = ECKey.generate_key("P-384", parameters={"kid": "es-unknown"})
    refused(verifier, bearer(make_token(stranger)), "kid")


def test_jku_header_is_ignored(verifier: TokenVerifier, make_token: MakeToken) -> None:
    """A jku pointing elsewhere is never fetched: the configured keys still decide."""
    attacker = ECKey.generate_key("P-384", parameters={"kid": "es-1"})
    token = make_token(attacker, header={"jku": "https://evil.example.org/jwks"})
    refused(verifier, bearer(token), "bad signature")


def test_jwks_file_reloaded_when_changed(
    verifier: TokenVerifier, make_token: MakeToken, issuers: list[TrustedIssuer], es_key: ECKey
) -> None:
    verifier.verify(bearer(make_token()), AUD)
    new_key = ECKey.generate_key("P-384", parameters={"kid": "es-2"})
    path = Path(issuers[0].jwks_file or "")
    path.write_text(json.dumps(public_jwks(es_key, new_key)))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert verifier.verify(bearer(make_token(new_key)), AUD).iss == FILE_ISS


# --------------------------------------------------------------------------- jwks_url


def test_jwks_url_issuer_and_caching(
    verifier: TokenVerifier, make_token: MakeToken, jwks_server: JwksServer
) -> None:
    verifier.verify(bearer(make_token(iss=URL_ISS)), AUD)
    verifier.verify(bearer(make_token(iss=URL_ISS)), AUD)
    assert jwks_server.requests == 1


def test_jwks_url_refetched_after_ttl(
    verifier: TokenVerifier,
    make_token: MakeToken,
    jwks_server: JwksServer,
    jwks_clock: FakeClock,
) -> None:
    verifier.verify(bearer(make_token(iss=URL_ISS)), AUD)
    jwks_clock.now += 299
    verifier.verify(bearer(make_token(iss=URL_ISS)), AUD)
    assert jwks_server.requests == 1
    jwks_clock.now += 2
    verifier.verify(bearer(make_token(iss=URL_ISS)), AUD)
    assert jwks_server.requests == 2


def test_jwks_url_key_rotation(
    verifier: TokenVerifier,
    make_token: MakeToken,
    jwks_server: JwksServer,
    jwks_clock: FakeClock,
    es_key: ECKey,
) -> None:
    verifier.verify(bearer(make_token(iss=URL_ISS)), AUD)
    assert jwks_server.requests == 1

    rotated = ECKey.generate_key("P-384", parameters={"kid": "es-rotated"})
    jwks_server.jwks = public_jwks(es_key, rotated)
    jwks_clock.now += 31
    verifier.verify(bearer(make_token(rotated, iss=URL_ISS)), AUD)
    assert jwks_server.requests == 2  # exactly one refetch for the new kid

    # Another unknown kid right away: refused without a fetch (at most one per 30 s).
    stranger = ECKey.generate_key("P-384", parameters={"kid": "es-stranger"})
    refused(verifier, bearer(make_token(stranger, iss=URL_ISS)), "kid")
    assert jwks_server.requests == 2
    jwks_clock.now += 31
    refused(verifier, bearer(make_token(stranger, iss=URL_ISS)), "kid")
    assert jwks_server.requests == 3


def test_jwks_url_unreachable_keeps_previous_keys(
    verifier: TokenVerifier,
    make_token: MakeToken,
    jwks_server: JwksServer,
    jwks_clock: FakeClock,
) -> None:
    verifier.verify(bearer(make_token(iss=URL_ISS)), AUD)
    jwks_server.close()
    jwks_clock.now += 301
    verifier.verify(bearer(make_token(iss=URL_ISS)), AUD)  # stale keys, still trusted
    jwks_clock.now += 3600
    refused(verifier, bearer(make_token(iss=URL_ISS)), "kid")  # too stale: fail closed


# --------------------------------------------------------------------------- logging


def test_token_never_logged(
    verifier: TokenVerifier, make_token: MakeToken, caplog: pytest.LogCaptureFixture
) -> None:
    now = int(time.time())
    impostor = ECKey.generate_key("P-384", parameters={"kid": "es-1"})
    tokens = [
        make_token(aud="https://wrong.example.org"),
        make_token(iat=now - 900, exp=now - 600),
        make_token(impostor),
        make_token(iss="https://evil.example.org"),
    ]
    caplog.set_level(logging.DEBUG)
    for token in tokens:
        with pytest.raises(AuthenticationFailed) as info:
            verifier.verify(bearer(token), AUD)
        exc = info.value
        for text in (str(exc), exc.reason, exc.diagnostics, repr(exc)):
            assert token not in text
        for part in token.split("."):
            assert part not in caplog.text
    assert "authentication failed: aud does not match" in caplog.text
    assert "kid='es-1'" in caplog.text
    assert f"iss={FILE_ISS!r}" in caplog.text
    auth_records = [r for r in caplog.records if r.name == "cds.auth"]
    assert any(r.levelno == logging.INFO for r in auth_records)


# --------------------------------------------------------------------------- config


def write(tmp_path: Path, content: Any) -> Path:
    path = tmp_path / "issuers.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ({"iss": "x"}, "JSON list"),
        ([], "no issuers"),
        ([{"iss": "a"}], "entry 0 (iss 'a'): exactly one of jwks_file or jwks_url"),
        (
            [{"iss": "a", "jwks_url": "https://a/j", "jwks_file": "f.json"}],
            "entry 0 (iss 'a'): exactly one",
        ),
        ([{"iss": "a", "jwks_url": "http://ehr.example.org/jwks"}], "must be https"),
        ([{"iss": "a", "jwks_url": "https://a/j", "colour": "red"}], "colour"),
        ([{"iss": "a", "jwks_file": "missing.json"}], "does not exist"),
        (
            [{"iss": "a", "jwks_url": "https://a/j"}, {"iss": "a", "jwks_url": "https://a/j"}],
            "entry 1 (iss 'a'): issuer listed twice",
        ),
        (["just a string"], "entry 0"),
    ],
)
def test_bad_issuers_file(tmp_path: Path, content: Any, message: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ValueError) as info:
        load_trusted_issuers(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_issuers_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        load_trusted_issuers(tmp_path / "nope.json")


def test_issuers_file_localhost_http_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, [{"iss": "a", "jwks_url": "http://localhost:8080/jwks"}])
    assert load_trusted_issuers(path)[0].jwks_url == "http://localhost:8080/jwks"


# --------------------------------------------------------------------------- audience


def test_audience_for() -> None:
    url = "http://10.0.0.5:8000/cds-services/baclofen-renal?x=1"
    assert (
        audience_for(url, "https://cds.example.org/prefix/")
        == "https://cds.example.org/prefix/cds-services/baclofen-renal"
    )
    # Hardening #2: never from the URL the request arrived on (Host, X-Forwarded-*).
    for missing in (None, ""):
        with pytest.raises(ConfigError, match="CDS_PUBLIC_BASE_URL"):
            audience_for(url, missing)


# --------------------------------------------------------------------------- replay caches


def test_memory_replay_cache_expiry_and_bound() -> None:
    clock = FakeClock()
    cache = MemoryReplayCache(max_entries=3, clock=clock)
    assert isinstance(cache, ReplayCache)
    assert cache.seen("a", 10) is False
    assert cache.seen("a", 10) is True
    clock.now += 11
    assert cache.seen("a", 10) is False  # expired, so it is new again
    for key, ttl in (("b", 5), ("c", 50), ("d", 60)):
        cache.seen(key, ttl)
    assert len(cache) == 3
    assert cache.seen("b", 5) is False  # "b" (closest to expiry) was evicted for "d"
    assert cache.seen("c", 5) is True


def test_memory_replay_cache_is_atomic_across_threads() -> None:
    cache = MemoryReplayCache()
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(cache.seen("same", 60))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(False) == 1


@pytest.fixture
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        message = f"start redis-server on 127.0.0.1:6379 to run ({type(exc).__name__})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return REDIS_URL


def test_redis_replay_cache_shared_between_workers(redis_url: str) -> None:
    worker_a, worker_b = RedisReplayCache(redis_url), RedisReplayCache(redis_url)
    key = f"{FILE_ISS}\x00{uuid.uuid4()}"
    try:
        assert worker_a.seen(key, 30) is False
        assert worker_b.seen(key, 30) is True
        assert worker_a.seen(key, 30) is True
        client = redis.Redis.from_url(redis_url)
        name = RedisReplayCache.redis_key(key)
        assert name.startswith("cds:jti:") and key not in name
        assert 0 < client.ttl(name) <= 30
        client.delete(name)
        client.close()
    finally:
        worker_a.close()
        worker_b.close()


def test_redis_replay_cache_with_verifier(
    redis_url: str, issuers: list[TrustedIssuer], jwks_cache: JwksCache, make_token: MakeToken
) -> None:
    first = TokenVerifier(issuers, jwks_cache, RedisReplayCache(redis_url))
    second = TokenVerifier(issuers, jwks_cache, make_replay_cache(redis_url))
    token = make_token()
    first.verify(bearer(token), AUD)
    refused(second, bearer(token), "replayed")


def test_redis_down_fails_closed() -> None:
    cache = RedisReplayCache("redis://127.0.0.1:1/0", socket_timeout=0.5)
    with pytest.raises(StoreUnavailable):
        cache.seen("k", 10)


def test_make_replay_cache_without_redis() -> None:
    assert isinstance(make_replay_cache(None), MemoryReplayCache)
