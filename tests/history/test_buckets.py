"""The bucket rule on its own: local days across daylight saving, clock hours, weeks, labels."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from history.buckets import BucketError, BucketRule

LONDON = ZoneInfo("Europe/London")
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def _local_day(day: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(2026, month, day, tzinfo=LONDON).astimezone(UTC)
    end = (datetime(2026, month, day, tzinfo=LONDON) + DAY).astimezone(UTC)
    return start, end


@pytest.mark.parametrize(("day", "month", "hours"), [(29, 3, 23), (25, 10, 25), (20, 11, 24)])
def test_a_local_day_has_as_many_hourly_buckets_as_hours(day: int, month: int, hours: int) -> None:
    start, end = _local_day(day, month)
    assert len(BucketRule(HOUR, LONDON).slots(start, end)) == hours
    assert BucketRule(DAY, LONDON).slots(start, end) == [start]


def test_the_autumn_night_has_two_buckets_labelled_one_oclock() -> None:
    start, end = _local_day(25, 10)
    labels = [
        s.astimezone(LONDON).strftime("%H:%M") for s in BucketRule(HOUR, LONDON).slots(start, end)
    ]
    assert labels[:4] == ["00:00", "01:00", "01:00", "02:00"]


def test_six_hour_buckets_restart_at_midnight_and_the_last_absorbs_the_change() -> None:
    start, end = _local_day(29, 3)
    rule = BucketRule(timedelta(hours=6), LONDON)
    slots = rule.slots(start, end)
    assert [s.astimezone(LONDON).strftime("%H:%M") for s in slots] == [
        "00:00",
        "07:00",
        "13:00",
        "19:00",
    ]
    lengths = [rule.after(s) - s for s in slots]
    assert lengths == [timedelta(hours=6)] * 3 + [timedelta(hours=5)]


def test_weeks_start_on_monday_and_labels_never_move() -> None:
    rule = BucketRule(timedelta(days=7), LONDON)
    thursday = datetime(2026, 11, 19, 15, tzinfo=UTC)
    assert rule.floor(thursday) == datetime(2026, 11, 16, tzinfo=UTC)  # Monday, local midnight
    hourly = BucketRule(HOUR, LONDON)
    for minute in (0, 10, 50):
        assert hourly.floor(datetime(2026, 11, 19, 22, minute, tzinfo=UTC)).minute == 0


def test_hours_sit_on_the_local_clock_in_a_half_hour_zone() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    slot = BucketRule(HOUR, kolkata).floor(datetime(2026, 11, 19, 10, 45, tzinfo=UTC))
    assert slot == datetime(2026, 11, 19, 10, 30, tzinfo=UTC)  # 16:00 in Kolkata


@pytest.mark.parametrize("width", [timedelta(minutes=7), timedelta(hours=5), timedelta(hours=36)])
def test_a_bucket_that_does_not_fit_the_day_is_refused(width: timedelta) -> None:
    with pytest.raises(BucketError):
        BucketRule(width, LONDON)


def test_a_bucket_past_a_century_is_refused() -> None:
    with pytest.raises(BucketError, match="36,600 days"):
        BucketRule(timedelta(days=802_909), LONDON)
