"""The one rule for where history buckets fall, in Python and in SQL.

- A bucket shorter than a day divides the day (``1m``, ``15m``, ``1h``, ``6h``...) and buckets
  restart at every local midnight of the city's time zone: minute and hour buckets sit on the
  clock. On a daylight-saving day the day has 23 or 25 hours, so it has one hourly bucket less
  or more; longer buckets keep their real length from midnight (``6h``: 00:00, 07:00, 13:00,
  19:00 on the spring day) and the day's last one is shorter or longer by that hour.
- A bucket of whole days (``1d``, ``7d``...) starts at local midnight; ``7d`` buckets are weeks
  starting on Monday (multi-day buckets count days from Monday 1970-01-05). A day is the local
  calendar day, 23 or 25 hours long across a daylight-saving change.
- A bucket is always labelled with its own start. When a range cuts a bucket, that bucket holds
  only the readings inside the range and is marked partial; it is never moved or relabelled.

Examples:
    >>> from zoneinfo import ZoneInfo
    >>> rule = BucketRule(timedelta(hours=1), ZoneInfo("Europe/London"))
    >>> rule.floor(datetime(2026, 11, 23, 8, 40, tzinfo=UTC)).isoformat()
    '2026-11-23T08:00:00+00:00'
    >>> days = BucketRule(timedelta(days=1), ZoneInfo("Europe/London"))
    >>> [d.isoformat() for d in days.slots(datetime(2026, 3, 28, 12, tzinfo=UTC),
    ...                                      datetime(2026, 3, 30, tzinfo=UTC))]
    ['2026-03-28T00:00:00+00:00', '2026-03-29T00:00:00+00:00', '2026-03-29T23:00:00+00:00']
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from psycopg import sql

from history.errors import HistoryError

DAY: Final = timedelta(days=1)
MAX_DAYS: Final = 36_600  # a century: longer buckets leave the calendar's range
_MONDAY: Final = date(1970, 1, 5)


class BucketError(HistoryError, ValueError):
    """A bucket the rule cannot place."""


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The instant ``day`` starts in ``zone``, in UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class BucketRule:
    """Buckets of ``width`` in the city's ``zone``.

    Raises:
        BucketError: A width under a day that does not divide a day, or under a second.
    """

    width: timedelta
    zone: ZoneInfo

    def __post_init__(self) -> None:
        if self.width < timedelta(seconds=1):
            raise BucketError("a bucket is at least 1 second")
        if self.width < DAY and DAY % self.width:
            raise BucketError(
                "a bucket shorter than a day must divide the day (1m, 5m, 15m, 1h, 6h...)"
            )
        if self.width >= DAY and self.width % DAY:
            raise BucketError("a bucket of a day or more is a whole number of days (1d, 7d...)")
        if self.width > MAX_DAYS * DAY:
            raise BucketError(f"a bucket is at most {MAX_DAYS:,} days")

    @property
    def calendar(self) -> bool:
        """Whether buckets are whole local days."""
        return self.width >= DAY

    @property
    def days(self) -> int:
        """Days per bucket (calendar buckets only)."""
        return self.width // DAY

    def _local_day(self, moment: datetime) -> date:
        return moment.astimezone(self.zone).date()

    def floor(self, moment: datetime) -> datetime:
        """The start (UTC) of the bucket holding ``moment``."""
        day = self._local_day(moment)
        if self.calendar:
            day -= timedelta(days=(day - _MONDAY).days % self.days)
            return local_midnight(day, self.zone)
        midnight = local_midnight(day, self.zone)
        return midnight + ((moment - midnight) // self.width) * self.width

    def after(self, slot: datetime) -> datetime:
        """The start of the bucket after the one starting at ``slot``."""
        if self.calendar:
            return local_midnight(self._local_day(slot) + self.width, self.zone)
        tomorrow = local_midnight(self._local_day(slot) + DAY, self.zone)
        return min(slot + self.width, tomorrow)

    def slots(self, start: datetime, end: datetime) -> list[datetime]:
        """The starts of every bucket overlapping [start, end), in order."""
        found: list[datetime] = []
        slot = self.floor(start)
        if self.calendar:
            while slot < end:
                found.append(slot)
                slot = self.after(slot)
            return found
        day = self._local_day(slot)
        while slot < end:  # a day at a time: the zone is consulted once per local day
            tomorrow = local_midnight(day + DAY, self.zone)
            while slot < tomorrow and slot < end:
                found.append(slot)
                slot += self.width
            slot, day = tomorrow, day + DAY
        return found

    def count(self, start: datetime, end: datetime) -> float:
        """About how many buckets [start, end) holds (for limits, without listing them)."""
        return (end - start) / self.width

    def sql(self, column: sql.Composable) -> sql.Composed:
        """SQL for the start of the bucket holding ``column``.

        Its parameters are ``%(zone)s``, ``%(width)s`` and ``%(days)s``, from :meth:`params`.
        """
        if not self.calendar:
            return sql.SQL("date_bin(%(width)s, {c}, date_trunc('day', {c}, %(zone)s))").format(
                c=column
            )
        if self.days == 1:
            return sql.SQL("date_trunc('day', {c}, %(zone)s)").format(c=column)
        local = sql.SQL("(({c}) AT TIME ZONE %(zone)s)::date").format(c=column)
        return sql.SQL(
            "(({d}) - ((({d}) - DATE '1970-01-05') %% %(days)s + %(days)s) %% %(days)s)"
            "::timestamp AT TIME ZONE %(zone)s"
        ).format(d=local)

    def params(self) -> dict[str, object]:
        """The parameters :meth:`sql` needs."""
        return {"zone": self.zone.key, "width": self.width, "days": max(self.days, 1)}
