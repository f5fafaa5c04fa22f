"""Every kind of bad input through the real broker and database: its reason code is stored, and
the good readings around it are kept. Plus random bytes and random JSON thrown at validation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from datetime import UTC, datetime, timedelta

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.contract import MAX_PAYLOAD_BYTES, ContractError, decode_status
from ingest.validate import Accepted, Rejection, fast_loads, validate_telemetry
from tests.ingest.helpers import batch_payload, publish_all, recent, register
from tests.ingest.running import eventually, ingest_config, running_ingest
from tests.services.handles import BrokerAddress, Database

NOW = datetime.now(UTC).replace(microsecond=0)


def reading(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "sensor": "aq",
        "metric": "pm2_5",
        "value": 12.5,
        "unit": "ug/m3",
        "ts": (NOW - timedelta(minutes=2)).isoformat(),
    }
    body.update(overrides)
    return body


def message(*readings: dict[str, object], **overrides: object) -> bytes:
    body: dict[str, object] = {
        "v": 1,
        "device": "aq-0001",
        "seq": 1,
        "sent_at": NOW.isoformat(),
        "readings": list(readings) or [reading()],
    }
    body.update(overrides)
    return json.dumps(body).encode()


_distinct = iter(range(1, 1_000))


def with_bad_reading(bad: dict[str, object]) -> bytes:
    """A message whose middle reading is bad and whose two others are good (and unique)."""
    at = (NOW - timedelta(minutes=2, seconds=next(_distinct))).isoformat()
    good = [reading(metric="pm10", value=20.0, ts=at), reading(metric="no2", value=30.0, ts=at)]
    return message(good[0], bad, good[1])


# (name, topic device, payload, reason, scope)
CASES: list[tuple[str, str, bytes, str, str]] = [
    ("malformed", "aq-0001", b'{"v": 1, "device": "aq', "malformed_json", "message"),
    ("not utf-8", "aq-0001", b"\xff\xfe\x00", "malformed_json", "message"),
    ("oversized", "aq-0001", b" " * (MAX_PAYLOAD_BYTES + 1), "oversized", "message"),
    ("array", "aq-0001", b"[1, 2]", "not_an_object", "message"),
    ("schema v2", "aq-0001", message(v=2), "unsupported_version", "message"),
    ("no version", "aq-0001", b'{"device": "aq-0001"}', "unsupported_version", "message"),
    (
        "no seq",
        "aq-0001",
        json.dumps(
            {"v": 1, "device": "aq-0001", "sent_at": NOW.isoformat(), "readings": [reading()]}
        ).encode(),
        "missing_field",
        "message",
    ),
    ("float seq", "aq-0001", message(seq=1.5), "wrong_type", "message"),
    ("bad sent_at", "aq-0001", message(sent_at="yesterday"), "bad_timestamp", "message"),
    ("no readings", "aq-0001", message(readings=[]), "empty_batch", "message"),
    ("too many", "aq-0001", message(readings=[reading()] * 2_001), "too_many_readings", "message"),
    ("unknown device", "zz-9999", message(device="zz-9999"), "unknown_device", "message"),
    ("publishing as another", "aq-0002", message(), "device_mismatch", "message"),
    ("string value", "aq-0001", with_bad_reading(reading(value="high")), "wrong_type", "reading"),
    ("NaN", "aq-0001", with_bad_reading(reading(value=math.nan)), "non_finite", "reading"),
    ("infinity", "aq-0001", with_bad_reading(reading(value=math.inf)), "non_finite", "reading"),
    ("wrong unit", "aq-0001", with_bad_reading(reading(unit="mg/m3")), "unit_mismatch", "reading"),
    (
        "unknown metric",
        "aq-0001",
        with_bad_reading(reading(metric="radon")),
        "unknown_metric",
        "reading",
    ),
    ("sensor id", "aq-0001", with_bad_reading(reading(sensor="a/b")), "invalid_id", "reading"),
    ("impossible", "aq-0001", with_bad_reading(reading(value=5_000.0)), "out_of_range", "reading"),
    (
        "future",
        "aq-0001",
        with_bad_reading(reading(ts=(NOW + timedelta(days=1)).isoformat())),
        "timestamp_in_future",
        "reading",
    ),
    (
        "ancient",
        "aq-0001",
        with_bad_reading(reading(ts="2001-01-01T00:00:00Z")),
        "timestamp_too_old",
        "reading",
    ),
    (
        "naive time",
        "aq-0001",
        with_bad_reading(reading(ts="2026-11-23T08:00:00")),
        "bad_timestamp",
        "reading",
    ),
    (
        "no value",
        "aq-0001",
        with_bad_reading(
            {"sensor": "aq", "metric": "pm2_5", "unit": "ug/m3", "ts": NOW.isoformat()}
        ),
        "missing_field",
        "reading",
    ),
]


async def test_every_bad_input_is_refused_with_its_reason_and_the_good_kept(
    broker: BrokerAddress, timescale_database: Database, unique_site: str
) -> None:
    dsn = timescale_database.dsn
    register(dsn, [("aq-0001", unique_site), ("aq-0002", unique_site)])
    start = recent() - timedelta(hours=1)
    messages: list[tuple[str, bytes]] = []
    good_readings = 0
    for index, (_, device, payload, _, scope) in enumerate(CASES):
        # A good message before every bad one, each with its own timestamps.
        good = batch_payload("aq-0002", index, start + timedelta(minutes=index), count=2)
        messages.append((f"city/v1/{unique_site}/aq-0002/telemetry", good))
        messages.append((f"city/v1/{unique_site}/{device}/telemetry", payload))
        good_readings += 2 + (2 if scope == "reading" else 0)
    async with running_ingest(ingest_config(broker, dsn)) as service:
        await asyncio.to_thread(publish_all, broker, messages)
        assert await eventually(lambda: service.stats().received >= len(messages), timeout_s=60)
        assert await eventually(lambda: _count(dsn, "rejections") == len(CASES))
    with psycopg.connect(dsn) as conn:
        got = conn.execute(
            "SELECT reason, reading_index IS NULL, device_id, length(payload) <= 1100"
            " FROM rejections ORDER BY id"
        ).fetchall()
    expected = [(reason, scope == "message") for _, _, _, reason, scope in CASES]
    assert [(reason, whole) for reason, whole, _, _ in got] == expected
    assert all(short for *_, short in got)  # only an excerpt of each payload is kept
    assert _count(dsn, "readings") == good_readings


def _count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # test constant
    return int(row[0]) if row else 0


SITES = {"aq-0001": "centre"}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
ENVELOPE = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1, 2, "1", None]),
        "device": st.sampled_from(["aq-0001", "aq-0002", "", "a/b", 7]),
        "seq": st.one_of(
            st.integers(min_value=-5, max_value=2**64), st.floats(), st.text(max_size=3)
        ),
        "sent_at": st.one_of(st.just(NOW.isoformat()), st.text(max_size=30)),
        "readings": st.lists(
            st.fixed_dictionaries(
                {
                    "sensor": st.sampled_from(["aq", "", "x/y"]),
                    "metric": st.sampled_from(["pm2_5", "radon", "temperature"]),
                    "value": st.one_of(st.floats(allow_nan=True), st.integers(), JSON),
                    "unit": st.sampled_from(["ug/m3", "degC", "?"]),
                    "ts": st.one_of(st.just(NOW.isoformat()), st.text(max_size=30), st.integers()),
                },
            ),
            max_size=6,
        ),
    },
)


def _never_crashes(payload: bytes) -> None:
    verdict = validate_telemetry(
        "city/v1/centre/aq-0001/telemetry", payload, sites=SITES, now=NOW, loads=fast_loads
    )
    assert isinstance(verdict, Accepted | Rejection)
    if isinstance(verdict, Rejection):
        assert verdict.reason
        assert verdict.detail
        verdict.excerpt()
    with contextlib.suppress(ContractError):
        decode_status(payload, loads=fast_loads)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2_000))
def test_random_bytes_never_crash_validation(payload: bytes) -> None:
    _never_crashes(payload)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON)
def test_random_json_never_crashes_validation(value: object) -> None:
    _never_crashes(json.dumps(value).encode())


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ENVELOPE)
def test_random_near_valid_messages_never_crash_validation(body: dict[str, object]) -> None:
    _never_crashes(json.dumps(body).encode())
