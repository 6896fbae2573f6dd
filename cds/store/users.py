"""Console accounts and their sessions: passwords, lockout, server-side sessions.

Why it lives in ``store``: every decision here is a database write that must be atomic
(the failure counter, the lock, revoking a session), and only ``store`` talks SQL.

Choices, written down once:

* Passwords are hashed with argon2id (pwdlib's recommended parameters) and rehashed on
  sign-in when those parameters change.
* Lockout: ``MAX_FAILURES`` consecutive failures lock the account for ``LOCK_DURATION``.
  While locked, even the right password is refused, and refused attempts do not extend
  the lock (so an attacker cannot keep a pharmacist out forever, only for 15 minutes at a
  time). A success resets the counter. The caller shows the same message for an unknown
  user, a wrong password, a disabled account and a locked one (no account enumeration).
* The count is atomic under a parallel burst (hardening #13): an attempt first *reserves*
  a failure with one conditional ``UPDATE ... WHERE failed_attempts < MAX AND not
  locked`` committed before the ~150 ms hash, and only a success gives it back. SQLite
  serialises writers and PostgreSQL re-checks the WHERE clause on the locked row, so at
  most ``MAX_FAILURES`` guesses are ever verified per window, however many arrive at once
  (before: about 8, the right password as 6th or 7th signed in).
* Unknown usernames count and lock the same way (``login_throttle``, keyed by a hash of
  the name), and a locked name, known or not, is refused without hashing: same answer,
  same time, and no CPU spent on a name under attack.
* Usernames are case-insensitive (``username_key``: NFKC, casefolded): "alice" and
  "Alice" are one account.
* Sessions are rows keyed by the SHA-256 of a random token the browser holds: signing out
  or disabling the account ends them at once, which a stateless signed cookie cannot do.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pwdlib import PasswordHash
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cds.store.models import ConsoleSession, LoginThrottle, User

ROLES: tuple[str, ...] = ("pharmacist", "admin")
MAX_FAILURES = 5
LOCK_DURATION = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 12
SESSION_IDLE = timedelta(minutes=60)  # no request for this long: signed out
SESSION_MAX = timedelta(hours=12)  # absolute lifetime, one working shift
_TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often

_hasher = PasswordHash.recommended()
# Verified against when the username is unknown, so that path costs the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class UserError(ValueError):
    """A user command that cannot be done as asked (duplicate name, bad role, ...)."""


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    role: str
    disabled: bool
    failed_attempts: int
    locked_until: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class SessionUser:
    """Who is behind a live session (what every console request needs)."""

    session_id: str
    user_id: int
    username: str
    role: str
    csrf_token: str


LoginOutcome = Literal["ok", "invalid", "disabled", "locked"]


@dataclass(frozen=True)
class LoginResult:
    outcome: LoginOutcome
    user_id: int | None = None


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored here is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _info(u: User) -> UserInfo:
    return UserInfo(
        id=u.id,
        username=u.username,
        role=u.role,
        disabled=u.disabled,
        failed_attempts=u.failed_attempts,
        locked_until=_aware(u.locked_until),
        created_at=_aware(u.created_at) or u.created_at,
    )


def username_key(username: str) -> str:
    """The case-insensitive identity of a username (NFKC, casefolded)."""
    return unicodedata.normalize("NFKC", username.strip()).casefold()


def _by_name(username: str) -> Any:
    return User.username_key == username_key(username)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"password must be at least {MIN_PASSWORD_LENGTH} characters")


def create_user(
    *, session: Session, username: str, password: str, role: str, now: datetime | None = None
) -> UserInfo:
    """Add an account; raises ``UserError`` on a bad role, short password or taken name."""
    username = username.strip()
    if not username:
        raise UserError("username must not be empty")
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    check_password_policy(password)
    if session.scalar(select(User.id).where(_by_name(username))) is not None:
        raise UserError(f"user {username!r} already exists (usernames ignore case)")
    user = User(
        username=username,
        username_key=username_key(username),
        password_hash=hash_password(password),
        role=role,
        disabled=False,
        failed_attempts=0,
        locked_until=None,
        created_at=now or utcnow(),
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:
        raise UserError(f"user {username!r} already exists") from exc
    return _info(user)


def list_users(*, session: Session) -> list[UserInfo]:
    return [_info(u) for u in session.scalars(select(User).order_by(User.username))]


def set_disabled(
    *, session: Session, username: str, disabled: bool, now: datetime | None = None
) -> UserInfo:
    """Disable (and sign out everywhere) or re-enable an account."""
    user = session.scalar(select(User).where(_by_name(username)))
    if user is None:
        raise UserError(f"no user {username!r}")
    user.disabled = disabled
    if disabled:
        revoke_user_sessions(session=session, user_id=user.id, now=now or utcnow())
    else:
        user.failed_attempts, user.locked_until = 0, None
    session.flush()
    return _info(user)


def set_disabled_by_id(
    *, session: Session, user_id: int, disabled: bool, now: datetime | None = None
) -> UserInfo:
    user = session.get(User, user_id)
    if user is None:
        raise UserError(f"no user with id {user_id}")
    return set_disabled(session=session, username=user.username, disabled=disabled, now=now)


def set_password(
    *,
    session: Session,
    username: str | None = None,
    user_id: int | None = None,
    password: str,
    now: datetime | None = None,
    keep_session: str | None = None,
) -> UserInfo:
    """A new password for an account (policy checked, argon2-hashed); clears its lock and
    failure count and ends its sessions (whoever knew the old one is signed out) but
    ``keep_session`` (the owner changing their own password stays signed in)."""
    check_password_policy(password)
    if user_id is not None:
        user = session.get(User, user_id)
    else:
        user = session.scalar(select(User).where(_by_name(username or "")))
    if user is None:
        raise UserError(f"no user {username!r}" if user_id is None else f"no user {user_id}")
    user.password_hash = hash_password(password)
    user.failed_attempts, user.locked_until = 0, None
    session.execute(
        update(ConsoleSession)
        .where(
            ConsoleSession.user_id == user.id,
            ConsoleSession.revoked_at.is_(None),
            ConsoleSession.id != (keep_session or ""),
        )
        .values(revoked_at=now or utcnow())
    )
    session.flush()
    return _info(user)


def unlock(
    *, session: Session, username: str | None = None, user_id: int | None = None
) -> UserInfo:
    """Clear an account's sign-in lock and failure count (nothing else changes)."""
    if user_id is not None:
        user = session.get(User, user_id)
    else:
        user = session.scalar(select(User).where(_by_name(username or "")))
    if user is None:
        raise UserError(f"no user {username!r}" if user_id is None else f"no user {user_id}")
    user.failed_attempts, user.locked_until = 0, None
    session.flush()
    return _info(user)


