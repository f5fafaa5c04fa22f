"""Parameterised, read-only SQL returning DataFrames: the dashboard's only database access.

Callbacks reach the pool through the Flask app serving them, so nothing here runs at import.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from flask import current_app
from psycopg_pool import ConnectionPool

POOL_KEY = "smartcity.pool"
READ_POOL_KEY = "smartcity.read_pool"


def pool() -> ConnectionPool:
    """The pool the app serving the current request reads from (a standby when configured)."""
    return current_app.extensions[READ_POOL_KEY]  # type: ignore[no-any-return]


def writer() -> ConnectionPool:
    """The pool on the primary, for what the control room records (accounts, configurations)."""
    return current_app.extensions[POOL_KEY]  # type: ignore[no-any-return]


def data_as_of(*, db: ConnectionPool | None = None) -> datetime | None:
    """When read from a standby, the time of the last commit it had replayed; else None."""
    with (db or pool()).connection() as conn:
        row = conn.execute(
            "SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_xact_replay_timestamp() END"
        ).fetchone()
    return row[0] if row else None


def _frame(
    sql: str,
    params: tuple[object, ...] | dict[str, object] = (),
    *,
    db: ConnectionPool | None = None,
) -> pd.DataFrame:
    with (db or pool()).connection() as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        columns = [c.name for c in cur.description or []]
        return pd.DataFrame(cur.fetchall(), columns=columns)


_DEVICES = """
SELECT d.device_id, d.name, d.site, d.family, d.lat, d.lon, d.last_seen, d.state,
       (SELECT max(l.ts) FROM latest l JOIN streams s USING (stream_id)
         WHERE s.device_id = d.device_id) AS last_reading
  FROM devices d
 ORDER BY d.site, d.device_id
"""

_TOTALS = """
SELECT (SELECT count(*) FROM devices) AS devices,
       (SELECT count(*) FROM devices WHERE last_seen > %(since)s) AS reporting,
       (SELECT count(*) FROM latest WHERE ts > %(since)s) AS live_streams,
       (SELECT count(*) FROM rejections WHERE received_at > %(since)s) AS rejections
"""


def devices(*, db: ConnectionPool | None = None) -> pd.DataFrame:
    """Every registered device with its position, state and last reading time."""
    return _frame(_DEVICES, db=db)


def totals(since: datetime, *, db: ConnectionPool | None = None) -> dict[str, int]:
    """Headline counts since ``since``: devices, reporting devices, live streams, rejections."""
    with (db or pool()).connection() as conn:
        row = conn.execute(_TOTALS, {"since": since}).fetchone()
    names = ("devices", "reporting", "live_streams", "rejections")
    return dict(zip(names, (int(v) for v in row), strict=True)) if row else dict.fromkeys(names, 0)


_FLEET = """
SELECT d.device_id, d.name, d.site, d.family, d.state, d.last_seen, d.status AS health,
       d.revoked_at IS NOT NULL AS revoked,
       coalesce(r.count, 0) AS rejections, r.reason AS last_rejection
  FROM devices d
  LEFT JOIN LATERAL (
        SELECT count(*) OVER () AS count, reason || ': ' || detail AS reason
          FROM rejections x WHERE x.device_id = d.device_id AND x.received_at > %(since)s
         ORDER BY x.received_at DESC LIMIT 1) r ON true
 ORDER BY d.site, d.device_id
"""


def fleet(since: datetime, *, db: ConnectionPool | None = None) -> pd.DataFrame:
    """Every device with its health report and its rejected messages since ``since``."""
    return _frame(_FLEET, {"since": since}, db=db)


_DEVICE_STATES = """
SELECT device_id, name, site, family, lat, lon, last_seen, state
  FROM devices ORDER BY device_id
"""


def device_states(*, db: ConnectionPool | None = None) -> pd.DataFrame:
    """Every device with what its status is judged by, in id order (the live map's order)."""
    return _frame(_DEVICE_STATES, db=db)


_DISTRICTS = """
SELECT d.site,
       count(DISTINCT d.device_id) AS devices,
       (SELECT count(*) FROM alerts a WHERE a.site = d.site AND a.state <> 'resolved')
           AS open_alerts,
       (SELECT count(*) FROM alerts a WHERE a.site = d.site AND a.state <> 'resolved'
           AND a.kind = 'congestion') AS congested,
       count(*) FILTER (WHERE s.metric = 'fill_level' AND l.value > 80) AS bins_over_80,
       max(l.value) FILTER (WHERE s.metric = 'pm2_5') AS worst_pm2_5
  FROM devices d
  LEFT JOIN streams s USING (device_id)
  LEFT JOIN latest l USING (stream_id)
 GROUP BY d.site
 ORDER BY d.site
"""

_NEWEST_ALERTS = """
SELECT alert_id, opened_at, device_id, site, kind, severity, message
  FROM alerts WHERE state <> 'resolved'
 ORDER BY opened_at DESC, alert_id DESC LIMIT %(limit)s
"""


def districts(*, db: ConnectionPool | None = None) -> pd.DataFrame:
    """Per district: devices, open alerts, congestion, bins above 80 %, worst PM2.5 now."""
    return _frame(_DISTRICTS, db=db)


def newest_alerts(limit: int, *, db: ConnectionPool | None = None) -> pd.DataFrame:
    """The newest unresolved alerts."""
    return _frame(_NEWEST_ALERTS, {"limit": limit}, db=db)


_FILLING_BINS = """
SELECT d.site, d.device_id, l.value AS fill, ds.state, ds.saved_at
  FROM streams s JOIN devices d USING (device_id) JOIN latest l USING (stream_id)
  JOIN detector_state ds USING (stream_id)
 WHERE s.metric = 'fill_level' AND l.value >= %(from)s AND l.value < 100
"""


def filling_bins(from_percent: float, *, db: ConnectionPool | None = None) -> pd.DataFrame:
    """Bins at least ``from_percent`` full with the detectors' last checkpoint of them."""
    return _frame(_FILLING_BINS, {"from": from_percent}, db=db)
