"""The wire contract between edge agents and ingest: telemetry batches and device status.

Stdlib only: the edge agent encodes with it, ingest decodes with it, and the golden payloads in
``tests/fixtures/payloads`` are checked from both sides. ``docs/contract.md`` is the prose version.

A telemetry message is one JSON object::

    {"v": 1, "device": "aq-0001", "seq": 42, "sent_at": "2026-11-23T08:00:05.000Z",
     "clock_synced": true,
     "readings": [{"sensor": "pm", "metric": "pm2_5", "value": 12.5, "unit": "ug/m3",
                   "ts": "2026-11-23T08:00:00.000Z"}]}

Envelope errors make the whole message unusable and raise :class:`ContractError`. A bad reading
inside a good envelope is set aside with its reason, and the good readings beside it are kept.

Examples:
    >>> from datetime import datetime, timezone
    >>> at = datetime(2026, 11, 23, 8, 0, tzinfo=timezone.utc)
    >>> batch = Batch("aq-0001", 42, (Reading("pm", "pm2_5", 12.5, "ug/m3", at),), sent_at=at)
    >>> decoded = decode_batch(encode_batch(batch))
    >>> decoded.batch == batch, decoded.rejected
    (True, ())
    >>> decode_batch(b'{"v": 9}')
    Traceback (most recent call last):
    ...
    edge.contract.ContractError: unsupported_version: schema version 9 is not one of [1]
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final, Literal, TypeVar

from edge.errors import EdgeError
from edge.metrics import METRICS

SCHEMA_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = frozenset({1})
MAX_PAYLOAD_BYTES: Final = 256 * 1024
MAX_READINGS_PER_BATCH: Final = 2_000
MAX_SEQ: Final = 2**63 - 1

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

JsonLoads = Callable[[bytes], object]
T = TypeVar("T")
StatusValue = str | int | float | bool | None
DeviceState = Literal["online", "offline"]


class Reason(StrEnum):
    """Why a message or a reading was refused; stored with every rejection."""

    OVERSIZED = "oversized"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_VERSION = "unsupported_version"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_ID = "invalid_id"
    BAD_TIMESTAMP = "bad_timestamp"
    EMPTY_BATCH = "empty_batch"
    TOO_MANY_READINGS = "too_many_readings"
    NON_FINITE = "non_finite"
    UNKNOWN_METRIC = "unknown_metric"
    UNIT_MISMATCH = "unit_mismatch"
    BAD_STATE = "bad_state"


class ContractError(EdgeError, ValueError):
    """A payload or value that breaks the contract.

    Attributes:
        reason: Machine-readable reason code.
        detail: One sentence for people, naming the offending field.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