def verify_password(*, session: Session, user_id: int, password: str) -> bool:
    """Whether ``password`` is this account's (no counting: the caller is signed in)."""
    current = session.scalar(select(User.password_hash).where(User.id == user_id))
    return current is not None and _hasher.verify(password, current)


def authenticate(
    *,
    maker: sessionmaker[Session],
    username: str,
    password: str,
    now: datetime | None = None,
) -> LoginResult:
    """Check a sign-in attempt; the failure count and the lock are updated atomically.

    Three short transactions: reserve an attempt (committed before hashing, so a parallel
    burst cannot get past ``MAX_FAILURES``), verify the password with no transaction open
    (no database lock is held for the hash), then settle (a success gives the reservation
    back, the failure that reaches the limit locks).
    """
    from cds.store.db import write_lock

    now = now or utcnow()
    key = username_key(username)
    with write_lock(maker), maker.begin() as s:
        row = s.execute(
            select(User.id, User.password_hash, User.disabled).where(User.username_key == key)
        ).first()
        if row is None:
            reserved = _reserve_unknown(s, _throttle_key(key), now)
        else:
            reserved = _reserve(s, User, User.id == row.id, now)
    if not reserved:
        return LoginResult("locked")  # no hash: nothing is checked while locked
    if row is None:
        _hasher.verify(password, _DUMMY_HASH)  # the same cost as a real account
        with write_lock(maker), maker.begin() as s:
            _settle_failure(s, LoginThrottle, LoginThrottle.key == _throttle_key(key), now)
        return LoginResult("invalid")
    valid, new_hash = _hasher.verify_and_update(password, row.password_hash)
    with write_lock(maker), maker.begin() as s:
        if row.disabled or not valid:
            _settle_failure(s, User, User.id == row.id, now)
            return LoginResult("disabled" if row.disabled else "invalid")
        values: dict[str, Any] = {"failed_attempts": 0, "locked_until": None}
        if new_hash:
            values["password_hash"] = new_hash
        s.execute(update(User).where(User.id == row.id).values(**values))
    return LoginResult("ok", row.id)


