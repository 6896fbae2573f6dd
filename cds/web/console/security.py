"""Cookies, signatures and CSRF tokens for the review console.

Why a signed token *and* a server-side session: the random token alone is unguessable,
but signing it (HMAC-SHA256 with ``CDS_SESSION_SECRET``) lets the console turn away forged
or truncated cookies without a database round trip, and the server-side row is what makes
sign-out, account disabling and expiry take effect at once.

CSRF: every console form carries a synchronizer token. Signed-in forms echo the token
stored in the session row; the sign-in form (no session yet) echoes an HMAC of a random
nonce held in a short-lived, HttpOnly pre-session cookie, so a third-party page can
neither read nor forge it. Cookies are HttpOnly, SameSite=Lax and Secure unless
``settings.secure_cookies`` is False (plain-http tests only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import secrets
from typing import Any

from fastapi import Request, Response

log = logging.getLogger("cds.console")

SESSION_COOKIE = "cds_console"
LOGIN_COOKIE = "cds_console_login"
LOGIN_COOKIE_MAX_AGE = 3600  # a sign-in form older than this must be reloaded
CSRF_FIELD = "csrf_token"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def session_secret(request: Request) -> bytes:
    """The signing key: ``settings.session_secret``, else one random key per app.

    A generated key is logged loudly: sessions then end on restart and are not shared
    between workers, which is fine for a laptop and wrong for production.
    """
    state = request.app.state
    cached: bytes | None = getattr(state, "console_secret", None)
    if cached is not None:
        return cached
    settings: Any = getattr(state, "settings", None)
    configured: Any = getattr(settings, "session_secret", None)
    if hasattr(configured, "get_secret_value"):
        configured = configured.get_secret_value()
    # create_app keeps one generated secret per app when none is configured.
    configured = configured or getattr(state, "session_secret", None)
    if configured and not getattr(settings, "session_secret", None):
        log.warning(
            "CDS_SESSION_SECRET is not set: console sessions end when this process "
            "restarts and are not shared between workers (set it in production)"
        )
    if configured:
        key = hashlib.sha256(str(configured).encode()).digest()
    else:
        log.warning(
            "CDS_SESSION_SECRET is not set: console sessions use a random key and "
            "end when this process restarts (set it in production)"
        )
        key = secrets.token_bytes(32)
    state.console_secret = key
    return key


def sign(value: str, key: bytes, purpose: str) -> str:
    mac = hmac.new(key, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
    return f"{value}.{_b64(mac)}"


def unsign(signed: str | None, key: bytes, purpose: str) -> str | None:
    """The value if the signature matches, else ``None`` (constant-time comparison)."""
    if not signed or "." not in signed or len(signed) > 512:
        return None
    value, _, _mac = signed.rpartition(".")
    return value if hmac.compare_digest(sign(value, key, purpose), signed) else None


def tokens_equal(given: object, expected: str) -> bool:
    return isinstance(given, str) and bool(given) and hmac.compare_digest(given, expected)


def login_csrf_token(nonce: str, key: bytes) -> str:
    return _b64(hmac.new(key, f"login-csrf:{nonce}".encode(), hashlib.sha256).digest())


def cookie_path(request: Request) -> str:
    """The console's path under whatever prefix a proxy mounts the app at."""
    return f"{request.scope.get('root_path', '').rstrip('/')}/review"


def _is_loopback(host: str) -> bool:
    """Hosts a browser treats as a secure context over plain HTTP (it keeps Secure
    cookies from them): localhost, *.localhost, 127.0.0.0/8, ::1."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cookie_problem(request: Request) -> str | None:
    """Why sign-in cannot work from this address, or ``None``.

    Console cookies are ``Secure`` unless ``CDS_SECURE_COOKIES=false``; a browser drops
    them when the page came over plain HTTP from any host but a loopback one, so the
    sign-in form's cookie never returns and every attempt ends "Sign-in form expired".
    """
    if not _secure(request) or request.url.scheme != "http":
        return None
    host = request.url.hostname or ""
    if _is_loopback(host):
        return None
    return (
        f"This console is served over plain HTTP at {host[:100]}, but its cookies are "
        "marked Secure (CDS_SECURE_COOKIES=true), so your browser will not keep them and "
        "signing in will fail with “Sign-in form expired”. Serve the console over HTTPS "
        "(or behind a proxy that terminates TLS and forwards the scheme), or, for "
        "development only, set CDS_SECURE_COOKIES=false."
    )


def _secure(request: Request) -> bool:
    settings: Any = getattr(request.app.state, "settings", None)
    return bool(getattr(settings, "secure_cookies", True))


def set_cookie(
    request: Request, response: Response, name: str, value: str, max_age: int | None = None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=cookie_path(request),
        secure=_secure(request),
        httponly=True,
        samesite="lax",
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path=cookie_path(request), secure=_secure(request), httponly=True, samesite="lax"
    )


def new_nonce() -> str:
    return secrets.token_urlsafe(24)
