"""Timestamps as every layer counts them: microseconds since the Unix epoch, and zone facts.

Here at the bottom of the packages (stdlib only) so that ingest, history and the services share
one definition instead of importing each other's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z, PostgreSQL's epoch, in Unix µs
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_us(ts: datetime) -> int:
    """Microseconds since the Unix epoch (ingest's timestamps on the hot path).

    Examples:
        >>> to_us(datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC))
        1000000
    """
    return (ts - _EPOCH) // _MICROSECOND


def from_us(us: int) -> datetime:
    """The datetime of :func:`to_us` microseconds.

    Examples:
        >>> from_us(1_000_000).isoformat()
        '1970-01-01T00:00:01+00:00'
    """
    return _EPOCH + timedelta(microseconds=us)


def whole_hours(zone: ZoneInfo, *moments: datetime) -> bool:
    """Whether ``zone`` is a whole number of hours from UTC at ``moments``.

    By default at this year's winter and summer. Then its local days and hours are made of whole
    UTC hours: the hourly rollup fits them.

    Examples:
        >>> whole_hours(ZoneInfo("Europe/London")), whole_hours(ZoneInfo("Asia/Kolkata"))
        (True, False)
    """
    if not moments:
        year = datetime.now(UTC).year
        moments = (datetime(year, 1, 15, tzinfo=UTC), datetime(year, 7, 15, tzinfo=UTC))
    return all(
        (m.astimezone(zone).utcoffset() or timedelta(0)) % timedelta(hours=1) == timedelta(0)
        for m in moments
    )
