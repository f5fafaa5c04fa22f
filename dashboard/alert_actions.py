"""Alert queries for the control room, and its actions through the shared alert lifecycle.

Acknowledging and resolving go through :class:`processing.alerts.AlertStore`, the code the
detectors use, so the rules (which state may follow which, the history row that doubles as
the MQTT outbox) are one and the same. Those calls are rare and human-paced: each opens a
one-connection async pool for its duration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from processing.alerts import Alert, AlertError, AlertStore
from processing.kinds import Kind

Action = Literal["acknowledge", "resolve", "comment"]
LIMIT = 200

_LIST = """
SELECT alert_id, opened_at, device_id, site, kind, severity, state, message,
       acknowledged_by, resolved_by
  FROM alerts
 WHERE (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s))
   AND (%(severities)s::text[] IS NULL OR severity = ANY(%(severities)s))
   AND (%(sites)s::text[] IS NULL OR site = ANY(%(sites)s))
   AND (%(states)s::text[] IS NULL OR state = ANY(%(states)s))
 ORDER BY opened_at DESC, alert_id DESC
 LIMIT %(limit)s
"""


def _nonempty(values: Sequence[str] | None) -> list[str] | None:
    return list(values) if values else None


def listing(
    pool: ConnectionPool,
    *,
    kinds: Sequence[str] | None,
    severities: Sequence[str] | None,
    sites: Sequence[str] | None,
    states: Sequence[str] | None,
) -> list[dict[str, Any]]:
    """The newest alerts matching the filters (an empty filter admits everything)."""
    params = {
        "kinds": _nonempty(kinds), "severities": _nonempty(severities),
        "sites": _nonempty(sites), "states": _nonempty(states), "limit": LIMIT,
    }  # fmt: skip
    with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_LIST, params)
        return cur.fetchall()


def choices(pool: ConnectionPool) -> dict[str, list[str]]:
    """Every kind an alert can have (and any other stored), and the districts, for the filters.

    Every kind is offered before any alert of it exists, so an operator can set the filter up
    for what they watch, and a new city's filter is not empty.
    """
    with pool.connection() as conn:
        stored = [str(r[0]) for r in conn.execute("SELECT DISTINCT kind FROM alerts ORDER BY 1")]
        sites = [str(r[0]) for r in conn.execute("SELECT DISTINCT site FROM devices ORDER BY 1")]
    known = [kind.slug for kind in Kind]
    return {"kinds": known + [k for k in stored if k not in known], "sites": sites}


def detail(pool: ConnectionPool, alert_id: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One alert and its history, oldest first."""
    with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT alert_id, stream_id, device_id, site, kind, severity, state, message, score,"
            " value, started_at, opened_at, occurrences FROM alerts WHERE alert_id = %s",
            (alert_id,),
        )
        alert = cur.fetchone()
        if alert is None:
            raise AlertError(f"no alert {alert_id}")
        cur.execute(
            "SELECT at, action, actor, comment FROM alert_events WHERE alert_id = %s"
            " ORDER BY event_id",
            (alert_id,),
        )
        return alert, cur.fetchall()


def act(database_url: str, action: Action, alert_id: int, user: str, comment: str) -> Alert:
    """Acknowledge, resolve or comment on an alert as ``user``.

    Raises:
        AlertError: The alert does not exist, or its state does not allow the action.
    """

    async def run() -> Alert:
        async with AsyncConnectionPool(database_url, min_size=1, max_size=1, open=False) as pool:
            store = AlertStore(pool)
            if action == "acknowledge":
                return await store.acknowledge(alert_id, user, comment)
            if action == "resolve":
                return await store.resolve(alert_id, user, comment)
            return await store.comment(alert_id, user, comment)

    return asyncio.run(run())
