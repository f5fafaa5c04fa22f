"""Alerts in the database: open (deduplicated), acknowledge, comment, resolve, and their history.

Deduplication is the partial unique index ``alerts_one_unresolved``: at most one unresolved alert
per stream and kind, whichever worker gets there first. A transition is also recognised when it
comes again (a new owner of a detection partition replaying the feed after its predecessor's last
checkpoint): an opening is new only if no alert of that stream and kind started at or after the
reading that opened it, and a resolution applies only to an alert that started before it.
Opening also takes a per-district advisory lock, so the district rate limit holds across several
ingest workers. Every change adds
a row to ``alert_events``, which doubles as the outbox for MQTT publication.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from processing.errors import DetectionError
from processing.kinds import Severity

log = logging.getLogger(__name__)

Pool = AsyncConnectionPool[AsyncConnection[tuple[object, ...]]]
OpenOutcome = Literal["opened", "refreshed", "deferred", "replayed"]
State = Literal["open", "acknowledged", "resolved"]
DETECTOR = "detector"
_LOCK_CLASS = 0x5C17_0A1E  # advisory lock namespace: "alerts per district"
_SEVERITY_RANK = "CASE {} WHEN 'critical' THEN 3 WHEN 'warning' THEN 2 ELSE 1 END"


class Outbox(Protocol):
    """What sends recorded alert changes on: ingest's MQTT publisher (``ingest.alert_publisher``).

    Detection only records changes in ``alert_events``; how they leave is the caller's business.
    """

    async def publish_pending(self, pool: Pool) -> int:
        """Send some of what is unsent; returns how many went (0: nothing left)."""
        ...

    async def close(self) -> None:
        """Let go of the connection."""
        ...


class AlertError(DetectionError):
    """An operator action that cannot be done (unknown alert, already resolved...)."""


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert as stored."""

    alert_id: int
    stream_id: int
    device_id: str
    site: str
    kind: str
    severity: str
    state: str
    message: str
    score: float
    value: float | None
    started_at: datetime
    opened_at: datetime
    last_seen_at: datetime
    occurrences: int
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One entry of an alert's history."""

    event_id: int
    alert_id: int
    at: datetime
    action: str
    actor: str
    comment: str


@dataclass(frozen=True, slots=True)
class Opening:
    """What the detectors ask to open."""

    stream_id: int
    device_id: str
    site: str
    kind: str
    severity: Severity
    message: str
    score: float
    value: float | None
    started_at: datetime


_COLUMNS = (
    "alert_id, stream_id, device_id, site, kind, severity, state, message, score, value,"
    " started_at, opened_at, last_seen_at, occurrences, acknowledged_at, acknowledged_by,"
    " resolved_at, resolved_by"
)
_FIND_UNRESOLVED = (
    "SELECT alert_id, severity FROM alerts"
    " WHERE stream_id = %s AND kind = %s AND state <> 'resolved' FOR UPDATE"
)
# Built from constants only; values are always parameters.
_REFRESH = (
    "UPDATE alerts SET last_seen_at = now(), occurrences = occurrences + 1,"
    " score = greatest(score, %s), message = %s,"
    f" severity = CASE WHEN {_SEVERITY_RANK.format('%s')} > {_SEVERITY_RANK.format('severity')}"
    " THEN %s ELSE severity END"
    " WHERE alert_id = %s"
)
_SEEN = (
    "SELECT alert_id FROM alerts WHERE stream_id = %s AND kind = %s AND started_at >= %s"
    " ORDER BY started_at DESC LIMIT 1"
)
_RECENT_IN_SITE = (
    "SELECT count(*) FROM alerts WHERE site = %s AND opened_at > now() - make_interval(secs => %s)"
)
_INSERT = (
    "INSERT INTO alerts (stream_id, device_id, site, kind, severity, message, score, value,"
    " started_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (stream_id, kind) WHERE state <> 'resolved' DO NOTHING RETURNING alert_id"
)
_EVENT = "INSERT INTO alert_events (alert_id, action, actor, comment) VALUES (%s, %s, %s, %s)"


