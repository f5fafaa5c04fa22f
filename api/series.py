"""Time series by bucket and aggregate, raw readings page by page, and the alerts' history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel

from api import db, paging
from api.auth import HistoryReader
from api.catalog import Cursor, Family, Texts
from api.paging import Moment, Page
from history import query as history
from history.decimate import lttb

router = APIRouter(
    prefix="/v1",
    tags=["history"],
    responses=paging.ERRORS,
    dependencies=[Depends(paging.known_parameters_only)],
)

MAX_CELLS = history.MAX_CELLS  # buckets x groups in one answer; more is an export
Start = Annotated[Moment, Query(description="from, inclusive (ISO-8601 with a zone)")]
End = Annotated[Moment, Query(description="until, exclusive (ISO-8601 with a zone)")]


class Point(BaseModel):
    """One bucket: its start, the aggregate, and how many readings went into it.

    ``partial`` when the range cuts the bucket: it then holds only the readings inside the range.
    """

    t: datetime
    value: float | None
    count: int
    partial: bool = False


class Gap(BaseModel):
    """A run of buckets with no data: the first and the last empty bucket."""

    first: datetime
    last: datetime


class Series(BaseModel):
    """One group's buckets and gaps."""

    group: str
    points: list[Point]
    gaps: list[Gap]


class TimeSeries(BaseModel):
    """An aggregate answer and where it came from."""

    level: str
    zone: str
    bucket_s: float
    aggregate: str
    group_by: str
    decimated: bool
    series: list[Series]


@router.get("/timeseries", summary="Aggregate by time bucket and group")
async def timeseries(  # one parameter per documented filter
    request: Request,
    _: HistoryReader,
    start: Start,
    end: End,
    bucket: Annotated[str, Query(pattern=history.BUCKET_PATTERN, description="e.g. 1h")] = "1h",
    aggregate: history.Aggregate = "mean",
    group_by: history.GroupBy = "site",
    site: Texts = None,
    family: Annotated[list[Family] | None, Query(max_length=3)] = None,
    metric: Texts = None,
    stream: Annotated[list[Annotated[int, Query(ge=1, lt=2**31)]] | None, Query()] = None,
    points: Annotated[
        int | None, Query(ge=3, le=10_000, description="decimate each series for a chart (LTTB)")
    ] = None,
) -> TimeSeries:
    """Buckets over [start, end) per group.

    Read from the coarsest resolution that answers exactly; gaps (buckets without data) are
    listed, never hidden.
    """
    step = history.parse_bucket(bucket)
    async with db.pool(request).connection() as conn:
        answer = await history.aggregate(
            conn, start=start, end=end, bucket=step, aggregate=aggregate, group_by=group_by,
            sites=site, families=family, metrics=metric, stream_ids=stream,
        )  # fmt: skip
    by_group: dict[str, list[Point]] = {group: [] for group in answer.groups}
    for row in answer.rows:
        by_group.setdefault(row.group, []).append(
            Point(t=row.bucket, value=row.value, count=row.count, partial=row.partial)
        )
    decimated = False
    if points is not None:
        for group, series in by_group.items():
            kept = _decimate(series, points)
            decimated |= len(kept) < len(series)
            by_group[group] = kept
    return TimeSeries(
        level=answer.level,
        zone=answer.zone,
        bucket_s=step.total_seconds(),
        aggregate=aggregate,
        group_by=group_by,
        decimated=decimated,
        series=[
            Series(
                group=group,
                points=series,
                gaps=[Gap(first=a, last=b) for a, b in answer.gaps.get(group, [])],
            )
            for group, series in by_group.items()
        ],
    )


def _decimate(series: list[Point], points: int) -> list[Point]:
    known = [p for p in series if p.value is not None]
    if len(known) <= points:
        return known
    x = np.array([p.t.timestamp() for p in known])
    y = np.array([p.value for p in known], dtype=np.float64)
    return [known[i] for i in lttb(x, y, points)]


class Reading(BaseModel):
    """One stored reading with its labels."""

    ts: datetime
    stream_id: int
    device_id: str
    sensor: str
    metric: str
    unit: str
    value: float


