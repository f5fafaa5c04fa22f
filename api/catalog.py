"""Devices and their sensor streams, with filters and keyset paging."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from pydantic import BaseModel

from api import db, paging
from api.auth import CatalogReader
from api.paging import Page

router = APIRouter(
    prefix="/v1",
    tags=["catalog"],
    responses=paging.ERRORS,
    dependencies=[Depends(paging.known_parameters_only)],
)

Family = Literal["traffic", "air", "waste"]
Limit = Annotated[int, Query(ge=1, le=1000, description="items per page")]
Cursor = Annotated[str | None, Query(max_length=512, description="from the previous page")]
Texts = Annotated[list[str] | None, Query(max_length=100)]


class Device(BaseModel):
    """A registered device."""

    device_id: str
    name: str
    site: str
    family: Family
    lat: float | None
    lon: float | None
    registered_at: datetime
    last_seen: datetime | None
    state: Literal["online", "offline"] | None
    revoked: bool


class Sensor(BaseModel):
    """One sensor stream: a (device, sensor, metric) with its latest value."""

    stream_id: int
    device_id: str
    site: str
    family: Family
    sensor: str
    metric: str
    unit: str
    latest_ts: datetime | None
    latest_value: float | None


class DeviceDetail(Device):
    """A device with its streams and the health fields of its last status message."""

    sensors: list[Sensor]
    status: dict[str, Any]


_DEVICE_COLUMNS = (
    "d.device_id, d.name, d.site, d.family, d.lat, d.lon, d.registered_at, d.last_seen,"
    " d.state, d.revoked_at IS NOT NULL AS revoked"
)
_SENSOR_QUERY = (
    "SELECT s.stream_id, s.device_id, d.site, d.family, s.sensor, s.metric, s.unit,"
    " l.ts AS latest_ts, l.value AS latest_value"
    " FROM streams s JOIN devices d USING (device_id) LEFT JOIN latest l USING (stream_id)"
)


@router.get("/devices", summary="List devices")
async def list_devices(
    request: Request,
    _: CatalogReader,
    site: Texts = None,
    family: Family | None = None,
    state: Literal["online", "offline"] | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[Device]:
    """Devices in id order, filtered by district (repeatable), family and state."""
    after = paging.decode_text_key(cursor) if cursor else None
    rows = await db.fetch(
        request,
        f"SELECT {_DEVICE_COLUMNS} FROM devices d"  # noqa: S608  # fixed column list
        " WHERE (%(sites)s::text[] IS NULL OR d.site = ANY(%(sites)s))"
        " AND (%(family)s::text IS NULL OR d.family = %(family)s)"
        " AND (%(state)s::text IS NULL OR d.state = %(state)s)"
        " AND (%(after)s::text IS NULL OR d.device_id >= %(after)s)"
        " ORDER BY d.device_id LIMIT %(limit)s",
        {"sites": site, "family": family, "state": state, "after": after, "limit": limit + 1},
    )
    return paging.page(request, [Device(**row) for row in rows], limit, lambda d: [d.device_id])


@router.get("/devices/{device_id}", summary="One device with its sensors")
async def get_device(request: Request, _: CatalogReader, device_id: str) -> DeviceDetail:
    """The device, its sensor streams with their latest values, and its last health report."""
    rows = await db.fetch(
        request,
        f"SELECT {_DEVICE_COLUMNS}, d.status FROM devices d WHERE d.device_id = %s",  # noqa: S608
        (device_id,),
    )
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}")
    sensors = await db.fetch(
        request, _SENSOR_QUERY + " WHERE s.device_id = %s ORDER BY s.stream_id", (device_id,)
    )
    return DeviceDetail(**rows[0], sensors=[Sensor(**row) for row in sensors])


@router.get("/sensors", summary="List sensor streams")
async def list_sensors(
    request: Request,
    _: CatalogReader,
    device: Texts = None,
    site: Texts = None,
    family: Family | None = None,
    metric: Texts = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> Page[Sensor]:
    """Sensor streams in id order with their latest value.

    Filters: device, district and metric (each repeatable) and family.
    """
    after = paging.decode_int_key(cursor) if cursor else None
    rows = await db.fetch(
        request,
        _SENSOR_QUERY + " WHERE (%(devices)s::text[] IS NULL OR s.device_id = ANY(%(devices)s))"
        " AND (%(sites)s::text[] IS NULL OR d.site = ANY(%(sites)s))"
        " AND (%(family)s::text IS NULL OR d.family = %(family)s)"
        " AND (%(metrics)s::text[] IS NULL OR s.metric = ANY(%(metrics)s))"
        " AND (%(after)s::bigint IS NULL OR s.stream_id >= %(after)s)"
        " ORDER BY s.stream_id LIMIT %(limit)s",
        {
            "devices": device,
            "sites": site,
            "family": family,
            "metrics": metric,
            "after": after,
            "limit": limit + 1,
        },
    )
    return paging.page(request, [Sensor(**row) for row in rows], limit, lambda s: [s.stream_id])
