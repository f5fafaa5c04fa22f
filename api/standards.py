"""FIWARE Smart Data Models (NGSI-LD key-values): current state and bucketed history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status

from api import db, paging
from api.auth import HistoryReader
from api.catalog import Cursor, Texts
from api.series import MAX_CELLS, End, Start
from history import fiware
from history import query as history
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
        url = paging.next_url(request, request.app.state.config.public_url, next_cursor)
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
    """Bucket means of every metric the model carries, per device and bucket.

    ``dateObserved`` is the bucket's start; traffic also gives the interval.
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
    if (end - start) / step * max(len(streams), 1) > MAX_CELLS:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"more than {MAX_CELLS:,} stream-buckets: choose a larger bucket or fewer devices",
        )
    if not streams:
        return []
    by_stream = {str(row["stream_id"]): row for row in streams}
    async with db.pool(request).connection() as conn:
        answer = await history.aggregate(
            conn, start=start, end=end, bucket=step, aggregate="mean", group_by="stream",
            stream_ids=[row["stream_id"] for row in streams],
        )  # fmt: skip
    snapshots: dict[tuple[str, datetime], dict[str, float]] = {}
    for row in answer.rows:
        if row.value is not None:
            stream = by_stream[row.group]
            snapshots.setdefault((stream["device_id"], row.bucket), {})[stream["metric"]] = (
                row.value
            )
    places = {row["device_id"]: _place(row) for row in streams}
    return [
        fiware.observed(places[device_id], values, at, period=step)
        for (device_id, at), values in sorted(snapshots.items())
    ]
