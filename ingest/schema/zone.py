"""The city's time zone in the schema, and moving the 1-day rollups when it changes.

History answers count days as the city's local days, and the 1-day rollup is kept in the same
days so it can serve them. The zone is recorded in ``city_settings``; :func:`set_city_zone`
changes it and recomputes every day row from the finer rollups in the same transaction, under
the rollup refresher's lock, so no reader ever sees days of two zones.
"""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from edge.timestamps import whole_hours

log = logging.getLogger(__name__)

ROLLUP_LOCK_KEY = 0x526F6C6C  # the same lock as ingest.rollups: one refresher at a time

_REBUILD = sql.SQL(
    "INSERT INTO rollup_1d (stream_id, bucket, n, total, low, high, last_ts, last_value)"
    " SELECT stream_id, date_trunc('day', bucket, %(zone)s), sum(n), sum(total), min(low),"
    " max(high), max(last_ts), (array_agg(last_value ORDER BY last_ts DESC))[1]"
    " FROM {source} GROUP BY 1, 2"
)


def day_source(zone: ZoneInfo) -> str:
    """The rollup local days are summed from: hours where they fit whole, else minutes."""
    return "rollup_1h" if whole_hours(zone) else "rollup_1m"


def city_zone(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    """The zone the schema records."""
    row = conn.execute("SELECT time_zone FROM city_settings").fetchone()
    return str(row[0]) if row else "UTC"


def set_city_zone(conn: psycopg.Connection[tuple[object, ...]], zone: str) -> bool:
    """Record ``zone`` and move the day rollups to its local days; False when already so.

    Raises:
        ValueError: ``zone`` is not a known IANA zone.
    """
    tz = ZoneInfo(zone)  # refuses an unknown zone before anything changes
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ROLLUP_LOCK_KEY,))
        if city_zone(conn) == zone:
            return False
        conn.execute("DELETE FROM rollup_1d")
        conn.execute(_REBUILD.format(source=sql.Identifier(day_source(tz))), {"zone": zone})
        conn.execute("UPDATE city_settings SET time_zone = %s", (zone,))
    log.info("city time zone set to %s; day rollups recomputed in its local days", zone)
    return True
