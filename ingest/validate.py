"""Turn one MQTT message into accepted readings or a rejection with a reason.

The contract (:mod:`edge.contract`) checks shape and types; this module adds what only the server
knows: whether the device is registered, whether it published on its own topic, physical ranges,
and whether timestamps are believable against ingest's clock. Good readings beside bad ones in the
same message are kept.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import orjson

from edge.contract import (
    Batch,
    ContractError,
    Envelope,
    JsonLoads,
    Reading,
    canonical_ts,
    decode_envelope,
    scan_readings,
)
from edge.metrics import METRICS
from edge.timestamps import from_us, to_us
from edge.topics import DeviceTopic, parse_topic

PAYLOAD_EXCERPT_BYTES = 1_024


def fast_loads(payload: bytes) -> object:
    """orjson, falling back to the stdlib for what orjson refuses but the contract tolerates.

    Devices whose JSON library writes ``NaN`` or ``Infinity`` produce payloads that are not strict
    JSON; the contract parses them anyway so that only those readings are refused
    (``non_finite``) and the good ones beside them are kept. Truly malformed payloads fail both.
    """
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return json.loads(payload)


class IngestReason(StrEnum):
    """Reasons only the server can give, beside the contract's :class:`~edge.contract.Reason`."""

    BAD_TOPIC = "bad_topic"
    UNKNOWN_DEVICE = "unknown_device"
    DEVICE_MISMATCH = "device_mismatch"
    SITE_MISMATCH = "site_mismatch"
    OUT_OF_RANGE = "out_of_range"
    TIMESTAMP_IN_FUTURE = "timestamp_in_future"
    TIMESTAMP_TOO_OLD = "timestamp_too_old"


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused message (``reading_index`` is None) or a refused reading inside a message."""

    topic: str
    device: str | None
    reason: str
    detail: str
    payload: bytes
    reading_index: int | None = None

    def excerpt(self) -> str:
        """The start of the payload as safe text: invalid UTF-8 and NUL bytes escaped."""
        text = self.payload[:PAYLOAD_EXCERPT_BYTES].decode("utf-8", errors="backslashreplace")
        return text.replace("\x00", "\\x00")


@dataclass(frozen=True, slots=True)
class Accepted:
    """A message with at least the envelope valid; ``rejections`` are its refused readings."""

    topic: DeviceTopic
    batch: Batch
    rejections: tuple[Rejection, ...] = ()


@dataclass(frozen=True, slots=True)
class Limits:
    """How far reading timestamps may stray from ingest's clock."""

    max_future: timedelta = timedelta(minutes=5)
    max_past: timedelta = timedelta(days=31)

    @classmethod
    def from_seconds(cls, max_future_s: float, max_past_s: float) -> Limits:
        """Build from the configuration's seconds."""
        return cls(timedelta(seconds=max_future_s), timedelta(seconds=max_past_s))


def _parse_us(text: str) -> int:
    return to_us(canonical_ts(text))


_MICROSECOND = timedelta(microseconds=1)


# One checked reading on the hot path: (index, sensor, metric, value, ts in microseconds).
Row = tuple[int, str, str, float, int]


@dataclass(slots=True)
class Checked:
    """A telemetry message that passed: its header, kept readings and refused readings."""

    where: DeviceTopic
    envelope: Envelope
    rows: list[Row]
    rejections: list[Rejection]


