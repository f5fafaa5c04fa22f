"""The pages' reads: parameterised SQL returning frames, rows and arrays.

Pages call these and the figures, never SQL of their own. What the control room records
(sign-ins, accounts, acknowledgements) is written by :mod:`dashboard.accounts` and
:mod:`dashboard.alert_actions` on :func:`writer`. Callbacks reach the pools through the Flask app
serving them, so nothing here runs at import.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
from flask import current_app
from numpy.typing import NDArray
from psycopg_pool import ConnectionPool

from history.query import Answer, GroupBy, aggregate

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


# ---- Admin ----------------------------------------------------------------------------------

_ACCOUNTS = """
SELECT name, role,
       CASE WHEN totp_secret IS NULL THEN 'password' ELSE 'password + TOTP' END,
       last_login_at,
       CASE WHEN disabled_at IS NOT NULL THEN 'disabled'
            WHEN locked_until > now() THEN 'locked' ELSE 'active' END
  FROM users ORDER BY name
"""


def accounts(*, db: ConnectionPool | None = None) -> list[tuple[Any, ...]]:
    """Every account: name, role, how it logs in, last login, state (never a hash or secret)."""
    with (db or pool()).connection() as conn:
        return conn.execute(_ACCOUNTS).fetchall()


def audit_entries(limit: int, *, db: ConnectionPool | None = None) -> list[tuple[Any, ...]]:
    """The newest ``limit`` audit entries: when, who, what, details (JSON text)."""
    with (db or pool()).connection() as conn:
        return conn.execute(
            "SELECT at, actor, action, detail::text FROM audit_log ORDER BY entry_id DESC LIMIT %s",
            (limit,),
        ).fetchall()


# ---- Fleet ----------------------------------------------------------------------------------

_SITE_AND_SENSORS = """
SELECT d.site, array_agg(DISTINCT s.sensor) FILTER (WHERE s.sensor IS NOT NULL)
  FROM devices d LEFT JOIN streams s USING (device_id)
 WHERE d.device_id = %s
 GROUP BY d.site
"""


def site_and_sensors(
    device: str, *, db: ConnectionPool | None = None
) -> tuple[str, list[str]] | None:
    """A device's district and the names of its sensors; None for an unknown device."""
    with (db or pool()).connection() as conn:
        row = conn.execute(_SITE_AND_SENSORS, (device,)).fetchone()
    return None if row is None else (str(row[0]), [str(s) for s in row[1] or []])


# ---- Sensor ---------------------------------------------------------------------------------

_DEVICE_STREAMS = """
SELECT s.stream_id, s.device_id, s.sensor, s.metric, s.unit, d.name, d.site, d.family,
       d.lat, d.lon, d.last_seen, d.state, d.status->>'software' AS software
  FROM streams s JOIN devices d USING (device_id)
 WHERE d.device_id = coalesce(%(device)s,
                              (SELECT device_id FROM streams WHERE stream_id = %(stream)s))
 ORDER BY s.stream_id
"""


def device_streams(
    device: str | None, stream: int | None, *, db: ConnectionPool | None = None
) -> list[dict[str, Any]]:
    """The streams of ``device``, or of the device of ``stream``, with the device's details."""
    with (db or pool()).connection() as conn, conn.cursor() as cur:
        cur.execute(_DEVICE_STREAMS, {"device": device, "stream": stream})
        names = [c.name for c in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def device_ids(limit: int, *, db: ConnectionPool | None = None) -> list[str]:
    """Registered device ids in order, at most ``limit`` (for a picker)."""
    with (db or pool()).connection() as conn:
        rows = conn.execute(
            "SELECT device_id FROM devices ORDER BY device_id LIMIT %s", (limit,)
        ).fetchall()
    return [str(r[0]) for r in rows]


def newest_alert_device(*, db: ConnectionPool | None = None) -> str | None:
    """The device of the newest open alert, else of the newest alert, else the first device."""
    with (db or pool()).connection() as conn:
        row = conn.execute(
            "SELECT device_id FROM ("
            "  (SELECT device_id, 0 AS rank, opened_at FROM alerts"
            "    WHERE state <> 'resolved' ORDER BY opened_at DESC LIMIT 1)"
            "  UNION ALL (SELECT device_id, 1, opened_at FROM alerts"
            "    ORDER BY opened_at DESC LIMIT 1)"
            "  UNION ALL (SELECT device_id, 2, NULL FROM devices ORDER BY device_id LIMIT 1)"
            ") found ORDER BY rank LIMIT 1"
        ).fetchone()
    return str(row[0]) if row else None


def readings_since(
    stream_id: int, since: datetime, *, db: ConnectionPool | None = None
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """A stream's readings from ``since`` on: epoch microseconds and values, oldest first."""
    with (db or pool()).connection() as conn:
        rows = conn.execute(
            "SELECT ts, value FROM readings WHERE stream_id = %s AND ts >= %s ORDER BY ts",
            (stream_id, since),
        ).fetchall()
    ts = np.array([int(r[0].timestamp() * 1_000_000) for r in rows], dtype=np.int64)
    return ts, np.array([float(r[1]) for r in rows], dtype=np.float64)


def stream_metric(stream_id: int, *, db: ConnectionPool | None = None) -> str:
    """The metric a stream measures ("" for an unknown stream)."""
    with (db or pool()).connection() as conn:
        row = conn.execute(
            "SELECT metric FROM streams WHERE stream_id = %s", (stream_id,)
        ).fetchone()
    return str(row[0]) if row else ""


# ---- History --------------------------------------------------------------------------------


async def history(
    url: str,
    *,
    metric: str,
    start: datetime,
    end: datetime,
    bucket: timedelta,
    group_by: GroupBy,
    sites: list[str] | None,
    devices: list[str],
) -> Answer:
    """``metric`` over a range, by district, stream or kind, as the planner API answers it.

    ``devices`` (when given) narrows it to their streams; grouped by stream, the groups are
    named "device sensor", as people read them, instead of stream numbers. Runs on a
    connection of its own to ``url``, since :func:`history.query.aggregate` is asynchronous.
    """
    async with await psycopg.AsyncConnection.connect(url) as conn:
        streams = None
        if devices:
            cursor = await conn.execute(
                "SELECT stream_id FROM streams WHERE device_id = ANY(%s) AND metric = %s",
                (devices, metric),
            )
            streams = [int(str(row[0])) for row in await cursor.fetchall()]
        answer = await aggregate(
            conn, start=start, end=end, bucket=bucket, group_by=group_by, metrics=[metric],
            sites=sites, stream_ids=streams,
        )  # fmt: skip
        if group_by != "stream":
            return answer
        cursor = await conn.execute(
            "SELECT stream_id::text, device_id || ' ' || sensor FROM streams"
            " WHERE stream_id = ANY(%s::integer[])",
            ([int(g) for g in {r.group for r in answer.rows} | set(answer.gaps)],),
        )
        names = {str(a): str(b) for a, b in await cursor.fetchall()}
    return replace(
        answer,
        rows=[replace(r, group=names.get(r.group, r.group)) for r in answer.rows],
        gaps={names.get(g, g): runs for g, runs in answer.gaps.items()},
        groups=[names.get(g, g) for g in answer.groups],
    )
