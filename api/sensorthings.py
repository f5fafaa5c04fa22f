"""A read-only OGC SensorThings API v1.1 view.

Query options: $top, $skip, $count, $orderby, and $filter on time for Observations. Entities
are built in :mod:`history.sensorthings`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from psycopg import sql

from api import db, paging
from api.auth import CatalogReader, HistoryReader
from history import sensorthings as sta

PREFIX: Final = "/v1/sensorthings/v1.1"
router = APIRouter(
    prefix=PREFIX,
    tags=["open data: OGC SensorThings v1.1"],
    responses=paging.ERRORS,
    dependencies=[Depends(paging.known_parameters_only)],
)

Top = Annotated[int, Query(alias="$top", ge=0, le=10_000, description="at most this many")]
Skip = Annotated[int, Query(alias="$skip", ge=0, le=1_000_000, description="skip this many")]
Count = Annotated[bool, Query(alias="$count", description="include @iot.count")]
OrderBy = Annotated[str | None, Query(alias="$orderby", max_length=100)]
Filter = Annotated[str | None, Query(alias="$filter", max_length=1000)]


@dataclass(frozen=True, slots=True)
class QueryOptions:
    """The query options every collection takes."""

    top: int
    skip: int
    count: bool
    orderby: str | None
    filter: str | None


def query_options(
    top: Top = 100, skip: Skip = 0, count: Count = False, orderby: OrderBy = None,
    filter_: Filter = None,
) -> QueryOptions:  # fmt: skip
    """$top, $skip, $count, $orderby and $filter: one dependency of every collection."""
    return QueryOptions(top, skip, count, orderby, filter_)


Options = Annotated[QueryOptions, Depends(query_options)]
Text = Annotated[str, Path(max_length=200)]
StreamId = Annotated[int, Path(ge=1, lt=2**31)]
Collection = dict[str, Any]

_DEVICES: Final = "SELECT device_id, name, site, family, lat, lon, state, last_seen FROM devices d"
_SENSORS: Final = (
    "SELECT DISTINCT s.device_id, s.sensor, d.family FROM streams s"
    " JOIN devices d USING (device_id)"
)
_STREAMS: Final = (
    "SELECT s.stream_id, s.device_id, s.sensor, s.metric, s.unit FROM streams s"
    " JOIN devices d USING (device_id)"
)
_METRICS: Final = "SELECT DISTINCT s.metric FROM streams s"


def _base(request: Request) -> str:
    return paging.link_base(request) + PREFIX


def _next_link(request: Request, top: int, skip: int) -> str:
    url = request.url.include_query_params(**{"$skip": skip + top, "$top": top})
    return _base(request)[: -len(PREFIX)] + url.path + "?" + url.query


async def _collection(
    request: Request,
    select: str,
    params: dict[str, object],
    key: str,
    build: Callable[[str, dict[str, Any]], dict[str, Any]],
    options: QueryOptions,
) -> Collection:
    """A catalogue collection (small tables): ordered by id, offset paging.

    ``build`` makes an entity of a row, given the base of the links.
    """
    if options.filter is not None:
        raise sta.SensorThingsError("$filter is supported on Observations only")
    _, direction = sta.parse_orderby(options.orderby or "id", ("id", "@iot.id"))
    query = sql.SQL("SELECT * FROM ({}) e ORDER BY {} {} LIMIT %(top)s OFFSET %(skip)s").format(
        sql.SQL(select), sql.Identifier(key), sql.SQL(direction.upper())
    )
    counting = sql.SQL("SELECT count(*) AS n FROM ({}) e").format(sql.SQL(select))
    base = _base(request)
    return await _page(request, query, counting, params, lambda row: build(base, row), options)


async def _page(
    request: Request,
    query: sql.Composed,
    counting: sql.Composed,
    params: dict[str, object],
    build: Callable[[dict[str, Any]], dict[str, Any]],
    options: QueryOptions,
) -> Collection:
    """One page of ``query``, which takes ``%(top)s`` and ``%(skip)s``.

    Its entities, their count if asked for (by ``counting``), and the link to the next page
    when there is one.
    """
    rows = await db.fetch(request, query, {**params, "top": options.top + 1, "skip": options.skip})
    body: Collection = {}
    if options.count:
        counted = await db.fetch(request, counting, params)
        body["@iot.count"] = int(counted[0]["n"])
    body["value"] = [build(row) for row in rows[: options.top]]
    if 0 < options.top < len(rows):  # $top=0 asks for no entities: a next page would be this one
        body["@iot.nextLink"] = _next_link(request, options.top, options.skip)
    return body


async def _one(request: Request, select: str, params: dict[str, object]) -> dict[str, Any]:
    rows = await db.fetch(request, select, params)
    if not rows:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such entity")
    return rows[0]


@router.get("", summary="The entity sets")
async def root(request: Request, _: CatalogReader) -> dict[str, Any]:
    """The entity sets this view serves, and its conformance."""
    base = _base(request)
    names = ("Things", "Locations", "Sensors", "ObservedProperties", "Datastreams",
             "Observations")  # fmt: skip
    return {
        "value": [{"name": name, "url": f"{base}/{name}"} for name in names],
        "serverSettings": {
            "conformance": ["http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel"]
        },
    }


# ---- Things and Locations: one per device ------------------------------------------------


@router.get("/Things", summary="Things: the devices")
async def things(request: Request, _: CatalogReader, options: Options) -> Collection:
    return await _collection(request, _DEVICES, {}, "device_id", sta.thing, options)


@router.get("/Things('{thing_id}')", summary="One Thing")
async def thing(request: Request, _: CatalogReader, thing_id: Text) -> dict[str, Any]:
    row = await _one(request, _DEVICES + " WHERE device_id = %(id)s", {"id": thing_id})
    return sta.thing(_base(request), row)


@router.get("/Things('{thing_id}')/Locations", summary="A Thing's Locations")
async def thing_locations(request: Request, _: CatalogReader, thing_id: Text) -> Collection:
    rows = await db.fetch(
        request, _DEVICES + " WHERE device_id = %(id)s AND lat IS NOT NULL", {"id": thing_id}
    )
    base = _base(request)
    return {"value": [sta.location(base, row) for row in rows]}


@router.get("/Things('{thing_id}')/Datastreams", summary="A Thing's Datastreams")
async def thing_datastreams(
    request: Request, _: CatalogReader, thing_id: Text, options: Options
) -> Collection:
    select = _STREAMS + " WHERE s.device_id = %(id)s"
    return await _collection(
        request, select, {"id": thing_id}, "stream_id", sta.datastream, options
    )


@router.get("/Locations", summary="Locations: where the devices stand")
async def locations(request: Request, _: CatalogReader, options: Options) -> Collection:
    select = _DEVICES + " WHERE lat IS NOT NULL AND lon IS NOT NULL"
    return await _collection(request, select, {}, "device_id", sta.location, options)


@router.get("/Locations('{location_id}')", summary="One Location")
async def location(request: Request, _: CatalogReader, location_id: Text) -> dict[str, Any]:
    row = await _one(
        request, _DEVICES + " WHERE device_id = %(id)s AND lat IS NOT NULL", {"id": location_id}
    )
    return sta.location(_base(request), row)


@router.get("/Locations('{location_id}')/Things", summary="The Thing at a Location")
async def location_things(request: Request, _: CatalogReader, location_id: Text) -> Collection:
    rows = await db.fetch(request, _DEVICES + " WHERE device_id = %(id)s", {"id": location_id})
    base = _base(request)
    return {"value": [sta.thing(base, row) for row in rows]}


# ---- Sensors and ObservedProperties --------------------------------------------------------


@router.get("/Sensors", summary="Sensors: each device's instruments")
async def sensors(request: Request, _: CatalogReader, options: Options) -> Collection:
    select = f"SELECT *, device_id || ':' || sensor AS sensor_id FROM ({_SENSORS}) x"  # noqa: S608
    return await _collection(request, select, {}, "sensor_id", sta.sensor, options)


def _split_sensor(sensor_id: str) -> dict[str, object]:
    device, _, name = sensor_id.rpartition(":")
    if not device:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "a Sensor id reads device:sensor")
    return {"device": device, "sensor": name}


@router.get("/Sensors('{sensor_id}')", summary="One Sensor")
async def sensor(request: Request, _: CatalogReader, sensor_id: Text) -> dict[str, Any]:
    row = await _one(
        request, _SENSORS + " WHERE s.device_id = %(device)s AND s.sensor = %(sensor)s",
        _split_sensor(sensor_id),
    )  # fmt: skip
    return sta.sensor(_base(request), row)


@router.get("/Sensors('{sensor_id}')/Datastreams", summary="A Sensor's Datastreams")
async def sensor_datastreams(request: Request, _: CatalogReader, sensor_id: Text) -> Collection:
    rows = await db.fetch(
        request,
        _STREAMS + " WHERE s.device_id = %(device)s AND s.sensor = %(sensor)s ORDER BY s.stream_id",
        _split_sensor(sensor_id),
    )
    base = _base(request)
    return {"value": [sta.datastream(base, row) for row in rows]}


@router.get("/ObservedProperties", summary="ObservedProperties: the metrics")
async def observed_properties(request: Request, _: CatalogReader, options: Options) -> Collection:
    def build(base: str, row: dict[str, Any]) -> dict[str, Any]:
        return sta.observed_property(base, row["metric"])

    return await _collection(request, _METRICS, {}, "metric", build, options)


@router.get("/ObservedProperties('{metric}')", summary="One ObservedProperty")
async def observed_property(request: Request, _: CatalogReader, metric: Text) -> dict[str, Any]:
    row = await _one(request, _METRICS + " WHERE s.metric = %(m)s", {"m": metric})
    return sta.observed_property(_base(request), row["metric"])


@router.get("/ObservedProperties('{metric}')/Datastreams", summary="Datastreams of a metric")
async def observed_property_datastreams(
    request: Request, _: CatalogReader, metric: Text, options: Options
) -> Collection:
    select = _STREAMS + " WHERE s.metric = %(m)s"
    return await _collection(request, select, {"m": metric}, "stream_id", sta.datastream, options)


# ---- Datastreams -----------------------------------------------------------------------------


@router.get("/Datastreams", summary="Datastreams: one per sensor stream")
async def datastreams(request: Request, _: CatalogReader, options: Options) -> Collection:
    return await _collection(request, _STREAMS, {}, "stream_id", sta.datastream, options)


async def _stream_row(request: Request, stream_id: int) -> dict[str, Any]:
    return await _one(request, _STREAMS + " WHERE s.stream_id = %(id)s", {"id": stream_id})


@router.get("/Datastreams({stream_id})", summary="One Datastream")
async def datastream(request: Request, _: CatalogReader, stream_id: StreamId) -> dict[str, Any]:
    return sta.datastream(_base(request), await _stream_row(request, stream_id))


@router.get("/Datastreams({stream_id})/Thing", summary="A Datastream's Thing")
async def datastream_thing(
    request: Request, _: CatalogReader, stream_id: StreamId
) -> dict[str, Any]:
    stream = await _stream_row(request, stream_id)
    row = await _one(request, _DEVICES + " WHERE device_id = %(id)s", {"id": stream["device_id"]})
    return sta.thing(_base(request), row)


@router.get("/Datastreams({stream_id})/Sensor", summary="A Datastream's Sensor")
async def datastream_sensor(
    request: Request, _: CatalogReader, stream_id: StreamId
) -> dict[str, Any]:
    stream = await _stream_row(request, stream_id)
    row = await _one(
        request, _SENSORS + " WHERE s.device_id = %(device)s AND s.sensor = %(sensor)s",
        {"device": stream["device_id"], "sensor": stream["sensor"]},
    )  # fmt: skip
    return sta.sensor(_base(request), row)


@router.get("/Datastreams({stream_id})/ObservedProperty", summary="A Datastream's property")
async def datastream_property(
    request: Request, _: CatalogReader, stream_id: StreamId
) -> dict[str, Any]:
    stream = await _stream_row(request, stream_id)
    return sta.observed_property(_base(request), stream["metric"])


# ---- Observations: the readings -------------------------------------------------------------


@router.get("/Observations", summary="Observations: every reading")
async def observations(request: Request, _: HistoryReader, options: Options) -> Collection:
    return await _observations(request, None, options)


@router.get("/Datastreams({stream_id})/Observations", summary="A Datastream's Observations")
async def datastream_observations(
    request: Request, _: HistoryReader, stream_id: StreamId, options: Options
) -> Collection:
    await _stream_row(request, stream_id)  # 404 for an unknown Datastream
    return await _observations(request, stream_id, options)


async def _observations(
    request: Request, stream_id: int | None, options: QueryOptions
) -> Collection:
    conditions = sta.parse_filter(options.filter) if options.filter else []
    ordering = options.orderby or "phenomenonTime"
    _, direction = sta.parse_orderby(ordering, ("phenomenonTime", "resultTime"))
    where: list[sql.Composable] = [
        sql.SQL("(%(stream)s::integer IS NULL OR stream_id = %(stream)s)")
    ]
    params: dict[str, object] = {"stream": stream_id}
    for index, condition in enumerate(conditions):
        where.append(sql.SQL("ts {} {}").format(
            sql.SQL(condition.operator), sql.Placeholder(f"t{index}")
        ))  # fmt: skip
        params[f"t{index}"] = condition.moment
    clause = sql.SQL(" AND ").join(where)
    query = sql.SQL(
        "SELECT stream_id, ts, value FROM readings WHERE {} ORDER BY ts {}, stream_id {}"
        " LIMIT %(top)s OFFSET %(skip)s"
    ).format(clause, sql.SQL(direction.upper()), sql.SQL(direction.upper()))
    counting = sql.SQL("SELECT count(*) AS n FROM readings WHERE {}").format(clause)
    base = _base(request)

    def build(row: dict[str, Any]) -> dict[str, Any]:
        return sta.observation(base, row["stream_id"], row["ts"], row["value"])

    return await _page(request, query, counting, params, build, options)


@router.get("/Observations('{observation_id}')", summary="One Observation")
async def observation(request: Request, _: HistoryReader, observation_id: Text) -> dict[str, Any]:
    stream_id, moment = sta.parse_observation_id(observation_id)
    row = await _one(
        request,
        "SELECT stream_id, ts, value FROM readings WHERE stream_id = %(s)s AND ts = %(t)s",
        {"s": stream_id, "t": moment},
    )
    return sta.observation(_base(request), row["stream_id"], row["ts"], row["value"])


@router.get("/Observations('{observation_id}')/Datastream", summary="An Observation's Datastream")
async def observation_datastream(
    request: Request, _: HistoryReader, observation_id: Text
) -> dict[str, Any]:
    stream_id, _moment = sta.parse_observation_id(observation_id)
    return sta.datastream(_base(request), await _stream_row(request, stream_id))