class AlertStore:
    """Alert operations over a connection pool.

    Args:
        pool: An open pool on the telemetry database.
        per_site_per_minute: New alerts allowed per district per minute; more are deferred.
    """

    def __init__(self, pool: Pool, *, per_site_per_minute: int = 30) -> None:
        self._pool = pool
        self.per_site_per_minute = per_site_per_minute

    async def open(self, opening: Opening) -> tuple[OpenOutcome, int | None]:
        """Open an alert, or fold the detection into the unresolved one for that stream and kind.

        Returns ``("deferred", None)`` when the district has had its quota of new alerts this
        minute: the caller keeps the opening and tries again while the condition lasts; and
        ``("replayed", id)`` when this detection, or a later one, is already recorded.
        """
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, opening.site)
            )
            cursor = await conn.execute(
                _SEEN, (opening.stream_id, opening.kind, opening.started_at)
            )
            seen = await cursor.fetchone()
            if seen is not None:
                return "replayed", int(str(seen[0]))
            cursor = await conn.execute(_FIND_UNRESOLVED, (opening.stream_id, opening.kind))
            existing = await cursor.fetchone()
            if existing is not None:
                alert_id = int(str(existing[0]))
                await conn.execute(
                    _REFRESH,
                    (opening.score, opening.message, opening.severity, opening.severity, alert_id),
                )
                return "refreshed", alert_id
            cursor = await conn.execute(_RECENT_IN_SITE, (opening.site, 60))
            row = await cursor.fetchone()
            if row is not None and int(str(row[0])) >= self.per_site_per_minute:
                return "deferred", None
            cursor = await conn.execute(
                _INSERT,
                (
                    opening.stream_id,
                    opening.device_id,
                    opening.site,
                    opening.kind,
                    opening.severity,
                    opening.message,
                    opening.score,
                    opening.value,
                    opening.started_at,
                ),
            )
            inserted = await cursor.fetchone()
            if inserted is None:  # pragma: no cover - the advisory lock makes this unreachable
                return "refreshed", None
            alert_id = int(str(inserted[0]))
            await conn.execute(_EVENT, (alert_id, "opened", DETECTOR, opening.message))
            return "opened", alert_id

    async def resolve_condition(
        self, stream_id: int, kind: str, comment: str, at: datetime | None = None
    ) -> int | None:
        """The detectors saw the condition end (at ``at``): resolve its unresolved alert, if any.

        An alert that started after ``at`` is a later episode, not the one that ended.
        """
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "UPDATE alerts SET state = 'resolved', resolved_at = now(), resolved_by = %s"
                " WHERE stream_id = %s AND kind = %s AND state <> 'resolved'"
                " AND (%s::timestamptz IS NULL OR started_at <= %s) RETURNING alert_id",
                (DETECTOR, stream_id, kind, at, at),
            )
            row = await cursor.fetchone()
            if row is None:
                return None
            alert_id = int(str(row[0]))
            await conn.execute(_EVENT, (alert_id, "resolved", DETECTOR, comment))
            return alert_id

    async def acknowledge(self, alert_id: int, user: str, comment: str = "") -> Alert:
        """An operator takes the alert on."""
        return await self._act(
            alert_id,
            user,
            comment,
            "acknowledged",
            "UPDATE alerts SET state = 'acknowledged', acknowledged_at = now(),"
            " acknowledged_by = %s WHERE alert_id = %s AND state = 'open'",
        )

    async def resolve(self, alert_id: int, user: str, comment: str = "") -> Alert:
        """An operator closes the alert."""
        return await self._act(
            alert_id,
            user,
            comment,
            "resolved",
            "UPDATE alerts SET state = 'resolved', resolved_at = now(), resolved_by = %s"
            " WHERE alert_id = %s AND state <> 'resolved'",
        )

    async def comment(self, alert_id: int, user: str, comment: str) -> Alert:
        """Add a note to the alert's history."""
        if not comment.strip():
            raise AlertError("a comment needs some text")
        return await self._act(alert_id, user, comment, "commented", None)

    async def _act(
        self, alert_id: int, user: str, comment: str, action: str, update: str | None
    ) -> Alert:
        if not user.strip():
            raise AlertError("an action needs the name of who takes it")
        async with self._pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(
                "SELECT state FROM alerts WHERE alert_id = %s FOR UPDATE", (alert_id,)
            )
            row = await cursor.fetchone()
            if row is None:
                raise AlertError(f"no alert {alert_id}")
            if update is not None:
                cursor = await conn.execute(update, (user, alert_id))
                if cursor.rowcount == 0:
                    raise AlertError(f"alert {alert_id} is {row[0]}; it cannot be {action}")
            await conn.execute(_EVENT, (alert_id, action, user, comment))
        alert = await self.get(alert_id)
        assert alert is not None
        return alert

    async def get(self, alert_id: int) -> Alert | None:
        """One alert."""
        async with self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=class_row(Alert))
            await cursor.execute(
                f"SELECT {_COLUMNS} FROM alerts WHERE alert_id = %s",
                (alert_id,),
            )
            return await cursor.fetchone()

    async def find(
        self,
        *,
        state: State | None = None,
        kind: str | None = None,
        site: str | None = None,
        severity: Severity | None = None,
        limit: int = 200,
    ) -> list[Alert]:
        """Alerts, newest first, filtered by whatever is given."""
        async with self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=class_row(Alert))
            await cursor.execute(
                f"SELECT {_COLUMNS} FROM alerts"
                " WHERE (%(state)s::text IS NULL OR state = %(state)s)"
                " AND (%(kind)s::text IS NULL OR kind = %(kind)s)"
                " AND (%(site)s::text IS NULL OR site = %(site)s)"
                " AND (%(severity)s::text IS NULL OR severity = %(severity)s)"
                " ORDER BY opened_at DESC, alert_id DESC LIMIT %(limit)s",
                {"state": state, "kind": kind, "site": site, "severity": severity, "limit": limit},
            )
            return await cursor.fetchall()

    async def history(self, alert_id: int) -> list[AlertEvent]:
        """Everything that happened to one alert, oldest first."""
        async with self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=class_row(AlertEvent))
            await cursor.execute(
                "SELECT event_id, alert_id, at, action, actor, comment FROM alert_events"
                " WHERE alert_id = %s ORDER BY event_id",
                (alert_id,),
            )
            return await cursor.fetchall()
