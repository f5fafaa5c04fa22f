"""Server-side validation: the golden payloads from ingest's side, plus what only ingest knows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from edge.contract import decode_batch, encode_batch
from ingest.validate import (
    Accepted,
    IngestReason,
    Limits,
    Rejection,
    fast_loads,
    validate_telemetry,
)
from tests.payloads import InvalidCase, invalid_cases, valid, valid_telemetry_names

NOW = datetime(2026, 11, 23, 8, 1, tzinfo=UTC)
SITES = {"aq-0001": "centre", "tr-0001": "centre", "wb-0001": "centre"}


def check(topic: str, payload: bytes, *, now: datetime = NOW) -> Accepted | Rejection:
    return validate_telemetry(topic, payload, sites=SITES, now=now, loads=fast_loads)


def topic_for(device: str, site: str = "centre") -> str:
    return f"city/v1/{site}/{device}/telemetry"


@pytest.mark.parametrize("name", valid_telemetry_names())
def test_golden_payloads_are_accepted_whole(name: str) -> None:
    payload = valid(name)
    device = json.loads(payload)["device"]
    verdict = check(topic_for(device), payload)
    assert isinstance(verdict, Accepted)
    assert verdict.rejections == ()
    assert verdict.batch == decode_batch(payload).batch


@pytest.mark.parametrize("case", invalid_cases(), ids=lambda c: c.name)
def test_golden_invalid_payloads_are_refused_with_the_same_reason(case: InvalidCase) -> None:
    verdict = check(topic_for("aq-0001"), case.payload)
    if case.scope == "message":
        assert isinstance(verdict, Rejection)
        assert verdict.reason == case.reason
        assert verdict.reading_index is None
        return
    assert isinstance(verdict, Accepted)
    assert [(r.reading_index, r.reason) for r in verdict.rejections] == [(case.index, case.reason)]
    assert len(verdict.batch.readings) == case.kept


def test_unknown_device_is_refused() -> None:
    payload = valid("air_quality.json").replace(b"aq-0001", b"aq-9999")
    verdict = check(topic_for("aq-9999"), payload)
    assert isinstance(verdict, Rejection)
    assert verdict.reason == IngestReason.UNKNOWN_DEVICE


def test_device_publishing_as_another_is_refused() -> None:
    verdict = check(topic_for("tr-0001"), valid("air_quality.json"))
    assert isinstance(verdict, Rejection)
    assert verdict.reason == IngestReason.DEVICE_MISMATCH
    assert verdict.device == "tr-0001"


def test_wrong_site_is_refused() -> None:
    verdict = check(topic_for("aq-0001", "north"), valid("air_quality.json"))
    assert isinstance(verdict, Rejection)
    assert verdict.reason == IngestReason.SITE_MISMATCH


@pytest.mark.parametrize(
    "topic", ["city/v1/centre/aq-0001/status", "city/v9/centre/aq-0001/telemetry", "x"]
)
def test_foreign_topics_are_refused(topic: str) -> None:
    verdict = check(topic, valid("air_quality.json"))
    assert isinstance(verdict, Rejection)
    assert verdict.reason == IngestReason.BAD_TOPIC


def test_physically_impossible_values_are_refused_and_the_rest_kept() -> None:
    body = json.loads(valid("air_quality.json"))
    body["readings"][0]["value"] = 5000.0  # PM2.5 optical sensors top out around 1000
    body["readings"][4]["value"] = -3.0  # negative humidity
    verdict = check(topic_for("aq-0001"), json.dumps(body).encode())
    assert isinstance(verdict, Accepted)
    assert [(r.reading_index, r.reason) for r in verdict.rejections] == [
        (0, IngestReason.OUT_OF_RANGE),
        (4, IngestReason.OUT_OF_RANGE),
    ]
    assert [r.metric for r in verdict.batch.readings] == ["pm10", "no2", "temperature"]


def test_absurd_timestamps_are_refused() -> None:
    body = json.loads(valid("traffic.json"))
    body["readings"][0]["ts"] = "2036-11-23T08:00:00Z"
    body["readings"][1]["ts"] = "1999-01-01T00:00:00Z"
    verdict = check(topic_for("tr-0001"), json.dumps(body).encode())
    assert isinstance(verdict, Accepted)
    assert [(r.reading_index, r.reason) for r in verdict.rejections] == [
        (0, IngestReason.TIMESTAMP_IN_FUTURE),
        (1, IngestReason.TIMESTAMP_TOO_OLD),
    ]
    assert len(verdict.batch.readings) == 4


def test_days_old_backlog_from_an_offline_device_is_accepted() -> None:
    payload = valid("traffic.json")
    verdict = check(topic_for("tr-0001"), payload, now=NOW + timedelta(days=20))
    assert isinstance(verdict, Accepted)
    assert verdict.rejections == ()


def test_limits_are_configurable() -> None:
    payload = valid("traffic.json")
    verdict = validate_telemetry(
        topic_for("tr-0001"),
        payload,
        sites=SITES,
        now=NOW + timedelta(days=2),
        limits=Limits.from_seconds(60, 86_400),
    )
    assert isinstance(verdict, Accepted)
    assert {r.reason for r in verdict.rejections} == {IngestReason.TIMESTAMP_TOO_OLD}


def test_rejection_excerpt_is_safe_text() -> None:
    rejection = Rejection("t", None, "malformed_json", "x", b"\x00\xff" + b"a" * 5000)
    excerpt = rejection.excerpt()
    assert "\x00" not in excerpt
    assert excerpt.startswith("\\x00\\xff")
    assert len(excerpt) < 1100


def test_reencoded_batches_validate_too() -> None:
    batch = decode_batch(valid("air_quality.json")).batch
    verdict = check(topic_for("aq-0001"), encode_batch(batch))
    assert isinstance(verdict, Accepted)
