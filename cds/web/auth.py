"""JWT authentication of CDS Hooks calls (cds-hooks.md, Security).

Every hook call carries ``Authorization: Bearer <JWT>`` signed by the EHR. ``TokenVerifier``
checks it against the configured trusted issuers and their JWKS and returns a ``Principal``,
or raises ``AuthenticationFailed(reason)``: the reason goes to the ``cds.auth`` log (with
``iss`` and ``kid`` only), the caller sees only "authentication failed". The token itself is
never logged nor put into an exception message.

Everything here is synchronous on purpose: a JWKS fetch may take up to its 2 s timeout, so
the web layer calls ``TokenVerifier.verify`` from a threadpool rather than on the event loop.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import ECKey, JWKRegistry, RSAKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cds.errors import AuthenticationFailed
from cds.web.replay import ReplayCache

log = logging.getLogger("cds.auth")

#: The only signature algorithms the spec allows. ``none`` and HMAC are refused by name
#: before any key lookup (HMAC with a public key as secret is the classic confusion attack).
ALLOWED_ALGS = frozenset({"ES384", "RS384"})
#: Hosts that may serve a JWKS over plain http (local test servers only).
_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: Larger Authorization values are refused before any parsing (cheap DoS guard).
MAX_TOKEN_CHARS = 16_384
#: A JWKS is a few keys; anything bigger than this is refused while downloading.
MAX_JWKS_BYTES = 256 * 1024
_MIN_RSA_BITS = 2048

Key = ECKey | RSAKey


# --------------------------------------------------------------------------- configuration


def check_jwks_url(url: str) -> None:
    """Raise ``ValueError`` unless ``url`` is https (or http on this machine, for tests).

    Keys fetched over plain http could be swapped in transit, which defeats the signature.
    """
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname in _LOCAL_HOSTS:
        return
    raise ValueError(f"jwks_url must be https (or http on 127.0.0.1/localhost): {url!r}")


class TrustedIssuer(BaseModel):
    """One EHR allowed to call us: its ``iss`` and where its signing keys are."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    iss: str = Field(min_length=1)
    jwks_file: str | None = None
    jwks_url: str | None = None
    tenant: str | None = None

    @model_validator(mode="after")
    def _one_key_source(self) -> TrustedIssuer:
        if (self.jwks_file is None) == (self.jwks_url is None):
            raise ValueError("exactly one of jwks_file or jwks_url is required")
        if self.jwks_url is not None:
            check_jwks_url(self.jwks_url)
        return self


def load_trusted_issuers(path: str | Path) -> list[TrustedIssuer]:
    """Read the JSON list of trusted issuers (the file named by ``CDS_TRUSTED_ISSUERS``).

    A relative ``jwks_file`` is resolved against the issuers file's folder and must exist, so
    a typo fails at start-up instead of as a 401 on the first call. Any problem raises
    ``ValueError`` naming the file and the entry.
    """
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{p}: cannot read trusted issuers file: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: trusted issuers file is not valid JSON: {exc}") from None
    if not isinstance(raw, list):
        raise ValueError(f"{p}: trusted issuers file must be a JSON list of objects")
    if not raw:
        raise ValueError(f"{p}: trusted issuers file lists no issuers")
    issuers: list[TrustedIssuer] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        label = f"entry {i}"
        if isinstance(item, dict) and isinstance(item.get("iss"), str):
            label += f" (iss {item['iss']!r})"
        try:
            issuer = TrustedIssuer.model_validate(item)
        except ValidationError as exc:
            problems = "; ".join(
                (".".join(str(x) for x in err["loc"]) + ": " if err["loc"] else "")
                + err["msg"].removeprefix("Value error, ")
                for err in exc.errors()
            )
            raise ValueError(f"{p}: {label}: {problems}") from None
        if issuer.iss in seen:
            raise ValueError(f"{p}: {label}: issuer listed twice")
        seen.add(issuer.iss)
        if issuer.jwks_file is not None:
            jwks_path = Path(issuer.jwks_file)
            if not jwks_path.is_absolute():
                jwks_path = p.parent / jwks_path
            if not jwks_path.is_file():
                raise ValueError(f"{p}: {label}: jwks_file {str(jwks_path)!r} does not exist")
            issuer = issuer.model_copy(update={"jwks_file": str(jwks_path)})
        issuers.append(issuer)
    return issuers


# --------------------------------------------------------------------------- JWKS


