"""The city's time zone as the kernels read it: a table of UTC offsets and when each begins.

Hour-of-day and weekday slots follow local time, which moves when clocks change. numba cannot
call ``zoneinfo``, so the zone is turned once into rows ``(from_us, offset_s)`` sorted by time,
covering 1970 to 2100; a kernel finds the row for a moment by bisection (see
``processing.seasonal``) and remembers it until the next change.

Examples:
    >>> table = offset_table("Europe/London")
    >>> spring = 1_774_746_000_000_000  # 2026-03-29 01:00 UTC, clocks go forward
    >>> [float(offset_at(table, t)) for t in (spring - 1, spring)]
    [0.0, 3600.0]
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

_FIRST_YEAR = 1970
_LAST_YEAR = 2100
_STEP_S = 86_400  # no zone changes its offset twice within a day


def offset_table(zone: str | tzinfo | float) -> NDArray[np.float64]:
    """Rows ``(from_us, offset_s)`` for ``zone`` (an IANA name, a tzinfo, or fixed seconds)."""
    if isinstance(zone, int | float):
        return np.array([[-np.inf, float(zone)]])
    if isinstance(zone, str):
        return _table(zone).copy()
    key = getattr(zone, "key", None)
    if isinstance(key, str):
        return _table(key).copy()
    return _scan(zone)


@lru_cache(maxsize=8)
def _table(name: str) -> NDArray[np.float64]:
    return _scan(ZoneInfo(name))


def _scan(zone: tzinfo) -> NDArray[np.float64]:
    def offset(second: int) -> float:
        value = datetime.fromtimestamp(second, UTC).astimezone(zone).utcoffset()
        return value.total_seconds() if value is not None else 0.0

    second = int(datetime(_FIRST_YEAR, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(_LAST_YEAR, 1, 1, tzinfo=UTC).timestamp())
    current = offset(second)
    rows = [(-np.inf, current)]
    while second < end:
        following = second + _STEP_S
        later = offset(following)
        if later != current:
            lo, hi = second, following  # bisect to the second the offset changes
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if offset(mid) == current:
                    lo = mid
                else:
                    hi = mid
            rows.append((hi * 1e6, later))
            current = later
        second = following
    return np.array(rows, dtype=np.float64)


def offset_at(table: NDArray[np.float64], ts_us: float) -> float:
    """The offset in seconds at ``ts_us`` (what the kernels compute, for Python callers)."""
    row = int(np.searchsorted(table[:, 0], ts_us, side="right")) - 1
    return float(table[max(row, 0), 1])
