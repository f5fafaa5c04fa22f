"""Control-room accounts: Argon2id passwords, TOTP second factor, lockout, one-time links.

Operators and admins must give a TOTP code as well as their password; technicians and
planners may. After ``MAX_FAILURES`` failures in a row an account is locked for
``LOCK_MINUTES``; a failure never says which part was wrong. Nothing here logs a password, a
code or a secret.

Examples:
    >>> needs_second_factor("operator"), needs_second_factor("planner")
    (True, False)
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

import psycopg
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

Role = Literal["operator", "technician", "planner", "admin"]
ROLES: Final[tuple[Role, ...]] = ("operator", "technician", "planner", "admin")
SECOND_FACTOR_ROLES: Final = frozenset({"operator", "admin"})
MAX_FAILURES: Final = 5
LOCK_MINUTES: Final = 15
MIN_PASSWORD: Final = 12
_HASHER: Final = PasswordHasher()  # Argon2id with the library's current recommended costs
# Verifying against this keeps an unknown name as slow as a wrong password.
_DUMMY_HASH: Final = _HASHER.hash(secrets.token_urlsafe(16))
Connection = psycopg.Connection[tuple[object, ...]]


class AccountError(ValueError):
    """An account change that cannot be made as asked."""


@dataclass(frozen=True, slots=True)
class User:
    """Who is logged in."""

    user_id: int
    name: str
    role: Role


@dataclass(frozen=True, slots=True)
class Outcome:
    """A login attempt's result: the user, or why not (said to the person in general terms)."""

    user: User | None
    reason: Literal["ok", "invalid", "locked", "second-factor"]


def needs_second_factor(role: str) -> bool:
    """Whether ``role`` must log in with a TOTP code."""
    return role in SECOND_FACTOR_ROLES


def hash_password(password: str) -> str:
    """The Argon2id hash stored for ``password``."""
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    return _HASHER.hash(password)


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _code_ok(secret: str | None, code: str) -> bool:
    # One step either side, for phones whose clocks drift.
    return bool(secret) and pyotp.TOTP(str(secret)).verify(code.strip(), valid_window=1)


def login(conn: Connection, name: str, password: str, code: str, now: datetime) -> Outcome:
    """Check a login; count failures and lock after too many.

    Every attempt verifies one password hash, the account's or a dummy one, so an unknown,
    disabled or locked name takes as long as a wrong password. The account's row is locked
    from the read of its failure count to the count's update: attempts sent at once are
    checked one after another, and no more than ``MAX_FAILURES`` passwords are ever tried.
    The reason is for the audit log; the person is told the same whatever it is.
    """
    with conn.transaction():
        return _login(conn, name, password, code, now)


def _login(conn: Connection, name: str, password: str, code: str, now: datetime) -> Outcome:
    row = conn.execute(
        "SELECT user_id, role, password_hash, totp_secret, locked_until, disabled_at"
        " FROM users WHERE name = %s FOR UPDATE",
        (name,),
    ).fetchone()
    if row is None:
        _verify(_DUMMY_HASH, password)
        return Outcome(None, "invalid")
    user_id, role, stored, secret, locked_until, disabled_at = row
    assert isinstance(locked_until, datetime | None)
    if disabled_at is not None:
        _verify(_DUMMY_HASH, password)
        return Outcome(None, "invalid")
    if locked_until is not None and locked_until > now:
        _verify(_DUMMY_HASH, password)
        return Outcome(None, "locked")
    password_ok = _verify(str(stored), password)
    factor_ok = not needs_second_factor(str(role)) or _code_ok(
        None if secret is None else str(secret), code
    )
    if not (password_ok and factor_ok):
        conn.execute(
            "UPDATE users SET failed_logins = failed_logins + 1,"
            " locked_until = CASE WHEN failed_logins + 1 >= %s THEN %s ELSE locked_until END"
            " WHERE user_id = %s",
            (MAX_FAILURES, now + timedelta(minutes=LOCK_MINUTES), user_id),
        )
        return Outcome(None, "second-factor" if password_ok else "invalid")
    conn.execute(
        "UPDATE users SET failed_logins = 0, locked_until = NULL, last_login_at = %s"
        " WHERE user_id = %s",
        (now, user_id),
    )
    return Outcome(User(int(str(user_id)), name, role), "ok")  # type: ignore[arg-type]


