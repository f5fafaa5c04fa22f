"""Control-room accounts: passwords, a second factor, lockout, one-time links, sessions.

Operators and admins must give a TOTP code as well as their password; technicians and
planners may. A code is accepted once: the time step of the last one used is kept, and a code
of that step or an earlier one is refused (RFC 6238, section 5.2). After ``MAX_FAILURES``
failures in a row an account is locked for ``LOCK_MINUTES``; a failure never says which part
was wrong. Sessions live in ``control_sessions``: the browser holds a random token, the server
its hash, so a session ends when the server says so (logout, a disabled account, a changed
role, "sign out everywhere", the idle and absolute timeouts). Nothing here logs a password, a
code, a secret or a session token.

Examples:
    >>> needs_second_factor("operator"), needs_second_factor("planner")
    (True, False)
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

import psycopg
import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from dashboard.errors import ControlRoomError

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


class AccountError(ControlRoomError, ValueError):
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


def _code_step(secret: str | None, code: str, now: datetime, after: int | None) -> int | None:
    """The time step ``code`` belongs to, if it is valid now and newer than step ``after``.

    One step either side of now, for phones whose clocks drift; every candidate is compared
    (in constant time), so the answer takes as long whichever step matches.
    """
    if not secret:
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    given = code.strip()
    found = None
    for step in (current - 1, current, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), given) and (after is None or step > after):
            found = step
    return found


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
        "SELECT user_id, role, password_hash, totp_secret, locked_until, disabled_at,"
        " totp_last_step FROM users WHERE name = %s FOR UPDATE",
        (name,),
    ).fetchone()
    if row is None:
        _verify(_DUMMY_HASH, password)
        return Outcome(None, "invalid")
    user_id, role, stored, secret, locked_until, disabled_at, last_step = row
    assert isinstance(locked_until, datetime | None)
    if disabled_at is not None:
        _verify(_DUMMY_HASH, password)
        return Outcome(None, "invalid")
    if locked_until is not None and locked_until > now:
        _verify(_DUMMY_HASH, password)
        return Outcome(None, "locked")
    password_ok = _verify(str(stored), password)
    step = None
    if needs_second_factor(str(role)):
        after = None if last_step is None else int(str(last_step))
        step = _code_step(None if secret is None else str(secret), code, now, after)
    factor_ok = step is not None or not needs_second_factor(str(role))
    if not (password_ok and factor_ok):
        conn.execute(
            "UPDATE users SET failed_logins = failed_logins + 1,"
            " locked_until = CASE WHEN failed_logins + 1 >= %s THEN %s ELSE locked_until END"
            " WHERE user_id = %s",
            (MAX_FAILURES, now + timedelta(minutes=LOCK_MINUTES), user_id),
        )
        return Outcome(None, "second-factor" if password_ok else "invalid")
    conn.execute(
        "UPDATE users SET failed_logins = 0, locked_until = NULL, last_login_at = %s,"
        " totp_last_step = coalesce(%s, totp_last_step) WHERE user_id = %s",
        (now, step, user_id),
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
    """Change a user's role, ending their sessions.

    Returns a new TOTP secret when the new role needs one it lacks.
    """
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
    sign_out_everywhere(conn, name, "role changed")
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
    sign_out_everywhere(conn, name, "account disabled")


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


# -- sessions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """How long a session lasts: without a request (``idle``), and at most (``absolute``)."""

    idle: timedelta
    absolute: timedelta


@dataclass(frozen=True, slots=True)
class Session:
    """An open session's user, and when it was last seen (to know when to note it again)."""

    user: User
    last_seen_at: datetime


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def open_session(conn: Connection, user: User, now: datetime) -> str:
    """Start a session for ``user``; returns its token (for the cookie, nowhere else)."""
    token = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO control_sessions (session_hash, user_id, role, started_at, last_seen_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (_digest(token), user.user_id, user.role, now, now),
    )
    # Sessions over a month past their end are of no use to anyone: forgotten at each login.
    conn.execute(
        "DELETE FROM control_sessions WHERE user_id = %s AND coalesce(ended_at, last_seen_at) < %s",
        (user.user_id, now - timedelta(days=30)),
    )
    return token


def session(conn: Connection, token: str, now: datetime, limits: Limits) -> Session | None:
    """The open session ``token`` names, if it has not ended, timed out or lost its account."""
    row = conn.execute(
        "SELECT s.user_id, u.name, u.role, s.started_at, s.last_seen_at"
        " FROM control_sessions s JOIN users u USING (user_id)"
        " WHERE s.session_hash = %s AND s.ended_at IS NULL AND u.disabled_at IS NULL"
        " AND u.role = s.role",
        (_digest(token),),
    ).fetchone()
    if row is None:
        return None
    user_id, name, role, started_at, last_seen_at = row
    assert isinstance(started_at, datetime)
    assert isinstance(last_seen_at, datetime)
    if now - started_at > limits.absolute or now - last_seen_at > limits.idle:
        return None
    return Session(User(int(str(user_id)), str(name), role), last_seen_at)  # type: ignore[arg-type]


def seen(conn: Connection, token: str, now: datetime) -> None:
    """Note that the session was used now (its idle time starts again)."""
    conn.execute(
        "UPDATE control_sessions SET last_seen_at = greatest(last_seen_at, %s)"
        " WHERE session_hash = %s",
        (now, _digest(token)),
    )


def close_session(conn: Connection, token: str, now: datetime, why: str) -> None:
    """End one session (logout, or a timeout noticed)."""
    conn.execute(
        "UPDATE control_sessions SET ended_at = %s, ended_why = %s"
        " WHERE session_hash = %s AND ended_at IS NULL",
        (now, why, _digest(token)),
    )


def sign_out_everywhere(conn: Connection, name: str, why: str = "signed out everywhere") -> int:
    """End every open session of ``name``; returns how many there were."""
    row = conn.execute("SELECT user_id FROM users WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise AccountError(f"no user named {name!r}")
    return conn.execute(
        "UPDATE control_sessions SET ended_at = now(), ended_why = %s"
        " WHERE user_id = %s AND ended_at IS NULL",
        (why, row[0]),
    ).rowcount
