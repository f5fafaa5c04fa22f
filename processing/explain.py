"""Sentences an operator understands, one per anomaly.

Examples:
    >>> from datetime import datetime, timezone
    >>> from processing.kinds import Kind
    >>> from processing.stage import Event
    >>> from processing.streams import StreamInfo
    >>> info = StreamInfo(1, "aq-0001", "aq", "pm2_5", "µg/m³", "air", "north")
    >>> at = datetime(2026, 11, 24, 8, tzinfo=timezone.utc)
    >>> explain(Event(1, Kind.SPIKE, True, at, 0.8, 48.0, 17.0, 7.4), info)
    'PM2.5 48 µg/m³, 4.2σ above the usual 17 for Tuesday 08:00'
"""

from __future__ import annotations

import math
from datetime import timedelta, tzinfo
from zoneinfo import ZoneInfo

from edge.metrics import METRICS
from processing import aqi
from processing.kinds import Kind
from processing.stage import Event
from processing.streams import StreamInfo

DEFAULT_ZONE = ZoneInfo("Europe/London")


def explain(  # noqa: PLR0911 - one sentence per kind
    event: Event,
    info: StreamInfo,
    *,
    zone: tzinfo = DEFAULT_ZONE,
    scheme: str = aqi.DEFAULT_SCHEME,
) -> str:
    """One sentence saying what happened on ``info``'s stream, in its units and local time."""
    metric = METRICS.get(info.metric)
    label = metric.label if metric else info.metric
    unit = metric.display_unit if metric else info.unit
    value = _quantity(event.value, unit)
    local = event.at.astimezone(zone)
    when = f"{local:%A %H:00}"
    match event.kind:
        case Kind.SPIKE | Kind.LEVEL_SHIFT:
            sigmas = (event.value - event.expected) / event.sigma if event.sigma > 0 else 0.0
            direction = "above" if sigmas >= 0 else "below"
            what = f"{label} {value}, {abs(sigmas):.1f}σ {direction} the usual"
            usual = f"{_number(event.expected)} for {when}"
            if event.kind is Kind.LEVEL_SHIFT:
                return f"{what} {usual}, and staying there (level shift or drift)"
            return f"{what} {usual}"
        case Kind.STUCK:
            return (
                f"{label} has reported exactly {value} {int(event.sigma)} times in a row"
                f" for {_duration(event.expected)} (stuck or flatlined sensor)"
            )
        case Kind.IMPOSSIBLE:
            low, high = _number(event.expected), _number(event.sigma)
            return f"{label} {value} is outside the plausible {low}…{high} {unit}: sensor fault"
        case Kind.MISSING:
            return (
                f"No data from sensor {info.sensor} on {info.device} for"
                f" {_duration(event.value)} (usually every {_duration(event.expected)})"
            )
        case Kind.AIR_QUALITY:
            rule = aqi.scheme(scheme).pollutants.get(info.metric)
            hours = rule.averaging_hours if rule else 1
            period = "hourly" if hours == 1 else f"{hours}-hour"
            band = aqi.band_name(scheme, int(event.expected))
            return f"{label} {period} mean {value}: {aqi.scheme(scheme).name} band {band}"
        case Kind.CONGESTION:
            return (
                f"Congestion: speed {value}, far below the usual {_number(event.expected)}"
                f" for {when}, with the lane occupied"
            )
        case Kind.OVERFLOW:
            rate = event.expected
            soon = (
                f", filling {rate:.1f} %/h: full in about {_duration(event.sigma * 3600)}"
                if rate > 0.1 and math.isfinite(event.sigma)
                else ""
            )
            return f"Bin {value} full{soon}"
        case Kind.FIRE:
            return (
                f"Bin temperature {value} (usually {_number(event.expected)} {unit}"
                f" for {when}): possible fire"
            )
        case Kind.NEIGHBOUR:
            return (
                f"{label} reads {value} while its neighbours in {info.site} read"
                f" {_number(event.expected)} {unit} by their usual difference"
            )
    return f"{label} {value}: {event.kind.slug}"  # pragma: no cover - every kind is handled


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 100 or value == round(value):
        return f"{value:.0f}"
    return f"{value:.1f}"


def _quantity(value: float, unit: str) -> str:
    number = _number(value)
    if not unit:
        return number
    return f"{number} {unit}" if unit not in ("%",) else f"{number} %"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "an unknown time"
    span = timedelta(seconds=round(seconds))
    minutes = span.total_seconds() / 60
    if minutes < 2:
        return f"{span.total_seconds():.0f} s"
    if minutes < 120:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"
