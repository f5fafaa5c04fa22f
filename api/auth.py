"""Bearer-token authentication and what each role may reach.

Every route names its scope; a request without a valid token gets 401, a valid token whose role
lacks the scope gets 403. Nothing is served before this check.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Final, Literal

import psycopg
from fastapi import Depends, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api import db, tokens

log = logging.getLogger(__name__)

# Set on answers read from a standby: the time of the last commit it had replayed.
DATA_AS_OF: Final = "X-Data-As-Of"

Scope = Literal["catalog", "history", "export"]

# catalog: devices, sensors and the standards' descriptions of them; history: readings,
# aggregates, alerts and observations; export: bulk files (audited).
ALLOWED: Final[dict[Scope, frozenset[str]]] = {
    "catalog": frozenset({"planner", "operator", "technician", "admin"}),
    "history": frozenset({"planner", "operator", "admin"}),
    "export": frozenset({"planner", "admin"}),
}

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer sct_...`")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking."""

    name: str
    role: str


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


async def _principal(
    request: Request,
    response: Response,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise _unauthorised("a bearer token is required (smartcity tokens add ...)")
    parsed = tokens.parse(credentials.credentials)
    if parsed is None:
        raise _unauthorised("not a token of this API")
    token_id, secret = parsed
    async with db.pool(request).connection() as conn:
        cursor = await conn.execute(
            "SELECT name, role, secret_hash,"
            " last_used_at IS NULL OR last_used_at < now() - interval '1 minute',"
            " CASE WHEN pg_is_in_recovery() THEN pg_last_xact_replay_timestamp() END"
            " FROM api_tokens WHERE token_id = %s AND revoked_at IS NULL",
            (token_id,),
        )
        row = await cursor.fetchone()
    if row is None or not tokens.matches(secret, bytes(row[2])):
        raise _unauthorised("unknown or revoked token")
    if row[3]:
        await _note_use(db.writer(request), token_id)
    if row[4] is not None:
        # Read from a standby: its data is as fresh as the last commit it replayed.
        response.headers[DATA_AS_OF] = row[4].isoformat()
    return Principal(str(row[0]), str(row[1]))


async def _note_use(pool: AsyncConnectionPool, token_id: int) -> None:
    """Record the token's last use, to the minute.

    A write per request would cost more than it tells. Best effort: while the primary fails
    over, answering matters more than this note.
    """
    try:
        async with pool.connection(timeout=2) as conn:
            await conn.execute(
                "UPDATE api_tokens SET last_used_at = now() WHERE token_id = %s"
                " AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
                (token_id,),
            )
    except (psycopg.Error, PoolTimeout) as exc:
        log.info("token use not recorded (%s)", type(exc).__name__)


def _admitting(scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if principal.role not in ALLOWED[scope]:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"role {principal.role!r} may not use {scope};"
                f" allowed: {', '.join(sorted(ALLOWED[scope]))}",
            )
        return principal

    return check


# Route parameters that admit only the roles allowed each scope.
CatalogReader = Annotated[Principal, Depends(_admitting("catalog"))]
HistoryReader = Annotated[Principal, Depends(_admitting("history"))]
Exporter = Annotated[Principal, Depends(_admitting("export"))]