def check_telemetry(  # noqa: PLR0911  # one early return per refusal
    topic: str,
    payload: bytes,
    *,
    sites: Mapping[str, str],
    now_us: int,
    limits: Limits = Limits(),  # frozen, so sharing the default is safe
    loads: JsonLoads = json.loads,
) -> Checked | Rejection:
    """Validate one telemetry message: ingest's hot path.

    Args:
        topic: The topic it arrived on.
        payload: Its raw bytes.
        sites: Registered devices and their sites.
        now_us: Ingest's clock in microseconds, for timestamp plausibility.
        limits: Timestamp plausibility window.
        loads: JSON parser.

    Returns:
        :class:`Checked` (possibly with refused readings) or a :class:`Rejection` of the message.
    """
    try:
        where = parse_topic(topic)
    except ContractError as exc:
        return Rejection(topic, None, IngestReason.BAD_TOPIC, exc.detail, payload)
    if where.channel != "telemetry":
        return Rejection(
            topic, where.device, IngestReason.BAD_TOPIC, "not a telemetry topic", payload
        )
    registered_site = sites.get(where.device)
    if registered_site is None:
        return Rejection(
            topic,
            where.device,
            IngestReason.UNKNOWN_DEVICE,
            f"device {where.device!r} is not registered",
            payload,
        )
    if registered_site != where.site:
        return Rejection(
            topic,
            where.device,
            IngestReason.SITE_MISMATCH,
            f"device {where.device!r} is registered at site {registered_site!r}, "
            f"not {where.site!r}",
            payload,
        )
    try:
        envelope, raw_readings = decode_envelope(payload, loads=loads)
    except ContractError as exc:
        return Rejection(topic, where.device, exc.reason, exc.detail, payload)
    if envelope.device != where.device:
        return Rejection(
            topic,
            where.device,
            IngestReason.DEVICE_MISMATCH,
            f"payload device {envelope.device!r} differs from topic device {where.device!r}",
            payload,
        )
    scanned, refused = scan_readings(raw_readings, _parse_us)
    rejections = [
        Rejection(topic, where.device, r.reason, r.detail, payload, r.index) for r in refused
    ]
    latest = now_us + limits.max_future // _MICROSECOND
    earliest = now_us - limits.max_past // _MICROSECOND
    metrics = METRICS
    rows: list[Row] = []
    for index, sensor, metric, value, _, ts in scanned:
        spec = metrics[metric]
        if spec.low <= value <= spec.high and earliest <= ts <= latest:
            rows.append((index, sensor, metric, value, ts))
            continue
        reason, detail = _explain(metric, value, ts, limits, latest)
        rejections.append(Rejection(topic, where.device, reason, detail, payload, index))
    if len(rejections) > 1:
        rejections.sort(key=lambda r: r.reading_index or 0)
    return Checked(where, envelope, rows, rejections)


def _explain(metric: str, value: float, ts: int, limits: Limits, latest: int) -> tuple[str, str]:
    spec = METRICS[metric]
    if not spec.contains(value):
        return (
            IngestReason.OUT_OF_RANGE,
            f"{metric} {value:g} {spec.unit} is outside the physical range "
            f"{spec.low:g}..{spec.high:g}",
        )
    when = from_us(ts).isoformat()
    if ts > latest:
        return (
            IngestReason.TIMESTAMP_IN_FUTURE,
            f"ts {when} is more than {limits.max_future} ahead of ingest",
        )
    return (
        IngestReason.TIMESTAMP_TOO_OLD,
        f"ts {when} is more than {limits.max_past.days} days old",
    )


def validate_telemetry(
    topic: str,
    payload: bytes,
    *,
    sites: Mapping[str, str],
    now: datetime,
    limits: Limits = Limits(),  # frozen, so sharing the default is safe
    loads: JsonLoads = json.loads,
) -> Accepted | Rejection:
    """:func:`check_telemetry` with the contract's value types, for tools and tests."""
    verdict = check_telemetry(
        topic, payload, sites=sites, now_us=to_us(now), limits=limits, loads=loads
    )
    if isinstance(verdict, Rejection):
        return verdict
    envelope = verdict.envelope
    readings = tuple(
        Reading(sensor, metric, value, METRICS[metric].unit, from_us(ts))
        for _, sensor, metric, value, ts in verdict.rows
    )
    batch = Batch(envelope.device, envelope.seq, readings, envelope.sent_at, envelope.clock_synced)
    return Accepted(verdict.where, batch, tuple(verdict.rejections))