def parse_jwks(data: Any, source: str) -> dict[str, list[Key]]:
    """Public EC/RSA keys of a JWKS by ``kid``; unusable keys are skipped with a warning.

    Keys without a ``kid`` are skipped because tokens select their key by ``kid``. Private
    parts, if an issuer published them by mistake, are dropped.
    """
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f"{source}: not a JWKS (a JSON object with a 'keys' list)")
    by_kid: dict[str, list[Key]] = {}
    for i, jwk in enumerate(data["keys"]):
        if not isinstance(jwk, dict) or jwk.get("kty") not in ("EC", "RSA"):
            continue  # other key types can never verify ES384/RS384
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            log.warning("%s: key %d has no kid, skipped", source, i)
            continue
        try:
            key = JWKRegistry.import_key(jwk)
            if key.is_private:
                key = JWKRegistry.import_key(key.as_dict(private=False))
        except Exception as exc:  # remote input: any parse failure just drops this key
            log.warning("%s: key %d (kid %r) unusable: %s", source, i, kid, type(exc).__name__)
            continue
        if isinstance(key, ECKey | RSAKey):
            by_kid.setdefault(kid, []).append(key)
    return by_kid


def _usable(key: Key, alg: str) -> bool:
    """Whether ``key`` may verify ``alg``: right type/curve/size, and its use/alg agree."""
    if key.get("use") not in (None, "sig") or key.get("alg") not in (None, alg):
        return False
    if alg == "ES384":
        return isinstance(key, ECKey) and key.curve_name == "P-384"
    if alg == "RS384":
        return isinstance(key, RSAKey) and key.public_key.key_size >= _MIN_RSA_BITS
    return False


class _FetchError(Exception):
    pass


@dataclass
class _Entry:
    lock: threading.Lock = field(default_factory=threading.Lock)
    keys: dict[str, list[Key]] = field(default_factory=dict)
    loaded_at: float | None = None  # last successful URL fetch (clock time)
    attempted_at: float | None = None  # last URL fetch attempt, success or not
    file_stamp: tuple[int, int] | None = None  # (mtime_ns, size) of the last file read


class JwksCache:
    """Signing keys per trusted issuer, with a synchronous API (call it from a thread).

    * ``jwks_file``: read once, read again when its mtime or size changes.
    * ``jwks_url``: fetched with httpx (no redirects, ``timeout_seconds``, size cap), kept
      ``ttl_seconds``; an unknown ``kid`` (key rotation) triggers a refetch, but fetches
      happen at most once per ``min_refetch_seconds`` per issuer so that tokens with random
      kids cannot make us hammer the EHR. If a refresh fails the previous keys are kept for
      up to ``max_stale_seconds`` (an EHR hiccup should not lock every user out), then
      dropped (fail closed).
    """

    def __init__(
        self,
        *,
        ttl_seconds: float = 300.0,
        min_refetch_seconds: float = 30.0,
        timeout_seconds: float = 2.0,
        max_stale_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        client: httpx.Client | None = None,
    ) -> None:
        self._ttl = ttl_seconds
        self._min_refetch = min_refetch_seconds
        self._timeout = timeout_seconds
        self._max_stale = max_stale_seconds
        self._clock = clock
        self._client = client or httpx.Client(timeout=timeout_seconds, follow_redirects=False)
        self._entries: dict[tuple[str, str | None, str | None], _Entry] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def get_key(self, issuer: TrustedIssuer, kid: str, alg: str) -> Key | None:
        """The issuer's key with this ``kid`` usable for ``alg``, or None."""
        entry = self._entry(issuer)
        with entry.lock:  # one load per issuer at a time; other issuers are not blocked
            if issuer.jwks_file is not None:
                self._load_file(issuer.jwks_file, entry)
                return self._select(entry, kid, alg)
            assert issuer.jwks_url is not None
            now = self._clock()
            if entry.loaded_at is None or now - entry.loaded_at >= self._ttl:
                self._fetch_if_allowed(issuer.jwks_url, entry, now)
            key = self._select(entry, kid, alg)
            if key is None and self._fetch_if_allowed(issuer.jwks_url, entry, now):
                key = self._select(entry, kid, alg)  # the issuer may have rotated its keys
            return key

    def _entry(self, issuer: TrustedIssuer) -> _Entry:
        ident = (issuer.iss, issuer.jwks_file, issuer.jwks_url)
        with self._lock:
            return self._entries.setdefault(ident, _Entry())

    @staticmethod
    def _select(entry: _Entry, kid: str, alg: str) -> Key | None:
        return next((k for k in entry.keys.get(kid, ()) if _usable(k, alg)), None)

    def _load_file(self, path: str, entry: _Entry) -> None:
        try:
            st = os.stat(path)
        except OSError as exc:
            if entry.file_stamp != (-1, -1):
                log.error("JWKS file %s unreadable: %s", path, exc.strerror)
            entry.keys, entry.file_stamp = {}, (-1, -1)
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == entry.file_stamp:
            return
        entry.file_stamp = stamp
        try:
            data = json.loads(Path(path).read_bytes())
            entry.keys = parse_jwks(data, path)
        except (OSError, ValueError) as exc:
            # Perhaps caught mid-write: keep the previous keys; a new mtime triggers a retry.
            log.error("JWKS file %s invalid, keeping previous keys: %s", path, exc)

    def _fetch_if_allowed(self, url: str, entry: _Entry, now: float) -> bool:
        """Fetch unless one was attempted within ``min_refetch_seconds``; True if done."""
        if entry.attempted_at is not None and now - entry.attempted_at < self._min_refetch:
            return False
        entry.attempted_at = now
        try:
            entry.keys = parse_jwks(self._download(url), url)
            entry.loaded_at = now
            log.info("JWKS fetched from %s (%d kids)", url, len(entry.keys))
        except (_FetchError, httpx.HTTPError, ValueError) as exc:
            log.warning("JWKS fetch from %s failed: %s", url, exc or type(exc).__name__)
            if entry.loaded_at is None or now - entry.loaded_at >= self._max_stale:
                entry.keys = {}
        return True

    def _download(self, url: str) -> Any:
        check_jwks_url(url)  # also enforced by TrustedIssuer; checked again where it matters
        deadline = time.monotonic() + self._timeout
        body = bytearray()
        with self._client.stream("GET", url, headers={"Accept": "application/json"}) as resp:
            if resp.status_code != 200:
                raise _FetchError(f"HTTP {resp.status_code}")
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise _FetchError(f"JWKS larger than {MAX_JWKS_BYTES} bytes")
                if time.monotonic() > deadline:  # httpx timeouts are per read, not total
                    raise _FetchError("JWKS download too slow")
        return json.loads(body)


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class Principal:
    """Who called: the verified issuer and the claims the rest of the service may use."""

    iss: str
    sub: str
    tenant: str | None  # only ever the tenant the configuration binds to the issuer
    jti: str
    exp: float