def current(conn: Connection, user_id: int) -> User | None:
    """The account behind a session, if it still exists and is enabled."""
    row = conn.execute(
        "SELECT name, role FROM users WHERE user_id = %s AND disabled_at IS NULL", (user_id,)
    ).fetchone()
    return None if row is None else User(user_id, str(row[0]), row[1])  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class NewAccount:
    """What a new user is told once: the password and, for roles that need it, the TOTP setup."""

    name: str
    role: Role
    password: str
    totp_secret: str | None

    @property
    def totp_uri(self) -> str | None:
        """The ``otpauth://`` URI an authenticator app reads (as text or a QR code)."""
        if self.totp_secret is None:
            return None
        return pyotp.TOTP(self.totp_secret).provisioning_uri(name=self.name, issuer_name="City")


def create(conn: Connection, name: str, role: str, password: str | None = None) -> NewAccount:
    """Add a user; a random password unless one is given; a TOTP secret when the role needs it."""
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if not name or len(name) > 64 or not name.replace("-", "").replace(".", "").isalnum():
        raise AccountError("name: 1-64 letters, digits, '.' or '-'")
    password = password or secrets.token_urlsafe(15)
    secret = pyotp.random_base32() if needs_second_factor(role) else None
    try:
        conn.execute(
            "INSERT INTO users (name, role, password_hash, totp_secret) VALUES (%s, %s, %s, %s)",
            (name, role, hash_password(password), secret),
        )
    except psycopg.errors.UniqueViolation as exc:
        raise AccountError(f"a user named {name!r} exists") from exc
    return NewAccount(name, role, password, secret)


def set_role(conn: Connection, name: str, role: str) -> str | None:
    """Change a user's role; returns a new TOTP secret when the new role needs one it lacks."""
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    row = conn.execute("SELECT totp_secret FROM users WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise AccountError(f"no user named {name!r}")
    secret = None
    if needs_second_factor(role) and row[0] is None:
        secret = pyotp.random_base32()
    conn.execute(
        "UPDATE users SET role = %s, totp_secret = coalesce(%s, totp_secret) WHERE name = %s",
        (role, secret, name),
    )
    return secret


def disable(conn: Connection, name: str, now: datetime) -> None:
    """Disable a user: their sessions end at the next request."""
    if (
        conn.execute(
            "UPDATE users SET disabled_at = %s WHERE name = %s AND disabled_at IS NULL", (now, name)
        ).rowcount
        == 0
    ):
        raise AccountError(f"no enabled user named {name!r}")


def unlock(conn: Connection, name: str) -> None:
    """Lift a lockout before it runs out."""
    if (
        conn.execute(
            "UPDATE users SET failed_logins = 0, locked_until = NULL WHERE name = %s", (name,)
        ).rowcount
        == 0
    ):
        raise AccountError(f"no user named {name!r}")


def login_link(conn: Connection, name: str, now: datetime, valid: timedelta) -> str:
    """A one-time login token for ``name`` (the demo prints it as a link, as notebooks do)."""
    token = secrets.token_urlsafe(32)
    row = conn.execute("SELECT user_id FROM users WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise AccountError(f"no user named {name!r}")
    conn.execute(
        "INSERT INTO login_links (token_hash, user_id, expires_at) VALUES (%s, %s, %s)",
        (hashlib.sha256(token.encode()).digest(), row[0], now + valid),
    )
    return token


def use_login_link(conn: Connection, token: str, now: datetime) -> User | None:
    """The user a valid, unused, unexpired token logs in; the token is spent."""
    row = conn.execute(
        "UPDATE login_links SET used_at = %s WHERE token_hash = %s AND used_at IS NULL"
        " AND expires_at > %s RETURNING user_id",
        (now, hashlib.sha256(token.encode()).digest(), now),
    ).fetchone()
    return None if row is None else current(conn, int(str(row[0])))
