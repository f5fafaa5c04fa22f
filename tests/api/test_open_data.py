"""FIWARE Smart Data Models checked against the models' own offline definitions, and the
OGC SensorThings v1.1 view walked through its links."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import httpx
import psycopg
import pytest
from pysmartdatamodels import pysmartdatamodels as sdm

from tests.api.city import GAP, T0, City

START, END = T0.isoformat(), (T0 + timedelta(days=2)).isoformat()
MODELS = ("AirQualityObserved", "TrafficFlowObserved", "WasteContainer", "Device")
_JSON_TYPES = {"number": (int, float), "string": (str,), "boolean": (bool,), "array": (list,),
               "object": (dict,)}  # fmt: skip


@cache
def model(name: str) -> dict[str, dict[str, Any]]:
    """The top-level attributes of a model, as pysmartdatamodels carries them offline."""
    attributes: dict[str, dict[str, Any]] = {}
    for row in sdm.load_all_attributes():
        # The GeoJSON members of location are listed too, but without an NGSI type.
        if (
            row["dataModel"] == name
            and row.get("typeNGSI")
            and re.search(rf"/{name}/{row['property']}#", row["id"])
        ):
            attributes.setdefault(row["property"], row)
    assert len(attributes) > 20, f"{name}: the offline model data is missing"
    return attributes


def _is_json_type(value: object, json_type: str) -> bool:
    if json_type == "number" and isinstance(value, bool):
        return False
    return isinstance(value, _JSON_TYPES[json_type])


def violations(entity: dict[str, Any]) -> list[str]:
    """What in ``entity`` its model does not allow: names, types, formats, enumerations."""
    found = []
    spec = model(entity["type"])
    for name, given in entity.items():
        value: Any = given
        if name == "@context":
            continue
        rule = spec.get(name)
        if rule is None:
            found.append(f"{name}: not an attribute of {entity['type']}")
            continue
        if not _is_json_type(value, rule["type"]):
            found.append(f"{name}: {type(value).__name__}, the model says {rule['type']}")
            continue
        if rule.get("format") == "date-time":
            try:
                datetime.fromisoformat(value)
            except ValueError:
                found.append(f"{name}: {value!r} is not a date-time")
        if rule.get("format") == "uri" and not re.match(r"[a-z][a-z0-9+.-]*:", value):
            found.append(f"{name}: {value!r} is not a URI")
        if "enum" in rule and value not in rule["enum"]:
            found.append(f"{name}: {value!r} not in {rule['enum']}")
        listed = re.search(r"Enum:'([^']+)'", rule.get("description", ""))
        if rule["type"] == "array" and listed:
            allowed = {item.strip() for item in listed[1].split(",")}
            found += [f"{name}: {item!r} not in the model's list" for item in value
                      if item not in allowed]  # fmt: skip
        if rule.get("typeNGSI") == "Relationship":
            targets = value if isinstance(value, list) else [value]
            found += [f"{name}: {t!r} is not a URN" for t in targets
                      if not str(t).startswith("urn:ngsi-ld:")]  # fmt: skip
        if rule.get("typeNGSI") == "GeoProperty" and (
            value.get("type") != "Point" or len(value.get("coordinates", ())) != 2
        ):
            found.append(f"{name}: not a GeoJSON Point")
    return found


def get(city: City, path: str, **params: Any) -> httpx.Response:
    return httpx.get(city.url + path, params=params, headers=city.auth("planner"), timeout=60)


def test_the_checker_catches_what_the_models_forbid() -> None:
    wrong = {"id": "urn:ngsi-ld:WasteContainer:x", "type": "WasteContainer", "fillingLevel": "9",
             "status": "overflowing", "colour": "green", "timeInstant": "yesterday",
             "refDevice": ["device-1"]}  # fmt: skip
    assert len(violations(wrong)) == 5


@pytest.mark.parametrize("kind", MODELS)
def test_current_state_follows_each_model(city: City, kind: str) -> None:
    response = get(city, "/v1/ngsi-ld/entities", type=kind)
    assert response.status_code == 200
    entities = response.json()
    assert entities
    for entity in entities:
        assert entity["type"] == kind
        assert entity["id"].startswith(f"urn:ngsi-ld:{kind}:")
        assert violations(entity) == [], entity["id"]


def test_current_values_are_the_latest_readings_in_the_models_units(city: City) -> None:
    air = {e["id"]: e for e in get(city, "/v1/ngsi-ld/entities", type="AirQualityObserved").json()}
    station = air["urn:ngsi-ld:AirQualityObserved:aq-0001"]
    assert station["dateObserved"] == "2026-11-02T23:59:00.000Z"
    assert 0 < station["relativeHumidity"] < 1  # a fraction in the model, % on the wire
    assert station["airQualityIndex"] >= 1
    assert station["location"] == {"type": "Point", "coordinates": [-0.12, 51.51]}
    assert "urn:ngsi-ld:AirQualityObserved:aq-0009" not in air  # never reported
    (road,) = get(city, "/v1/ngsi-ld/entities", type="TrafficFlowObserved").json()
    assert road["congested"] is True  # its congestion alert is open
    (bin_,) = get(city, "/v1/ngsi-ld/entities", type="WasteContainer").json()
    assert 0 < bin_["fillingLevel"] < 1
    assert bin_["status"] == "ok"
    devices = {e["id"]: e for e in get(city, "/v1/ngsi-ld/entities", type="Device").json()}
    assert devices["urn:ngsi-ld:Device:aq-0009"]["deviceState"] == "online"
    assert "airPollution" in devices["urn:ngsi-ld:Device:aq-0001"]["controlledProperty"]


def test_device_entities_page_with_a_link_header(city: City) -> None:
    first = get(city, "/v1/ngsi-ld/entities", type="Device", limit=3)
    link = re.fullmatch(r'<(.+)>; rel="next"', first.headers["link"])
    assert link is not None
    second = httpx.get(link[1], headers=city.auth("planner"))
    assert "link" not in second.headers
    ids = [e["id"] for e in first.json() + second.json()]
    assert len(ids) == len(set(ids)) == 5


def test_history_as_hourly_entities_with_the_gap_left_empty(city: City) -> None:
    response = get(city, "/v1/ngsi-ld/temporal", type="AirQualityObserved", start=START,
                   end=END, bucket="1h")  # fmt: skip
    entities = response.json()
    for entity in entities:
        assert violations(entity) == []
    south = [e["dateObserved"] for e in entities if e["id"].endswith("aq-0002")]
    assert len(south) == 48 - 2
    assert GAP[0].strftime("%Y-%m-%dT%H:%M") not in {d[:16] for d in south}
    traffic = get(city, "/v1/ngsi-ld/temporal", type="TrafficFlowObserved", start=START,
                  end=END, bucket="1d").json()  # fmt: skip
    assert [e["dateObserved"] for e in traffic] == [
        "2026-11-01T00:00:00.000Z/2026-11-02T00:00:00.000Z",
        "2026-11-02T00:00:00.000Z/2026-11-03T00:00:00.000Z",
    ]
    for entity in traffic:
        assert violations(entity) == []


# ---- OGC SensorThings ------------------------------------------------------------------------

STA = "/v1/sensorthings/v1.1"


def follow(city: City, url: str, role: str = "planner") -> dict[str, Any]:
    response = httpx.get(url, headers=city.auth(role), timeout=30)
    assert response.status_code == 200, (url, response.text[:300])
    body: dict[str, Any] = response.json()
    return body


def everything(city: City, url: str) -> list[dict[str, Any]]:
    """Every entity of a collection, through @iot.nextLink (at most 50 pages)."""
    items: list[dict[str, Any]] = []
    next_url: str | None = url
    for _ in range(50):
        assert next_url is not None
        body = follow(city, next_url)
        items += body["value"]
        next_url = body.get("@iot.nextLink")
        if next_url is None:
            return items
    raise AssertionError("more than 50 pages")


def test_the_entity_sets_and_their_counts(city: City) -> None:
    root = follow(city, city.url + STA)
    assert [s["name"] for s in root["value"]] == ["Things", "Locations", "Sensors",
                                                 "ObservedProperties", "Datastreams",
                                                 "Observations"]  # fmt: skip
    counts = {s["name"]: follow(city, s["url"] + "?$count=true&$top=0")["@iot.count"]
              for s in root["value"] if s["name"] != "Observations"}  # fmt: skip
    assert counts == {"Things": 5, "Locations": 4, "Sensors": 5, "ObservedProperties": 10,
                      "Datastreams": 12}  # fmt: skip


def test_top_and_skip_page_things_in_either_order(city: City) -> None:
    things = everything(city, city.url + STA + "/Things?$top=2")
    assert [t["@iot.id"] for t in things] == ["aq-0001", "aq-0002", "aq-0009", "tf-0001",
                                             "wb-0001"]  # fmt: skip
    backwards = follow(city, city.url + STA + "/Things?$orderby=id desc&$top=1&$skip=1")
    assert [t["@iot.id"] for t in backwards["value"]] == ["tf-0001"]


def test_every_navigation_link_of_a_thing_and_a_datastream_resolves(city: City) -> None:
    thing = follow(city, city.url + STA + "/Things('aq-0001')")
    (place,) = follow(city, thing["Locations@iot.navigationLink"])["value"]
    assert place["location"]["coordinates"] == [-0.12, 51.51]
    streams = follow(city, thing["Datastreams@iot.navigationLink"])["value"]
    assert len(streams) == 5
    stream = streams[0]
    assert follow(city, stream["@iot.selfLink"])["@iot.id"] == stream["@iot.id"]
    assert follow(city, stream["Thing@iot.navigationLink"])["@iot.id"] == "aq-0001"
    sensor = follow(city, stream["Sensor@iot.navigationLink"])
    assert sensor["@iot.id"] == "aq-0001:aq"
    assert len(follow(city, sensor["Datastreams@iot.navigationLink"])["value"]) == 3
    prop = follow(city, stream["ObservedProperty@iot.navigationLink"])
    assert prop["@iot.id"] == "pm2_5"
    assert len(follow(city, prop["Datastreams@iot.navigationLink"])["value"]) == 2
    assert stream["unitOfMeasurement"]["symbol"] == "µg/m³"
    assert follow(city, place["Things@iot.navigationLink"])["value"][0]["@iot.id"] == "aq-0001"


def test_observations_filtered_by_time_ordered_and_paged(city: City) -> None:
    window = "phenomenonTime ge 2026-11-01T10:00:00Z and phenomenonTime lt 2026-11-01T11:00:00Z"
    url = f"{city.url}{STA}/Datastreams(1)/Observations?$filter={window}&$top=25&$count=true"
    first = follow(city, url)
    assert first["@iot.count"] == 60
    every = everything(city, url)
    times = [o["phenomenonTime"] for o in every]
    assert len(times) == 60
    assert times == sorted(times)
    assert times[0] == "2026-11-01T10:00:00.000000Z"
    newest = follow(city, f"{city.url}{STA}/Datastreams(1)/Observations?$orderby=phenomenonTime"
                          " desc&$top=1")  # fmt: skip
    assert newest["value"][0]["phenomenonTime"] == "2026-11-02T23:59:00.000000Z"
    silent = follow(city, f"{city.url}{STA}/Datastreams(6)/Observations?$filter={window}&$count"
                          "=true&$top=0")  # fmt: skip
    assert silent["@iot.count"] == 0  # aq-0002's gap
    one = every[7]
    again = follow(city, one["@iot.selfLink"])
    assert again == one
    assert follow(city, one["Datastream@iot.navigationLink"])["@iot.id"] == 1


def test_unknown_entities_are_404(city: City) -> None:
    for path in ("/Things('nope')", "/Datastreams(999)", "/Datastreams(999)/Observations",
                 "/Sensors('aq-0001:nothing')", "/ObservedProperties('colour')",
                 "/Observations('1-0')", "/Locations('aq-0009')"):  # fmt: skip
        assert get(city, STA + path).status_code == 404, path


def test_traffic_intensity_is_the_number_of_vehicles_in_the_period_observed(city: City) -> None:
    start = T0 + timedelta(minutes=10)  # cuts the first hour: its period starts at 00:10
    traffic = get(city, "/v1/ngsi-ld/temporal", type="TrafficFlowObserved",
                  start=start.isoformat(), end=(T0 + timedelta(hours=3)).isoformat(),
                  bucket="1h").json()  # fmt: skip
    with psycopg.connect(city.admin_dsn) as conn:
        sums = conn.execute(
            "SELECT date_trunc('hour', r.ts), sum(r.value) FROM readings r"
            " JOIN streams s USING (stream_id) WHERE s.metric = 'vehicle_count'"
            " AND r.ts >= %s AND r.ts < %s GROUP BY 1 ORDER BY 1",
            (start, T0 + timedelta(hours=3)),
        ).fetchall()
    assert [e["intensity"] for e in traffic] == pytest.approx([float(s) for _, s in sums])
    assert traffic[0]["intensity"] > 1_000  # a sum of many samples, not their mean (~40)
    periods = [(e["dateObservedFrom"], e["dateObservedTo"]) for e in traffic]
    assert periods == [
        ("2026-11-01T00:10:00.000Z", "2026-11-01T01:00:00.000Z"),
        ("2026-11-01T01:00:00.000Z", "2026-11-01T02:00:00.000Z"),
        ("2026-11-01T02:00:00.000Z", "2026-11-01T03:00:00.000Z"),
    ]


def test_top_0_gives_the_count_and_no_link_to_itself(city: City) -> None:
    for collection in ("Things", "Datastreams", "Observations"):
        body = follow(city, city.url + STA + f"/{collection}?$top=0&$count=true")
        assert body["value"] == []
        assert body["@iot.count"] > 0
        assert "@iot.nextLink" not in body