def _b64_json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise AuthenticationFailed(f"{what} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise AuthenticationFailed(f"{what} is not a JSON object")
    return value


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # json.loads accepts NaN, which compares False with everything and would pass every check.
    return float(value) if math.isfinite(value) else None


def _for_log(value: object) -> str:
    """A bounded, escaped form of an unverified value (no log injection, no huge lines)."""
    return "-" if value is None else repr(str(value)[:200])


@dataclass
class _Context:
    iss: object = None
    kid: object = None


class TokenVerifier:
    """Checks the EHR's JWT on one hook call (see cds-hooks.md, Security).

    The jti is recorded in the replay cache only after every other check has passed, so a
    rejected token does not use up its jti.
    """

    def __init__(
        self,
        issuers: Iterable[TrustedIssuer],
        jwks_cache: JwksCache,
        replay_cache: ReplayCache,
        *,
        leeway_seconds: float = 30,
        max_lifetime_seconds: float = 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._issuers = {i.iss: i for i in issuers}
        self._jwks = jwks_cache
        self._replay = replay_cache
        self._leeway = leeway_seconds
        self._max_lifetime = max_lifetime_seconds
        self._clock = clock

    def verify(self, authorization_header: str | None, audience: str) -> Principal:
        """Return the caller, or raise ``AuthenticationFailed`` (reason logged at INFO)."""
        ctx = _Context()
        try:
            return self._verify(authorization_header, audience, ctx)
        except AuthenticationFailed as exc:
            log.info(
                "authentication failed: %s (iss=%s kid=%s)",
                exc.reason,
                _for_log(ctx.iss),
                _for_log(ctx.kid),
            )
            raise

    def _verify(self, authorization: str | None, audience: str, ctx: _Context) -> Principal:
        if not authorization:
            raise AuthenticationFailed("no Authorization header")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer":
            raise AuthenticationFailed("Authorization scheme is not Bearer")
        if not token:
            raise AuthenticationFailed("empty Bearer token")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationFailed(f"token longer than {MAX_TOKEN_CHARS} characters")
        segments = token.split(".")
        if len(segments) != 3:
            raise AuthenticationFailed(f"token is not a compact JWS ({len(segments)} segments)")

        header = _b64_json_object(segments[0], "JOSE header")
        ctx.kid = header.get("kid")
        alg = header.get("alg")
        if not isinstance(alg, str):
            raise AuthenticationFailed("alg missing")
        if alg.lower() == "none":
            raise AuthenticationFailed("alg none refused")
        if alg.upper().startswith("HS"):
            raise AuthenticationFailed(f"HMAC alg {_for_log(alg)} refused")
        if alg not in ALLOWED_ALGS:
            raise AuthenticationFailed(f"alg {_for_log(alg)} not allowed (ES384, RS384 only)")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise AuthenticationFailed(f"typ {_for_log(typ)} is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthenticationFailed("kid missing")

        # Unverified claims, read only to choose whose keys verify the signature.
        unverified = _b64_json_object(segments[1], "payload")
        ctx.iss = unverified.get("iss")
        issuer = self._issuers.get(ctx.iss) if isinstance(ctx.iss, str) else None
        if issuer is None:
            raise AuthenticationFailed("iss is not a trusted issuer")
        jku = header.get("jku")
        if jku is not None and jku != issuer.jwks_url:
            log.debug("ignoring jku header that differs from the configured jwks_url")

        key = self._jwks.get_key(issuer, kid, alg)
        if key is None:
            raise AuthenticationFailed(f"no {alg} key with this kid in the issuer's JWKS")
        try:
            verified = jws.deserialize_compact(token, key, algorithms=[alg])
        except BadSignatureError:
            raise AuthenticationFailed("bad signature") from None
        except (JoseError, ValueError, TypeError) as exc:
            raise AuthenticationFailed(f"JWS rejected: {type(exc).__name__}") from None
        try:
            claims = json.loads(verified.payload)
        except ValueError:
            raise AuthenticationFailed("payload is not JSON") from None
        if not isinstance(claims, dict) or claims.get("iss") != issuer.iss:
            raise AuthenticationFailed("payload is not a JSON object with the same iss")

        return self._check_claims(claims, issuer, audience)

    def _check_claims(
        self, claims: dict[str, Any], issuer: TrustedIssuer, audience: str
    ) -> Principal:
        aud = claims.get("aud")
        if not (aud == audience or (isinstance(aud, list) and audience in aud)):
            raise AuthenticationFailed(f"aud does not match {audience!r}")

        now = self._clock()
        exp, iat = _number(claims, "exp"), _number(claims, "iat")
        if exp is None:
            raise AuthenticationFailed("exp missing or not a number")
        if iat is None:
            raise AuthenticationFailed("iat missing or not a number")
        if now > exp + self._leeway:
            raise AuthenticationFailed("token expired")
        if iat > now + self._leeway:
            raise AuthenticationFailed("iat is in the future")
        if exp <= iat:
            raise AuthenticationFailed("exp is not after iat")
        if exp - iat > self._max_lifetime:
            raise AuthenticationFailed(f"lifetime exceeds {self._max_lifetime:g} s")
        nbf = _number(claims, "nbf")
        if "nbf" in claims and (nbf is None or nbf > now + self._leeway):
            raise AuthenticationFailed("nbf is in the future or not a number")

        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise AuthenticationFailed("jti missing")
        sub = claims.get("sub")
        # The CDS Hooks spec requires sub (the client_id of the EHR).
        if not isinstance(sub, str) or not sub.strip():
            raise AuthenticationFailed("sub missing or not a non-empty string")
        tenant = claims.get("tenant")
        if tenant is not None and not isinstance(tenant, str):
            raise AuthenticationFailed("tenant is not a string")
        if issuer.tenant is not None and tenant != issuer.tenant:
            raise AuthenticationFailed("tenant does not match the issuer's configured tenant")
        if issuer.tenant is None and tenant is not None:
            # Nothing vouches for it: the configuration binds no tenant to this issuer, so
            # the claim is not trusted, and the audit and feedback binding never see it.
            log.debug("tenant claim of an issuer without a configured tenant ignored")

        # Last, so that only otherwise-valid tokens use up their jti. NUL separates iss from
        # jti so that ("ab", "c") and ("a", "bc") cannot collide.
        if self._replay.seen(f"{issuer.iss}\x00{jti}", exp - now + self._leeway):
            raise AuthenticationFailed("jti replayed")
        return Principal(iss=issuer.iss, sub=sub, tenant=issuer.tenant, jti=jti, exp=exp)


def audience_for(request_url: str, public_base_url: str | None) -> str:
    """The URL the EHR called, which the token's ``aud`` must equal.

    It comes from configuration only: ``CDS_PUBLIC_BASE_URL`` (scheme, host, port and any
    path prefix as the EHR sees them) followed by the request path. Never from the Host or
    X-Forwarded-* headers, which the caller chooses: a token minted for another deployment
    trusted by the same issuer would otherwise pass. The query string is never part of it.
    """
    if not public_base_url:
        from cds.errors import ConfigError

        raise ConfigError("CDS_PUBLIC_BASE_URL is required for the JWT audience check")
    return public_base_url.rstrip("/") + urlsplit(request_url).path
