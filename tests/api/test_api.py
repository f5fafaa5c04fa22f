"""The planner API over a planted city: every endpoint, paging, exports, auth and bad input."""

from __future__ import annotations

import io
import re
import time
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from tests.api.city import DAYS, GAP, MINUTES, T0, City

STREAMS = 12  # planted streams with readings
RAW_ROWS = STREAMS * MINUTES - 120  # aq-0002 is silent for two hours
START, END = T0.isoformat(), (T0 + timedelta(days=DAYS)).isoformat()


def get(city: City, path: str, role: str = "planner", **params: Any) -> httpx.Response:
    return httpx.get(city.url + path, params=params, headers=city.auth(role), timeout=60)


def walk(city: City, path: str, role: str = "planner", **params: Any) -> list[dict[str, Any]]:
    """Every item of a paged list, following ``next`` (at most 100 pages)."""
    items: list[dict[str, Any]] = []
    url: str | None = city.url + path
    query: dict[str, Any] | None = params
    for _ in range(100):
        assert url is not None
        response = httpx.get(url, params=query, headers=city.auth(role), timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["items"]
        url, query = body["next"], None  # the link carries the query
        if url is None:
            return items
    raise AssertionError("more than 100 pages")


# ---- authentication and roles ----------------------------------------------------------------

PATHS: dict[str, dict[str, Any]] = {  # one request per route, with the parameters it needs
    "/v1/devices": {}, "/v1/devices/aq-0001": {}, "/v1/sensors": {},
    "/v1/timeseries": {"start": START, "end": END}, "/v1/readings": {"start": START, "end": END},
    "/v1/alerts": {}, "/v1/export": {"start": START, "end": END, "page_size": 1},
    "/v1/ngsi-ld/entities": {"type": "Device"},
    "/v1/ngsi-ld/temporal": {"type": "AirQualityObserved", "start": START, "end": END},
    "/v1/sensorthings/v1.1": {}, "/v1/sensorthings/v1.1/Things": {},
    "/v1/sensorthings/v1.1/Observations": {"$top": 1},
}  # fmt: skip
SCOPE = {
    "/v1/timeseries": "history", "/v1/readings": "history", "/v1/alerts": "history",
    "/v1/ngsi-ld/entities": "history", "/v1/ngsi-ld/temporal": "history",
    "/v1/sensorthings/v1.1/Observations": "history", "/v1/export": "export",
}  # fmt: skip
ALLOWED = {"catalog": {"planner", "operator", "technician", "admin"},
           "history": {"planner", "operator", "admin"}, "export": {"planner", "admin"}}  # fmt: skip


def test_every_route_is_in_the_openapi_document_and_refuses_strangers(city: City) -> None:
    document = httpx.get(city.url + "/openapi.json", timeout=10).json()
    routes = set(document["paths"]) - {"/health"}
    assert len(routes) >= 30
    for route in routes:
        path = re.sub(r"\{stream_id\}", "1", re.sub(r"\{[a-z_]+\}", "x", route))
        for headers in ({}, {"Authorization": "Bearer sct_1_" + "A" * 43},
                        {"Authorization": f"Bearer {city.revoked_token}"},
                        {"Authorization": "Basic YWxhZGRpbjpvcGVuc2VzYW1l"}):  # fmt: skip
            response = httpx.get(city.url + path, headers=headers, timeout=10)
            assert response.status_code == 401, (route, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("role", ["planner", "operator", "technician", "admin"])
def test_each_role_reaches_exactly_its_scopes(city: City, role: str) -> None:
    for path, params in PATHS.items():
        response = get(city, path, role, **params)
        expected = 200 if role in ALLOWED[SCOPE.get(path, "catalog")] else 403
        assert response.status_code == expected, (path, role, response.text)
        if expected == 403:
            assert role in response.json()["detail"]


def test_a_revoked_token_stops_working_at_once(city: City) -> None:
    from api import tokens  # noqa: PLC0415

    with psycopg.connect(city.admin_dsn) as conn:
        token = tokens.create(conn, "short-lived", "planner")
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(city.url + "/v1/devices", headers=headers).status_code == 200
    with psycopg.connect(city.admin_dsn) as conn:
        tokens.revoke(conn, "short-lived")
        last_used = conn.execute(
            "SELECT last_used_at FROM api_tokens WHERE name = 'short-lived'"
        ).fetchone()
    assert last_used is not None
    assert last_used[0] is not None
    assert httpx.get(city.url + "/v1/devices", headers=headers).status_code == 401


def test_the_health_route_needs_no_token_and_tells_nothing_else(city: City) -> None:
    assert httpx.get(city.url + "/health").json() == {"status": "ok"}


# ---- catalogue -------------------------------------------------------------------------------


def test_devices_filter_and_page_without_loss(city: City) -> None:
    every = walk(city, "/v1/devices", limit=2)
    assert [d["device_id"] for d in every] == ["aq-0001", "aq-0002", "aq-0009", "tf-0001",
                                              "wb-0001"]  # fmt: skip
    north = walk(city, "/v1/devices", site="north", family="air")
    assert [d["device_id"] for d in north] == ["aq-0001"]
    assert walk(city, "/v1/devices", site=["north", "south"], family="waste")[0]["lat"] == 51.48


def test_links_ignore_the_host_the_client_names(city: City) -> None:
    """A forged Host header must not become the next page's address (where the client would
    send its token): links start at the address the API listens on, or ``public_url``."""
    forged = {**city.auth("planner"), "Host": "attacker.example"}
    paths = {
        "/v1/devices": ("next", {"limit": 1}),
        "/v1/sensorthings/v1.1/Things": ("@iot.nextLink", {"$top": 1}),
        "/v1/sensorthings/v1.1/Datastreams": ("@iot.nextLink", {"$top": 1}),
    }
    for path, (key, params) in paths.items():
        response = httpx.get(city.url + path, params=params, headers=forged, timeout=60)
        assert response.status_code == 200, response.text
        body = response.json()
        link = body[key]
        assert link.startswith(city.url + path), (path, link)
        assert "attacker" not in response.text


def test_a_device_with_its_sensors_and_health(city: City) -> None:
    body = get(city, "/v1/devices/aq-0001").json()
    assert body["status"] == {"software": "0.1.0"}
    assert [s["metric"] for s in body["sensors"]] == ["pm2_5", "pm10", "no2", "temperature",
                                                     "humidity"]  # fmt: skip
    assert body["sensors"][0]["latest_ts"].startswith("2026-11-02T23:59")
    assert get(city, "/v1/devices/nope").status_code == 404


def test_sensors_by_metric_and_page(city: City) -> None:
    temperature = walk(city, "/v1/sensors", metric="temperature")
    assert {s["device_id"] for s in temperature} == {"aq-0001", "wb-0001"}
    assert len(walk(city, "/v1/sensors", limit=5)) == STREAMS


# ---- time series, readings, alerts -----------------------------------------------------------


def test_hourly_means_come_from_the_hourly_rollup_and_match_raw(city: City) -> None:
    body = get(city, "/v1/timeseries", start=START, end=END, bucket="1h", group_by="site",
               metric="pm2_5").json()  # fmt: skip
    assert body["level"] == "rollup_1h"
    with psycopg.connect(city.admin_dsn) as conn:
        expected: dict[str, float] = dict(conn.execute(
            "SELECT d.site, avg(r.value) FROM readings r JOIN streams s USING (stream_id)"
            " JOIN devices d USING (device_id) WHERE s.metric = 'pm2_5'"
            " AND r.ts >= %s AND r.ts < %s GROUP BY d.site", (T0, T0 + timedelta(hours=1)),
        ).fetchall())  # fmt: skip
    first = {series["group"]: series["points"][0] for series in body["series"]}
    for site, mean in expected.items():
        assert first[site]["value"] == pytest.approx(mean)
        assert first[site]["count"] == 60


def test_gaps_are_reported_not_hidden(city: City) -> None:
    body = get(city, "/v1/timeseries", start=START, end=END, bucket="1h", group_by="stream",
               metric="pm2_5").json()  # fmt: skip
    gaps = [series["gaps"] for series in body["series"]]
    assert [{"first": GAP[0].isoformat().replace("+00:00", "Z"),
             "last": (GAP[1] - timedelta(hours=1)).isoformat().replace("+00:00", "Z")}] in [
        [{k: v.replace("+00:00", "Z") for k, v in gap.items()} for gap in series]
        for series in gaps
    ]  # fmt: skip
    assert [] in gaps  # the other station has none


def test_long_series_are_decimated_for_charts(city: City) -> None:
    body = get(city, "/v1/timeseries", start=START, end=END, bucket="1m", group_by="stream",
               stream=1, points=200).json()  # fmt: skip
    assert body["decimated"] is True
    points = body["series"][0]["points"]
    assert len(points) == 200
    assert points[0]["t"].startswith("2026-11-01T00:00")
    assert points[-1]["t"].startswith("2026-11-02T23:59")


def test_readings_page_through_every_row_once(city: City) -> None:
    end = (T0 + timedelta(hours=12)).isoformat()
    rows = walk(city, "/v1/readings", start=START, end=end, limit=997)
    keys = [(r["ts"], r["stream_id"]) for r in rows]
    assert len(keys) == len(set(keys)) == STREAMS * 720 - 120  # aq-0002 silent 10:00-12:00
    assert keys == sorted(keys, key=lambda k: (k[0], k[1]))


def test_alerts_with_who_did_what(city: City) -> None:
    every = walk(city, "/v1/alerts", limit=1)
    assert [a["kind"] for a in every] == ["overflow", "congestion", "spike"]  # newest first
    spike = every[-1]
    assert [(e["action"], e["actor"]) for e in spike["events"]] == [
        ("opened", "detector"),
        ("acknowledged", "ops-anna"),
        ("resolved", "ops-anna"),
    ]
    assert spike["events"][-1]["comment"] == "cleaned the inlet"
    open_ones = walk(city, "/v1/alerts", state=["open", "acknowledged"], severity="critical")
    assert [a["device_id"] for a in open_ones] == ["wb-0001"]


# ---- exports ---------------------------------------------------------------------------------


def _audited_exports(city: City) -> int:
    with psycopg.connect(city.admin_dsn) as conn:
        row = conn.execute("SELECT count(*) FROM audit_log WHERE action = 'export'").fetchone()
    return int(str(row[0])) if row else 0


def test_csv_export_streams_every_row_and_is_audited(city: City) -> None:
    before = _audited_exports(city)
    with httpx.stream("GET", city.url + "/v1/export", params={"start": START, "end": END},
                      headers=city.auth("planner"), timeout=120) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        body = b"".join(response.iter_bytes())
    table = pa_csv.read_csv(io.BytesIO(body))
    assert table.num_rows == RAW_ROWS
    assert table.column_names == [
        "ts", "device", "site", "sensor", "metric", "unit", "stream_id", "value"
    ]  # fmt: skip
    assert _audited_exports(city) == before + 1


def test_parquet_export_of_hourly_rollups(city: City) -> None:
    response = get(city, "/v1/export", start=START, end=END, format="parquet", resolution="1h",
                   site="north")  # fmt: skip
    assert response.status_code == 200
    table = pq.read_table(io.BytesIO(response.content))
    assert table.num_rows == 8 * 24 * DAYS  # eight northern streams
    assert set(table.column("site").to_pylist()) == {"north"}
    assert sum(table.column("n").to_pylist()) == 8 * MINUTES


def test_export_pages_join_into_the_whole(city: City) -> None:
    params: dict[str, Any] | None = {"start": START, "end": END, "page_size": 9_000}
    url: str | None = city.url + "/v1/export"
    parts = []
    for _ in range(20):
        assert url is not None
        response = httpx.get(url, params=params, headers=city.auth("admin"), timeout=60)
        assert response.status_code == 200
        parts.append(pa_csv.read_csv(io.BytesIO(response.content)))
        link = response.headers.get("link")
        if link is None:
            break
        url, params = re.fullmatch(r'<(.+)>; rel="next"', link)[1], None  # type: ignore[index]
    assert [p.num_rows for p in parts[:-1]] == [9_000] * (len(parts) - 1)
    keys = {
        key
        for part in parts
        for key in zip(
            part.column("ts").to_pylist(), part.column("stream_id").to_pylist(), strict=True
        )
    }
    assert sum(p.num_rows for p in parts) == len(keys) == RAW_ROWS


def test_an_empty_export_is_still_a_valid_file(city: City) -> None:
    response = get(city, "/v1/export", start="2020-01-01T00:00Z", end="2020-01-02T00:00Z",
                   format="parquet")  # fmt: skip
    assert pq.read_table(io.BytesIO(response.content)).num_rows == 0


# ---- bad input: clear 4xx, never a 500 -------------------------------------------------------

BAD = [
    ("/v1/timeseries", {"start": "2026-11-01T00:00", "end": END}, 422, "timezone"),
    ("/v1/timeseries", {"start": END, "end": START}, 400, "end must come after start"),
    ("/v1/timeseries", {"start": START, "end": END, "bucket": "1w"}, 422, "pattern"),
    ("/v1/timeseries", {"start": START, "end": END, "bucket": "0h"}, 422, "pattern"),
    ("/v1/timeseries", {"start": "2000-01-01T00:00Z", "end": END, "bucket": "1s"}, 400, "buckets"),
    ("/v1/timeseries", {"start": START, "end": END, "aggregate": "median"}, 422, "mean"),
    ("/v1/timeseries", {"start": START, "end": END, "stream": "x"}, 422, "integer"),
    ("/v1/readings", {"start": START, "end": END, "cursor": "bm9wZQ"}, 400, "cursor"),
    ("/v1/readings", {"start": START, "end": END, "cursor": "%%%"}, 400, "cursor"),
    ("/v1/readings", {"start": START, "end": END, "limit": 0}, 422, "greater"),
    ("/v1/readings", {"start": START, "end": START}, 400, "after start"),
    ("/v1/devices", {"site": "nul\x00byte"}, 400, "NUL characters"),
    ("/v1/export", {"start": START, "end": END, "device": "\x00"}, 400, "NUL characters"),
    ("/v1/devices", {"cursor": "WzEsMl0"}, 400, "cursor"),
    ("/v1/devices", {"sit": "north"}, 400, "unknown parameter(s) 'sit'"),
    ("/v1/readings", {"start": START, "end": END, "metrics": "pm2_5"}, 400, "metric"),
    ("/v1/readings", {"start": "2026-11-01T00:00+23:30", "end": END}, 200, "items"),
    ("/v1/readings", {"start": "0001-01-01T00:00+14:00", "end": END}, 422, "range"),
    ("/v1/export", {"start": START, "end": END, "format": "xlsx"}, 422, "csv"),
    ("/v1/export", {"start": START, "end": END, "resolution": "5m"}, 422, "raw"),
    ("/v1/export", {"start": START, "end": END, "cursor": "W10"}, 400, "cursor"),
    ("/v1/ngsi-ld/entities", {"type": "WeatherObserved"}, 422, "Device"),
    ("/v1/sensorthings/v1.1/Observations", {"$filter": "result gt 3"}, 400, "time"),
    ("/v1/sensorthings/v1.1/Observations", {"$orderby": "result"}, 400, "phenomenonTime"),
    ("/v1/sensorthings/v1.1/Things", {"$filter": "name eq 'x'"}, 400, "Observations"),
    ("/v1/sensorthings/v1.1/Observations('12')", {}, 400, "Observation id"),
]


@pytest.mark.parametrize(("path", "params", "code", "words"), BAD)
def test_bad_parameters_get_a_clear_4xx(
    city: City, path: str, params: dict[str, Any], code: int, words: str
) -> None:
    response = get(city, path, "admin", **params)
    assert response.status_code == code, response.text[:500]
    assert words.lower() in response.text.lower()


INJECTIONS = ["north' OR '1'='1", "'; DROP TABLE readings; --", 'north") OR (1=1', "%' --"]


@pytest.mark.parametrize("attempt", INJECTIONS)
def test_sql_injection_is_just_an_unknown_name(city: City, attempt: str) -> None:
    assert walk(city, "/v1/devices", site=attempt) == []
    assert walk(city, "/v1/readings", start=START, end=END, device=attempt) == []
    assert get(city, "/v1/timeseries", start=START, end=END, site=attempt).json()["series"] == []
    assert get(city, f"/v1/devices/{attempt}").status_code == 404
    assert get(city, "/v1/sensorthings/v1.1/Things('" + attempt.replace("'", "''") + "')"
               ).status_code in (404,)  # fmt: skip
    with psycopg.connect(city.admin_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone() == (RAW_ROWS,)


def test_a_client_leaving_mid_export_frees_the_database(city: City) -> None:
    for _ in range(3):
        with httpx.stream("GET", city.url + "/v1/export", params={"start": START, "end": END},
                          headers=city.auth("planner"), timeout=60) as response:  # fmt: skip
            assert response.status_code == 200
            next(response.iter_raw(1024))  # then hang up
    deadline = time.monotonic() + 20
    while True:
        with psycopg.connect(city.admin_dsn) as conn:
            running = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                " AND query LIKE 'COPY%%' AND pid <> pg_backend_pid()"
            ).fetchone()
        if running == (0,):
            break
        assert time.monotonic() < deadline, "an export kept reading after its client left"
        time.sleep(0.2)
    assert get(city, "/v1/devices").status_code == 200


def test_the_documented_limit_is_the_enforced_one(city: City) -> None:
    # 100,800 one-minute buckets of one stream: under the guide's 1,000,000 bucket-groups.
    start = T0 - timedelta(days=68)
    many = get(city, "/v1/timeseries", start=start.isoformat(), end=END, bucket="1m",
               group_by="stream", stream=1, aggregate="count")  # fmt: skip
    assert many.status_code == 200, many.text[:300]
    (series,) = many.json()["series"]
    assert sum(p["count"] for p in series["points"]) == MINUTES
    assert series["gaps"][0]["first"].startswith(start.strftime("%Y-%m-%dT%H:%M"))
    too_many = get(city, "/v1/timeseries", start=(T0 - timedelta(days=700)).isoformat(),
                   end=END, bucket="1m", group_by="stream", stream=1)  # fmt: skip
    assert too_many.status_code == 400
    assert "1,000,000" in too_many.text
