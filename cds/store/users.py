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
  user, a wrong password, a disabled account and a locked one (no account enumeration),
  and an unknown user still costs one hash verification (no timing oracle).
* Sessions are rows keyed by the SHA-256 of a random token the browser holds: signing out
  or disabling the account ends them at once, which a stateless signed cookie cannot do.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pwdlib import PasswordHash
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cds.store.models import ConsoleSession, User

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
    user = User(
        username=username,
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
    user = session.scalar(select(User).where(User.username == username))
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


def authenticate(
    *, session: Session, username: str, password: str, now: datetime | None = None
) -> LoginResult:
    """Check a sign-in attempt and update the failure counter and lock atomically."""
    now = now or utcnow()
    user = session.scalar(select(User).where(User.username == username.strip()))
    if user is None:
        _hasher.verify(password, _DUMMY_HASH)
        return LoginResult("invalid")
    valid, new_hash = _hasher.verify_and_update(password, user.password_hash)
    if user.disabled:
        return LoginResult("disabled")
    locked_until = _aware(user.locked_until)
    if locked_until is not None and locked_until > now:
        return LoginResult("locked")
    if not valid:
        # Atomic increment: parallel guesses cannot lose counts.
        session.execute(
            update(User).where(User.id == user.id).values(failed_attempts=User.failed_attempts + 1)
        )
        session.refresh(user)
        if user.failed_attempts >= MAX_FAILURES:
            user.failed_attempts, user.locked_until = 0, now + LOCK_DURATION
        session.flush()
        return LoginResult("invalid")
    user.failed_attempts, user.locked_until = 0, None
    if new_hash:
        user.password_hash = new_hash
    session.flush()
    return LoginResult("ok", user.id)


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