def is_valid_id(value: object) -> bool:
    """Whether ``value`` can name a device, site or sensor (and so be one topic level)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def format_ts(ts: datetime) -> str:
    """Render an aware datetime as the contract's UTC form with milliseconds and ``Z``.

    Examples:
        >>> format_ts(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
        '2026-01-02T03:04:05.678Z'
    """
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_ts(value: object, name: str) -> datetime:
    """Parse a contract timestamp: ISO 8601 with an explicit offset, returned in UTC."""
    if not isinstance(value, str):
        raise ContractError(Reason.WRONG_TYPE, f"{name} must be an ISO 8601 string")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ContractError(Reason.BAD_TIMESTAMP, f"{name} {value[:40]!r} is not ISO 8601") from exc
    if ts.tzinfo is None:
        raise ContractError(Reason.BAD_TIMESTAMP, f"{name} {value[:40]!r} has no UTC offset")
    return ts.astimezone(UTC)


def _check_id(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ContractError(Reason.WRONG_TYPE, f"{name} must be a string")
    if not is_valid_id(value):
        raise ContractError(
            Reason.INVALID_ID, f"{name} {value[:70]!r} must be 1-64 of A-Z a-z 0-9 _ . -"
        )
    return value


def _check_aware(ts: object, name: str) -> None:
    if not isinstance(ts, datetime) or ts.tzinfo is None:
        raise ContractError(Reason.BAD_TIMESTAMP, f"{name} must be a timezone-aware datetime")


def _canonical(ts: datetime) -> datetime:
    """UTC with millisecond precision: what survives the wire, so ``decode(encode(x)) == x``."""
    ts = ts.astimezone(UTC)
    return ts.replace(microsecond=ts.microsecond // 1000 * 1000)


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value.

    Attributes:
        sensor: The sensor on the device that measured it (one device may carry several).
        metric: A name from :data:`edge.metrics.METRICS`.
        value: The measurement, finite.
        unit: The metric's canonical unit.
        ts: Acquisition time, timezone-aware; kept in UTC to the millisecond, as on the wire.
    """

    sensor: str
    metric: str
    value: float
    unit: str
    ts: datetime

    def __post_init__(self) -> None:
        _check_id(self.sensor, "sensor")
        metric = METRICS.get(self.metric)
        if metric is None:
            raise ContractError(
                Reason.UNKNOWN_METRIC, f"metric {str(self.metric)[:40]!r} is unknown"
            )
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            raise ContractError(Reason.WRONG_TYPE, f"value of {self.metric} must be a number")
        if not math.isfinite(self.value):
            raise ContractError(Reason.NON_FINITE, f"value of {self.metric} is {self.value}")
        if self.unit != metric.unit:
            raise ContractError(
                Reason.UNIT_MISMATCH,
                f"unit of {self.metric} must be {metric.unit!r}, not {str(self.unit)[:20]!r}",
            )
        _check_aware(self.ts, "ts")
        object.__setattr__(self, "ts", _canonical(self.ts))

    @classmethod
    def checked(cls, sensor: str, metric: str, value: float, unit: str, ts: datetime) -> Reading:
        """Build a reading :func:`scan_readings` already validated, without checking again."""
        reading = object.__new__(cls)
        for name, field_value in (
            ("sensor", sensor),
            ("metric", metric),
            ("value", value),
            ("unit", unit),
            ("ts", ts),
        ):
            object.__setattr__(reading, name, field_value)
        return reading


@dataclass(frozen=True, slots=True)
class Batch:
    """One telemetry message: a device's readings since its last message.

    Attributes:
        device: Device id; must equal the device level of the topic it is published on.
        seq: Per-device message number, increasing by one with every message.
        readings: The readings, in acquisition order.
        sent_at: The device's clock when the message was built.
        clock_synced: Whether the device's clock was synchronised (NTP/GNSS) at acquisition.
        version: Schema version of the payload.
    """

    device: str
    seq: int
    readings: tuple[Reading, ...]
    sent_at: datetime
    clock_synced: bool = True
    version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        _check_id(self.device, "device")
        if isinstance(self.seq, bool) or not isinstance(self.seq, int):
            raise ContractError(Reason.WRONG_TYPE, "seq must be an integer")
        if not 0 <= self.seq <= MAX_SEQ:
            raise ContractError(Reason.WRONG_TYPE, f"seq {self.seq} is outside 0..2^63-1")
        if len(self.readings) > MAX_READINGS_PER_BATCH:
            raise ContractError(
                Reason.TOO_MANY_READINGS,
                f"{len(self.readings)} readings exceed the limit of {MAX_READINGS_PER_BATCH}",
            )
        _check_aware(self.sent_at, "sent_at")
        object.__setattr__(self, "sent_at", _canonical(self.sent_at))
        if self.version not in SUPPORTED_VERSIONS:
            raise ContractError(Reason.UNSUPPORTED_VERSION, f"schema version {self.version}")


@dataclass(frozen=True, slots=True)
class RejectedReading:
    """A reading refused inside an otherwise valid batch."""

    index: int
    reason: Reason
    detail: str


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded telemetry message: its valid readings and the ones set aside."""

    batch: Batch
    rejected: tuple[RejectedReading, ...] = ()


def encode_batch(batch: Batch) -> bytes:
    """Serialise a batch to its wire form (compact UTF-8 JSON)."""
    body = {
        "v": batch.version,
        "device": batch.device,
        "seq": batch.seq,
        "sent_at": format_ts(batch.sent_at),
        "clock_synced": batch.clock_synced,
        "readings": [
            {
                "sensor": r.sensor,
                "metric": r.metric,
                "value": r.value,
                "unit": r.unit,
                "ts": format_ts(r.ts),
            }
            for r in batch.readings
        ],
    }
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def _load_object(payload: bytes, loads: JsonLoads) -> dict[str, object]:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ContractError(
            Reason.OVERSIZED, f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}"
        )
    try:
        body = loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ContractError(Reason.MALFORMED_JSON, f"payload is not JSON: {exc}"[:200]) from exc
    if not isinstance(body, dict):
        raise ContractError(Reason.NOT_AN_OBJECT, "payload must be a JSON object")
    version = body.get("v")
    # Type first: a list or an object cannot be looked up in a set (and true is not 1).
    if (
        not isinstance(version, int)
        or isinstance(version, bool)
        or version not in SUPPORTED_VERSIONS
    ):
        raise ContractError(
            Reason.UNSUPPORTED_VERSION,
            f"schema version {str(version)[:20]} is not one of {sorted(SUPPORTED_VERSIONS)}",
        )
    return body


def _require(body: Mapping[str, object], name: str) -> object:
    if name not in body:
        raise ContractError(Reason.MISSING_FIELD, f"field {name!r} is missing")
    return body[name]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A telemetry message's header, validated: everything but the readings."""

    device: str
    seq: int
    sent_at: datetime
    clock_synced: bool


def decode_envelope(
    payload: bytes, *, loads: JsonLoads = json.loads
) -> tuple[Envelope, list[object]]:
    """Parse a telemetry payload and validate its envelope.

    Returns:
        The envelope, and the raw readings for :func:`scan_readings`.

    Raises:
        ContractError: The envelope is unusable (not JSON, wrong version, bad device id...).
    """
    body = _load_object(payload, loads)
    device = _check_id(_require(body, "device"), "device")
    seq = _require(body, "seq")
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise ContractError(Reason.WRONG_TYPE, "seq must be an integer")
    if not 0 <= seq <= MAX_SEQ:
        raise ContractError(Reason.WRONG_TYPE, f"seq {seq} is outside 0..2^63-1")
    sent_at = parse_ts(_require(body, "sent_at"), "sent_at")
    clock_synced = body.get("clock_synced", True)
    if not isinstance(clock_synced, bool):
        raise ContractError(Reason.WRONG_TYPE, "clock_synced must be true or false")
    raw_readings = _require(body, "readings")
    if not isinstance(raw_readings, list):
        raise ContractError(Reason.WRONG_TYPE, "readings must be a list")
    if not raw_readings:
        raise ContractError(Reason.EMPTY_BATCH, "readings is empty")
    if len(raw_readings) > MAX_READINGS_PER_BATCH:
        raise ContractError(
            Reason.TOO_MANY_READINGS,
            f"{len(raw_readings)} readings exceed the limit of {MAX_READINGS_PER_BATCH}",
        )
    return Envelope(device, seq, _canonical(sent_at), clock_synced), raw_readings


# A reading that passed the contract: (index, sensor, metric, value, unit, timestamp).
Scanned = tuple[int, str, str, float, str, T]


def scan_readings(  # noqa: PLR0912, PLR0915  # one flat loop: every call costs on the hot path
    raw_readings: list[object], parse_time: Callable[[str], T]
) -> tuple[list[Scanned[T]], list[RejectedReading]]:
    """Check every reading of a message against the contract, in one pass.

    The single implementation of the per-reading rules, written for speed because ingest runs
    it on every reading: each distinct sensor id and timestamp text is checked once per call.

    Args:
        raw_readings: The ``readings`` list from :func:`decode_envelope`.
        parse_time: Turns a timestamp text into whatever the caller wants (the contract's
            :func:`parse_ts` gives datetimes; ingest wants integer microseconds); raises
            :class:`ContractError` on a bad one.

    Returns:
        The valid readings with their positions, and the refused ones with their reasons.
    """
    accepted: list[Scanned[T]] = []
    rejected: list[RejectedReading] = []
    times: dict[str, T] = {}
    good_sensors: set[str] = set()
    metrics = METRICS
    for index, raw in enumerate(raw_readings):
        if type(raw) is not dict:
            rejected.append(RejectedReading(index, Reason.WRONG_TYPE, "reading must be an object"))
            continue
        try:
            sensor, metric, value = raw["sensor"], raw["metric"], raw["value"]
            unit, text = raw["unit"], raw["ts"]
        except KeyError as exc:
            rejected.append(
                RejectedReading(index, Reason.MISSING_FIELD, f"field {exc.args[0]!r} is missing")
            )
            continue
        kind = type(value)
        if kind is int:
            try:
                value = float(value)
            except OverflowError:
                rejected.append(RejectedReading(index, Reason.NON_FINITE, "value overflows"))
                continue
        elif kind is not float:
            rejected.append(
                RejectedReading(
                    index, Reason.WRONG_TYPE, f"value {str(value)[:40]!r} is not a number"
                )
            )
            continue
        if value - value != 0.0:  # NaN or +-infinity: anything finite minus itself is 0
            rejected.append(RejectedReading(index, Reason.NON_FINITE, f"value is {value}"))
            continue
        if type(sensor) is not str or (sensor not in good_sensors and not _ID.fullmatch(sensor)):
            reason = Reason.INVALID_ID if type(sensor) is str else Reason.WRONG_TYPE
            rejected.append(
                RejectedReading(index, reason, f"sensor {str(sensor)[:70]!r} is not a valid id")
            )
            continue
        good_sensors.add(sensor)
        spec = metrics.get(metric) if type(metric) is str else None
        if spec is None:
            reason = Reason.UNKNOWN_METRIC if type(metric) is str else Reason.WRONG_TYPE
            rejected.append(
                RejectedReading(index, reason, f"metric {str(metric)[:40]!r} is unknown")
            )
            continue
        if unit != spec.unit:
            reason = Reason.UNIT_MISMATCH if type(unit) is str else Reason.WRONG_TYPE
            rejected.append(
                RejectedReading(
                    index, reason, f"unit of {metric} must be {spec.unit!r}, not {str(unit)[:20]!r}"
                )
            )
            continue
        if type(text) is not str:
            rejected.append(
                RejectedReading(index, Reason.WRONG_TYPE, "ts must be an ISO 8601 string")
            )
            continue
        ts = times.get(text)
        if ts is None:
            try:
                ts = times[text] = parse_time(text)
            except ContractError as exc:
                rejected.append(RejectedReading(index, exc.reason, exc.detail))
                continue
        accepted.append((index, sensor, metric, value, unit, ts))
    return accepted, rejected


def canonical_ts(text: str) -> datetime:
    """Parse a reading timestamp to the contract's canonical form (UTC, milliseconds)."""
    return _canonical(parse_ts(text, "ts"))


def decode_batch(payload: bytes, *, loads: JsonLoads = json.loads) -> Decoded:
    """Parse and validate a telemetry payload.

    Args:
        payload: The raw MQTT payload.
        loads: JSON parser; ingest passes a faster one, the edge keeps the stdlib's.

    Returns:
        The batch with every valid reading, and the readings refused with their reasons.

    Raises:
        ContractError: The envelope is unusable (not JSON, wrong version, bad device id...).
    """
    envelope, raw_readings = decode_envelope(payload, loads=loads)
    accepted, rejected = scan_readings(raw_readings, canonical_ts)
    readings = tuple(
        Reading.checked(sensor, metric, value, unit, ts)
        for _, sensor, metric, value, unit, ts in accepted
    )
    batch = Batch(envelope.device, envelope.seq, readings, envelope.sent_at, envelope.clock_synced)
    return Decoded(batch, tuple(rejected))


@dataclass(frozen=True, slots=True)
class Status:
    """A device's retained status: ``online`` with health fields, or ``offline`` (the last will).

    Attributes:
        device: Device id.
        state: ``online`` or ``offline``.
        ts: Device clock when published; absent from the last will, which is composed at connect.
        fields: Health figures (uptime, backlog, software version...), JSON scalars only.
    """

    device: str
    state: DeviceState
    ts: datetime | None = None
    fields: Mapping[str, StatusValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_id(self.device, "device")
        if self.state not in ("online", "offline"):
            raise ContractError(Reason.BAD_STATE, f"state {str(self.state)[:20]!r} is unknown")
        if self.ts is not None:
            _check_aware(self.ts, "ts")
            object.__setattr__(self, "ts", _canonical(self.ts))
        for key, value in self.fields.items():
            if value is not None and not isinstance(value, str | int | float | bool):
                raise ContractError(Reason.WRONG_TYPE, f"status field {key!r} must be a scalar")


_STATUS_KEYS = frozenset({"v", "device", "state", "ts"})


def encode_status(status: Status) -> bytes:
    """Serialise a status message."""
    body: dict[str, object] = {"v": SCHEMA_VERSION, "device": status.device, "state": status.state}
    if status.ts is not None:
        body["ts"] = format_ts(status.ts)
    body.update(status.fields)
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def decode_status(payload: bytes, *, loads: JsonLoads = json.loads) -> Status:
    """Parse and validate a status payload.

    Raises:
        ContractError: The payload is not a valid status message.
    """
    body = _load_object(payload, loads)
    device = _check_id(_require(body, "device"), "device")
    state = _require(body, "state")
    if state not in ("online", "offline"):
        raise ContractError(Reason.BAD_STATE, f"state {str(state)[:20]!r} is unknown")
    raw_ts = body.get("ts")
    ts = None if raw_ts is None else parse_ts(raw_ts, "ts")
    fields: dict[str, StatusValue] = {}
    for key, value in body.items():
        if key in _STATUS_KEYS:
            continue
        if value is not None and not isinstance(value, str | int | float | bool):
            raise ContractError(Reason.WRONG_TYPE, f"status field {key!r} must be a scalar")
        fields[key] = value
    return Status(device, "online" if state == "online" else "offline", ts, fields)
