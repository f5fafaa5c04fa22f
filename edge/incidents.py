"""A scripted sequence of incidents for the demo: something to watch within its first minutes.

Each is a labelled :class:`~edge.faults.Fault` of the fleet simulator, timed from the start of a
run: a device going offline and coming back, a bin filling fast, a congested road, a stuck
sensor, and an air pollution episode across one district. Each opens an alert the control room
shows live, and each ends, so the alerts can be worked through and resolve.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from edge.faults import Fault
from edge.fleet import FAMILY_SENSOR, DeviceSpec

MINUTE = timedelta(minutes=1)


def scripted_incidents(specs: Sequence[DeviceSpec], start: datetime) -> list[Fault]:
    """The sequence for ``specs`` from ``start`` (fewer when the fleet lacks a family).

    Examples:
        >>> from datetime import UTC
        >>> from edge.fleet import plan_fleet
        >>> at = datetime(2026, 12, 1, 8, tzinfo=UTC)
        >>> sorted({f.kind for f in scripted_incidents(plan_fleet(60), at)})
        ['congestion', 'offline', 'overflow', 'spike', 'stuck']
    """
    by_family: dict[str, list[DeviceSpec]] = {}
    for spec in specs:
        by_family.setdefault(spec.family, []).append(spec)
    traffic, air, bins = (by_family.get(f, []) for f in ("traffic", "air", "waste"))
    found: list[Fault] = []

    def at(minutes: float) -> datetime:
        return start + minutes * MINUTE

    if traffic:
        gone = traffic[-1]
        found.append(Fault(gone.device, "", "", "offline", at(0.5), at(8.5)))
    if bins:
        bin_ = bins[0]
        sensor = FAMILY_SENSOR["waste"][0]
        found.append(Fault(bin_.device, sensor, "fill_level", "overflow", at(0), at(15)))
    if len(traffic) > 1:
        road = traffic[0]
        sensor = FAMILY_SENSOR["traffic"][0]
        found.append(Fault(road.device, sensor, "speed_mean", "congestion", at(1), at(11)))
    if air:
        sensor = FAMILY_SENSOR["air"][0]
        found.append(Fault(air[-1].device, sensor, "temperature", "stuck", at(1), at(16)))
        # An episode across one district: every station there reads many times its usual NO2
        # and PM2.5 for a quarter of an hour.
        district = air[0].site
        for spec in (s for s in air if s.site == district):
            for metric, factor in (("no2", 12.0), ("pm2_5", 6.0)):
                found.append(Fault(spec.device, sensor, metric, "spike", at(0.5), at(15.5), factor))
    return sorted(found, key=lambda f: f.start)
