"""FIWARE Smart Data Models (NGSI-LD key-values): current state and bucketed history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request, Response

from api import db, paging
from api.auth import HistoryReader
from api.catalog import Cursor, Texts
from api.series import End, Start
from edge.metrics import METRICS
from history import fiware
from history import query as history
from history.buckets import BucketRule
from processing.kinds import Kind

router = APIRouter(
    prefix="/v1/ngsi-ld",
    tags=["open data: FIWARE NGSI-LD"],
    responses=paging.ERRORS,
    dependencies=[Depends(paging.known_parameters_only)],
)

EntityType = Literal["AirQualityObserved", "TrafficFlowObserved", "WasteContainer", "Device"]
ObservedType = Literal["AirQualityObserved", "TrafficFlowObserved", "WasteContainer"]
_FAMILY = {model: family for family, model in fiware.MODELS.items()}
_MEDIA = "application/ld+json"

_CURRENT = """
SELECT d.device_id, d.name, d.site, d.family, d.lat, d.lon, d.state, d.last_seen,
       d.status->>'software' AS software,
       coalesce(json_object_agg(s.metric, l.value) FILTER (WHERE l.value IS NOT NULL),
                '{}'::json) AS readings,
       max(l.ts) AS observed_at,
       coalesce(array_agg(DISTINCT s.metric) FILTER (WHERE s.metric IS NOT NULL),
                '{}') AS metrics,
       EXISTS (SELECT 1 FROM alerts a WHERE a.device_id = d.device_id
               AND a.kind = %(congestion)s AND a.state <> 'resolved') AS congested
  FROM devices d LEFT JOIN streams s USING (device_id) LEFT JOIN latest l USING (stream_id)
 WHERE (%(family)s::text IS NULL OR d.family = %(family)s)
   AND (%(sites)s::text[] IS NULL OR d.site = ANY(%(sites)s))
   AND (%(after)s::text IS NULL OR d.device_id >= %(after)s)
 GROUP BY d.device_id
 ORDER BY d.device_id
 LIMIT %(limit)s
"""


def _place(row: dict[str, Any]) -> fiware.Place:
    return fiware.Place(
        row["device_id"], row["name"], row["site"], row["family"], row["lat"], row["lon"]
    )


@router.get(
    "/entities",
    summary="Current state as Smart Data Models",
    responses={200: {"content": {_MEDIA: {}}, "description": "array of key-value entities"}},
)
async def entities(
    request: Request,
    response: Response,
    _: HistoryReader,
    type: EntityType,  # NGSI-LD's own parameter name
    site: Texts = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Cursor = None,
) -> list[dict[str, Any]]:
    """Each device as ``type`` with its latest values, in key-value form.

    ``Device`` covers every family, each observation type its own. More pages: the
    ``Link: <...>; rel="next"`` header, as NGSI-LD pages.
    """
    after = paging.decode_text_key(cursor) if cursor else None
    rows = await db.fetch(
        request,
        _CURRENT,
        {
            "family": _FAMILY.get(type), "sites": site, "after": after, "limit": limit + 1,
            "congestion": Kind.CONGESTION.slug,
        },
    )  # fmt: skip
    if len(rows) > limit:
        next_cursor = paging.encode([rows[limit]["device_id"]])
        url = paging.next_url(request, next_cursor)
        response.headers["Link"] = f'<{url}>; rel="next"'
        rows = rows[:limit]
    if type == "Device":
        return [
            fiware.device(
                _place(row), list(row["metrics"]), state=row["state"],
                last_reported=row["observed_at"], software=row["software"],
            )
            for row in rows
        ]  # fmt: skip
    # A device that has not reported has observed nothing: only its Device entity exists.
    return [
        fiware.observed(
            _place(row), row["readings"], row["observed_at"],
            congested=row["congested"] if type == "TrafficFlowObserved" else None,
        )
        for row in rows
        if row["observed_at"] is not None
    ]  # fmt: skip


@router.get(
    "/temporal",
    summary="History as Smart Data Models, one entity per device and bucket",
    responses={200: {"content": {_MEDIA: {}}, "description": "array of key-value entities"}},
)
async def temporal(
    request: Request,
    _: HistoryReader,
    type: ObservedType,
    start: Start,
    end: End,
    bucket: Annotated[str, Query(pattern=history.BUCKET_PATTERN)] = "1h",
    site: Texts = None,
    device: Texts = None,
) -> list[dict[str, Any]]:
    """Per device and bucket, every metric the model carries.

    Counts (traffic's vehicles) are summed over the bucket, everything else averaged.

    Buckets follow the history rule (local days, clock hours; docs/planner.md). The observed
    period is the part of the bucket inside [start, end): ``dateObserved`` is its start, and
    traffic gives ``dateObservedFrom``/``dateObservedTo``, the period its counts were summed over.
    """
    step = history.parse_bucket(bucket)
    streams = await db.fetch(
        request,
        "SELECT s.stream_id, s.metric, d.device_id, d.name, d.site, d.family, d.lat, d.lon"
        " FROM streams s JOIN devices d USING (device_id) WHERE d.family = %(family)s"
        " AND (%(sites)s::text[] IS NULL OR d.site = ANY(%(sites)s))"
        " AND (%(devices)s::text[] IS NULL OR d.device_id = ANY(%(devices)s))",
        {"family": _FAMILY[type], "sites": site, "devices": device},
    )
    if not streams:
        return []
    by_stream = {str(row["stream_id"]): row for row in streams}
    counted = [r["stream_id"] for r in streams if METRICS[r["metric"]].unit == "count"]
    averaged = [r["stream_id"] for r in streams if METRICS[r["metric"]].unit != "count"]
    snapshots: dict[tuple[str, datetime], dict[str, float]] = {}
    rule: BucketRule | None = None
    async with db.pool(request).connection() as conn:
        ways: tuple[tuple[history.Aggregate, list[int]], ...] = (
            ("sum", counted),
            ("mean", averaged),
        )
        for how, ids in ways:
            if not ids:
                continue
            answer = await history.aggregate(
                conn, start=start, end=end, bucket=step, aggregate=how, group_by="stream",
                stream_ids=ids,
            )  # fmt: skip
            rule = BucketRule(step, ZoneInfo(answer.zone))
            for row in answer.rows:
                if row.value is not None:
                    stream = by_stream[row.group]
                    key = (stream["device_id"], row.bucket)
                    snapshots.setdefault(key, {})[stream["metric"]] = row.value
    assert rule is not None
    places = {row["device_id"]: _place(row) for row in streams}
    return [
        fiware.observed(places[device_id], values, max(at, start), until=_until(rule, at, end))
        for (device_id, at), values in sorted(snapshots.items())
    ]


def _until(rule: BucketRule, at: datetime, end: datetime) -> datetime:
    """The end of the period a bucket observed: its own end, cut to the range."""
    try:
        return min(rule.after(at), end)
    except OverflowError:  # the bucket runs past year 9999; the range does not
        return end
