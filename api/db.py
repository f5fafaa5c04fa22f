"""The API's database access: pools for reads and writes, parameterised queries only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import Request
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

Query = str | sql.Composed


def pool(request: Request) -> AsyncConnectionPool:
    """The pool reads go to (a standby when one is configured) of the app serving ``request``."""
    return request.app.state.read_pool  # type: ignore[no-any-return]


def writer(request: Request) -> AsyncConnectionPool:
    """The pool on the primary, for the few writes the API makes."""
    return request.app.state.pool  # type: ignore[no-any-return]


async def fetch(
    request: Request, query: Query, params: Mapping[str, object] | Sequence[object] = ()
) -> list[dict[str, Any]]:
    """Every row of ``query`` as a dict by column name."""
    async with pool(request).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


async def audit(request: Request, actor: str, action: str, detail: str) -> None:
    """Record ``action`` by ``actor`` (``detail`` is JSON) in the audit log."""
    async with writer(request).connection() as conn:
        await conn.execute(
            "INSERT INTO audit_log (actor, action, detail) VALUES (%s, %s, %s::jsonb)",
            (actor, action, detail),
        )