@router.get("/readings", summary="Raw readings, page by page")
async def readings(
    request: Request,
    _: HistoryReader,
    start: Start,
    end: End,
    site: Texts = None,
    device: Texts = None,
    metric: Texts = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    cursor: Cursor = None,
) -> Page[Reading]:
    """Readings over [start, end) in (time, stream) order; follow ``next`` for the rest.

    For millions of rows, /v1/export streams them faster.
    """
    if end <= start:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "end must come after start")
    first = paging.decode_time_key(cursor) if cursor else (start, 0)
    rows = await db.fetch(
        request,
        "SELECT r.ts, r.stream_id, s.device_id, s.sensor, s.metric, s.unit, r.value"
        " FROM readings r JOIN streams s USING (stream_id) JOIN devices d USING (device_id)"
        " WHERE r.ts >= %(start)s AND r.ts < %(end)s"
        " AND (r.ts, r.stream_id) >= (%(first_ts)s, %(first_id)s)"
        " AND (%(sites)s::text[] IS NULL OR d.site = ANY(%(sites)s))"
        " AND (%(devices)s::text[] IS NULL OR s.device_id = ANY(%(devices)s))"
        " AND (%(metrics)s::text[] IS NULL OR s.metric = ANY(%(metrics)s))"
        " ORDER BY r.ts, r.stream_id LIMIT %(limit)s",
        {
            "start": start, "end": end, "first_ts": first[0], "first_id": first[1],
            "sites": site, "devices": device, "metrics": metric, "limit": limit + 1,
        },
    )  # fmt: skip
    return paging.page(
        request, [Reading(**row) for row in rows], limit,
        lambda r: [r.ts.isoformat(), r.stream_id],
    )  # fmt: skip


class AlertEvent(BaseModel):
    """Who did what to an alert, and when."""

    at: datetime
    action: str
    actor: str
    comment: str


class Alert(BaseModel):
    """An alert with its lifecycle."""

    alert_id: int
    stream_id: int
    device_id: str
    site: str
    kind: str
    severity: Literal["info", "warning", "critical"]
    state: Literal["open", "acknowledged", "resolved"]
    message: str
    score: float
    value: float | None
    started_at: datetime
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    events: list[AlertEvent]


@router.get("/alerts", summary="Alerts history")
async def alerts(
    request: Request,
    _: HistoryReader,
    start: Annotated[Moment | None, Query(description="opened from")] = None,
    end: Annotated[Moment | None, Query(description="opened before")] = None,
    site: Texts = None,
    device: Texts = None,
    kind: Texts = None,
    severity: Annotated[list[Literal["info", "warning", "critical"]] | None, Query()] = None,
    state: Annotated[list[Literal["open", "acknowledged", "resolved"]] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Cursor = None,
) -> Page[Alert]:
    """Alerts newest first, with every acknowledgement, comment and resolution."""
    before = paging.decode_int_key(cursor) if cursor else None
    rows = await db.fetch(
        request,
        "SELECT a.alert_id, a.stream_id, a.device_id, a.site, a.kind, a.severity, a.state,"
        " a.message, a.score, a.value, a.started_at, a.opened_at, a.acknowledged_at,"
        " a.acknowledged_by, a.resolved_at, a.resolved_by,"
        " coalesce((SELECT json_agg(json_build_object('at', e.at, 'action', e.action,"
        "   'actor', e.actor, 'comment', e.comment) ORDER BY e.event_id)"
        "   FROM alert_events e WHERE e.alert_id = a.alert_id), '[]'::json) AS events"
        " FROM alerts a"
        " WHERE (%(start)s::timestamptz IS NULL OR a.opened_at >= %(start)s)"
        " AND (%(end)s::timestamptz IS NULL OR a.opened_at < %(end)s)"
        " AND (%(sites)s::text[] IS NULL OR a.site = ANY(%(sites)s))"
        " AND (%(devices)s::text[] IS NULL OR a.device_id = ANY(%(devices)s))"
        " AND (%(kinds)s::text[] IS NULL OR a.kind = ANY(%(kinds)s))"
        " AND (%(severities)s::text[] IS NULL OR a.severity = ANY(%(severities)s))"
        " AND (%(states)s::text[] IS NULL OR a.state = ANY(%(states)s))"
        " AND (%(before)s::bigint IS NULL OR a.alert_id <= %(before)s)"
        " ORDER BY a.alert_id DESC LIMIT %(limit)s",
        {
            "start": start, "end": end, "sites": site, "devices": device, "kinds": kind,
            "severities": severity, "states": state, "before": before, "limit": limit + 1,
        },
    )  # fmt: skip
    return paging.page(request, [Alert(**row) for row in rows], limit, lambda a: [a.alert_id])
