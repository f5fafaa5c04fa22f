"""The wire contract, from the edge's side, on the golden payloads and on built values."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from edge.contract import (
    MAX_PAYLOAD_BYTES,
    MAX_READINGS_PER_BATCH,
    Batch,
    ContractError,
    Reading,
    Reason,
    Status,
    decode_batch,
    decode_status,
    encode_batch,
    encode_status,
)
from tests.payloads import InvalidCase, invalid_cases, valid, valid_telemetry_names

AT = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def reading(**overrides: object) -> Reading:
    fields: dict[str, object] = {
        "sensor": "aq",
        "metric": "pm2_5",
        "value": 12.5,
        "unit": "ug/m3",
        "ts": AT,
    }
    fields.update(overrides)
    return Reading(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", valid_telemetry_names())
def test_golden_telemetry_decodes_and_survives_a_round_trip(name: str) -> None:
    decoded = decode_batch(valid(name))
    assert decoded.rejected == ()
    assert decoded.batch.readings
    again = decode_batch(encode_batch(decoded.batch))
    assert again.batch == decoded.batch


def test_golden_air_quality_values() -> None:
    batch = decode_batch(valid("air_quality.json")).batch
    assert (batch.device, batch.seq, batch.clock_synced) == ("aq-0001", 1042, True)
    assert [r.metric for r in batch.readings] == ["pm2_5", "pm10", "no2", "temperature", "humidity"]
    assert batch.readings[0].ts == AT
    assert batch.sent_at == AT + timedelta(seconds=5, milliseconds=120)


def test_offsets_are_normalised_to_utc() -> None:
    batch = decode_batch(valid("waste_bin_unsynced_clock.json")).batch
    assert batch.clock_synced is False
    assert batch.readings[0].ts == AT
    assert batch.readings[0].ts.tzinfo == UTC


@pytest.mark.parametrize("case", invalid_cases(), ids=lambda c: c.name)
def test_golden_invalid_payloads_name_their_reason(case: InvalidCase) -> None:
    if case.scope == "message":
        with pytest.raises(ContractError) as caught:
            decode_batch(case.payload)
        assert caught.value.reason == case.reason
        assert caught.value.detail
        return
    decoded = decode_batch(case.payload)
    assert [(r.index, r.reason) for r in decoded.rejected] == [(case.index, case.reason)]
    assert len(decoded.batch.readings) == case.kept


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xff\xfe not utf-8", Reason.MALFORMED_JSON),
        (b"[" * 100_000, Reason.MALFORMED_JSON),
        (b"x" * (MAX_PAYLOAD_BYTES + 1), Reason.OVERSIZED),
        (b'{"v": true}', Reason.UNSUPPORTED_VERSION),
        (b'{"v": "1"}', Reason.UNSUPPORTED_VERSION),
        (b'{"v": []}', Reason.UNSUPPORTED_VERSION),  # unhashable: once a TypeError
        (b'{"v": {"a": 1}}', Reason.UNSUPPORTED_VERSION),
        (b'{"v": 1.0}', Reason.UNSUPPORTED_VERSION),
        (b'{"v": 1, "device": 7}', Reason.WRONG_TYPE),
        (b'{"v": 1, "device": "d", "seq": 1.5}', Reason.WRONG_TYPE),
        (b'{"v": 1, "device": "d", "seq": true}', Reason.WRONG_TYPE),
        (
            b'{"v": 1, "device": "d", "seq": -1, "sent_at": "2026-11-23T08:00:00Z", '
            b'"readings": [1]}',
            Reason.WRONG_TYPE,
        ),
        (
            b'{"v": 1, "device": "d", "seq": 1, "sent_at": "yesterday", "readings": []}',
            Reason.BAD_TIMESTAMP,
        ),
        (
            b'{"v": 1, "device": "d", "seq": 1, "sent_at": "2026-11-23T08:00:00Z", "readings": {}}',
            Reason.WRONG_TYPE,
        ),
        (
            b'{"v": 1, "device": "d", "seq": 1, "sent_at": "2026-11-23T08:00:00Z", '
            b'"clock_synced": "yes", "readings": []}',
            Reason.WRONG_TYPE,
        ),
    ],
)
def test_broken_envelopes_are_refused(payload: bytes, reason: Reason) -> None:
    with pytest.raises(ContractError) as caught:
        decode_batch(payload)
    assert caught.value.reason == reason


def test_too_many_readings_are_refused_before_parsing_them() -> None:
    one = {
        "sensor": "s",
        "metric": "pm2_5",
        "value": 1,
        "unit": "ug/m3",
        "ts": "2026-11-23T08:00:00Z",
    }
    body = {
        "v": 1,
        "device": "d",
        "seq": 1,
        "sent_at": "2026-11-23T08:00:00Z",
        "readings": [one] * (MAX_READINGS_PER_BATCH + 1),
    }
    with pytest.raises(ContractError) as caught:
        decode_batch(json.dumps(body).encode())
    assert caught.value.reason == Reason.TOO_MANY_READINGS


@pytest.mark.parametrize(
    ("raw_value", "reason"),
    [
        ("1e999", Reason.NON_FINITE),
        ("Infinity", Reason.NON_FINITE),
        ("-Infinity", Reason.NON_FINITE),
        ("true", Reason.WRONG_TYPE),
        ("null", Reason.WRONG_TYPE),
        ("[1]", Reason.WRONG_TYPE),
        ("1" + "0" * 400, Reason.NON_FINITE),
    ],
)
def test_bad_values_are_refused_one_by_one(raw_value: str, reason: Reason) -> None:
    payload = (
        '{"v":1,"device":"d","seq":1,"sent_at":"2026-11-23T08:00:00Z","readings":['
        f'{{"sensor":"s","metric":"pm2_5","value":{raw_value},"unit":"ug/m3","ts":"2026-11-23T08:00:00Z"}},'
        '{"sensor":"s","metric":"pm10","value":3,"unit":"ug/m3","ts":"2026-11-23T08:00:00Z"}]}'
    ).encode()
    decoded = decode_batch(payload)
    assert [(r.index, r.reason) for r in decoded.rejected] == [(0, reason)]
    assert [r.metric for r in decoded.batch.readings] == ["pm10"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"value": float("nan")}, Reason.NON_FINITE),
        ({"value": True}, Reason.WRONG_TYPE),
        ({"metric": "radon"}, Reason.UNKNOWN_METRIC),
        ({"unit": "mg/m3"}, Reason.UNIT_MISMATCH),
        ({"sensor": "a/b"}, Reason.INVALID_ID),
        ({"ts": datetime(2026, 11, 23, 8, 0)}, Reason.BAD_TIMESTAMP),
    ],
)
def test_readings_validate_when_built(overrides: dict[str, object], reason: Reason) -> None:
    with pytest.raises(ContractError) as caught:
        reading(**overrides)
    assert caught.value.reason == reason


def test_batches_validate_when_built() -> None:
    with pytest.raises(ContractError):
        Batch("bad id", 1, (reading(),), AT)
    with pytest.raises(ContractError):
        Batch("d", -1, (reading(),), AT)
    with pytest.raises(ContractError):
        Batch("d", 1, (reading(),), AT, version=2)


def test_timestamps_keep_milliseconds_in_utc() -> None:
    local = datetime(2026, 11, 23, 9, 0, 0, 123_999, tzinfo=timezone(timedelta(hours=1)))
    assert reading(ts=local).ts == datetime(2026, 11, 23, 8, 0, 0, 123_000, tzinfo=UTC)


def test_encoded_batches_are_compact_json_without_nan() -> None:
    payload = encode_batch(Batch("aq-0001", 3, (reading(),), AT))
    body = json.loads(payload)
    assert body == {
        "v": 1,
        "device": "aq-0001",
        "seq": 3,
        "sent_at": "2026-11-23T08:00:00.000Z",
        "clock_synced": True,
        "readings": [
            {
                "sensor": "aq",
                "metric": "pm2_5",
                "value": 12.5,
                "unit": "ug/m3",
                "ts": "2026-11-23T08:00:00.000Z",
            }
        ],
    }
    assert b" " not in payload


def test_golden_status_payloads() -> None:
    online = decode_status(valid("status_online.json"))
    assert online.state == "online"
    assert online.fields["backlog"] == 0
    will = decode_status(valid("status_offline_will.json"))
    assert (will.state, will.ts, dict(will.fields)) == ("offline", None, {})
    assert decode_status(encode_status(online)) == online


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"v": 1, "device": "d", "state": "sleeping"}', Reason.BAD_STATE),
        (b'{"v": 1, "device": "d", "state": "online", "extra": {"nested": 1}}', Reason.WRONG_TYPE),
        (b'{"v": 1, "state": "online"}', Reason.MISSING_FIELD),
    ],
)
def test_bad_status_payloads(payload: bytes, reason: Reason) -> None:
    with pytest.raises(ContractError) as caught:
        decode_status(payload)
    assert caught.value.reason == reason


def test_status_fields_must_be_scalars() -> None:
    with pytest.raises(ContractError):
        Status("d", "online", AT, {"drivers": [1, 2]})  # type: ignore[dict-item]
