"""Pure shaping of query results for display: device status words and reading summaries."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd

# Status words shown to people; the map shows them by symbol fill as well as colour.
LIVE, STALE, OFFLINE, SILENT = "live", "stale", "offline", "never reported"
STATUS_ORDER = (LIVE, STALE, OFFLINE, SILENT)


def with_status(devices: pd.DataFrame, now: datetime, stale_after: timedelta) -> pd.DataFrame:
    """Add a ``status`` column: live, stale, offline (said so by its last will) or never reported.

    Examples:
        >>> from datetime import timezone
        >>> now = datetime(2026, 11, 23, 8, tzinfo=timezone.utc)
        >>> frame = pd.DataFrame({"last_seen": [now, now - timedelta(hours=1), None],
        ...                       "state": ["online", "online", None]})
        >>> list(with_status(frame, now, timedelta(minutes=5))["status"])
        ['live', 'stale', 'never reported']
    """
    shaped = devices.copy()
    seen = pd.to_datetime(shaped["last_seen"], utc=True)
    status = pd.Series(SILENT, index=shaped.index, dtype=object)
    status[seen.notna()] = STALE
    status[seen >= pd.Timestamp(now) - stale_after] = LIVE
    status[(shaped["state"] == "offline") & seen.notna()] = OFFLINE
    shaped["status"] = status
    return shaped


def problems(row: dict[str, Any]) -> list[str]:
    """What a technician would go out for, in words (empty: nothing).

    Examples:
        >>> problems({"status": "live", "revoked": False, "rejections": 0, "health": {
        ...     "backlog": 120, "dropped": 0, "sensor_faults": 0, "clock_synced": True}})
        ['120 readings waiting to be sent']
    """
    health = row["health"] or {}
    found = []
    if row["revoked"]:
        found.append("credentials revoked")
    elif row["status"] != LIVE:
        found.append(str(row["status"]))
    if health.get("backlog"):
        found.append(f"{health['backlog']} readings waiting to be sent")
    if health.get("dropped"):
        found.append(f"{health['dropped']} readings dropped (spool full)")
    if health.get("sensors_failing"):
        found.append(f"sensor failing: {health['sensors_failing']}")
    elif health.get("sensor_faults"):
        found.append(f"{health['sensor_faults']} sensor faults")
    if health.get("clock_synced") is False:
        found.append("clock not synchronised")
    if health.get("config_error"):
        found.append(f"configuration refused: {health['config_error']}")
    if row["rejections"]:
        found.append(f"{row['rejections']} messages rejected, last: {row['last_rejection']}")
    return found
