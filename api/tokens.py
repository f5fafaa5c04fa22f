"""API tokens: made, listed and revoked by an administrator; checked on every request.

A token reads ``sct_<id>_<secret>``: the id finds the row, the secret's SHA-256 is compared in
constant time. Only the hash is stored and the token is shown once.

Examples:
    >>> parse("sct_12_" + "a" * 43)[0]
    12
    >>> parse("Bearer nonsense") is None
    True
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

import psycopg

from api.errors import ApiError

Role = Literal["planner", "operator", "technician", "admin"]
ROLES: Final[tuple[Role, ...]] = ("planner", "operator", "technician", "admin")
_SHAPE: Final = re.compile(r"sct_([1-9][0-9]{0,9})_([A-Za-z0-9_-]{43})")
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class TokenError(ApiError, ValueError):
    """A token that cannot be made or revoked as asked."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token as listed (never its secret)."""

    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def digest(secret: str) -> bytes:
    """What is stored for ``secret``."""
    return hashlib.sha256(secret.encode()).digest()


def parse(token: str) -> tuple[int, str] | None:
    """(id, secret) of a well-formed token, else None."""
    match = _SHAPE.fullmatch(token)
    return None if match is None else (int(match[1]), match[2])


def matches(secret: str, stored: bytes) -> bool:
    """Whether ``secret`` is the one whose hash is ``stored`` (constant time)."""
    return hmac.compare_digest(digest(secret), stored)


def create(conn: psycopg.Connection[tuple[object, ...]], name: str, role: str) -> str:
    """Make a token named ``name`` with ``role``; returns it (the only time it is seen)."""
    if role not in ROLES:
        raise TokenError(f"role must be one of {', '.join(ROLES)}")
    if not _NAME.fullmatch(name):
        raise TokenError("name: 1-64 letters, digits, '.', '_', '@' or '-', starting alnum")
    secret = secrets.token_urlsafe(32)
    try:
        row = conn.execute(
            "INSERT INTO api_tokens (name, role, secret_hash) VALUES (%s, %s, %s)"
            " RETURNING token_id",
            (name, role, digest(secret)),
        ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        raise TokenError(f"a token named {name!r} exists; revoke it or choose another") from exc
    assert row is not None
    return f"sct_{row[0]}_{secret}"


def revoke(conn: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    """Revoke the token named ``name``; it stops working at once."""
    cursor = conn.execute(
        "UPDATE api_tokens SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL", (name,)
    )
    if cursor.rowcount == 0:
        raise TokenError(f"no active token named {name!r}")


def listing(conn: psycopg.Connection[tuple[object, ...]]) -> list[TokenInfo]:
    """Every token, newest first."""
    rows = conn.execute(
        "SELECT name, role, created_at, last_used_at, revoked_at FROM api_tokens"
        " ORDER BY created_at DESC, token_id DESC"
    ).fetchall()
    return [TokenInfo(*row) for row in rows]  # type: ignore[arg-type]