def _throttle_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _open(model: Any, now: datetime) -> Any:
    return (model.failed_attempts < MAX_FAILURES) & (
        model.locked_until.is_(None) | (model.locked_until <= now)
    )


def _reserve(s: Session, model: Any, where: Any, now: datetime) -> bool:
    """Count this attempt as a failure unless the limit is reached or a lock holds.

    One conditional UPDATE: atomic on SQLite (one writer) and PostgreSQL (the WHERE is
    re-evaluated on the row it locks). An expired lock is cleared in the same statement.
    """
    values: dict[str, Any] = {"failed_attempts": model.failed_attempts + 1, "locked_until": None}
    if model is LoginThrottle:
        values["updated_at"] = now
    result = s.execute(update(model).where(where, _open(model, now)).values(**values))
    return bool(getattr(result, "rowcount", 0))


def _settle_failure(s: Session, model: Any, where: Any, now: datetime) -> None:
    """The reserved attempt failed: lock if it was the ``MAX_FAILURES``-th."""
    s.execute(
        update(model)
        .where(where, model.failed_attempts >= MAX_FAILURES)
        .values(failed_attempts=0, locked_until=now + LOCK_DURATION)
    )


def _reserve_unknown(s: Session, key: str, now: datetime) -> bool:
    if s.get(LoginThrottle, key) is None:
        # Forget names nobody has tried for a day (bounded table, cheap: indexed).
        s.execute(delete(LoginThrottle).where(LoginThrottle.updated_at < now - timedelta(days=1)))
        try:
            with s.begin_nested():
                s.add(LoginThrottle(key=key, failed_attempts=0, locked_until=None, updated_at=now))
                s.flush()
        except IntegrityError:  # a parallel attempt created it first
            pass
    return _reserve(s, LoginThrottle, LoginThrottle.key == key, now)


def _token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_session(*, session: Session, user_id: int, now: datetime | None = None) -> str:
    """Start a session; returns the token for the cookie (never stored in clear)."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            id=_token_id(token),
            user_id=user_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + SESSION_MAX,
        )
    )
    session.flush()
    return token


def load_session(
    *, session: Session, token: str, now: datetime | None = None
) -> SessionUser | None:
    """The user behind ``token`` if the session is live and the account enabled."""
    now = now or utcnow()
    row = session.execute(
        select(ConsoleSession, User)
        .join(User, User.id == ConsoleSession.user_id)
        .where(ConsoleSession.id == _token_id(token))
    ).first()
    if row is None:
        return None
    cs, user = row
    last_seen = _aware(cs.last_seen_at) or now
    expires = _aware(cs.expires_at) or now
    if (
        cs.revoked_at is not None
        or user.disabled
        or expires <= now
        or now - last_seen > SESSION_IDLE
    ):
        return None
    if now - last_seen > _TOUCH_EVERY:
        cs.last_seen_at = now
        session.flush()
    return SessionUser(
        session_id=cs.id,
        user_id=user.id,
        username=user.username,
        role=user.role,
        csrf_token=cs.csrf_token,
    )


def revoke_session(*, session: Session, session_id: str, now: datetime | None = None) -> None:
    session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.id == session_id, ConsoleSession.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )


def revoke_user_sessions(*, session: Session, user_id: int, now: datetime | None = None) -> None:
    session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.user_id == user_id, ConsoleSession.revoked_at.is_(None))
        .values(revoked_at=now or utcnow())
    )
